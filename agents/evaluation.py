"""The evaluation harness: one pinned protocol over the seven QA benchmarks.

Results of search agents are only comparable when corpus, retriever, top-k, turn
budget, decoding and the EM definition are the same; the harness fixes them in an
:class:`EvalProtocol`, prints it in the report header and stores it next to the results.
Per-question records are appended to one JSONL file per dataset as soon as they
exist, so an interrupted run loses nothing and a re-run skips what is done; the agent
that wrote them (:class:`AgentIdentity`) is stored with the protocol, so a re-run with
another agent, model or policy is refused instead of mixed in.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gymnasium.vector import AutoresetMode
from tqdm.auto import tqdm

from agents.base import BatchAgent
from agents.llm.base import SamplingParams
from agents.llm_agent import LLMAgent
from rexrag_env.datasets import QAExample, load_qa_dataset
from rexrag_env.embedded import EMBEDDED_DATASETS
from rexrag_env.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_OBSERVATION_TOKENS,
    DEFAULT_MAX_TURNS,
    DEFAULT_RETRIEVER,
    DEFAULT_TOPK,
)
from rexrag_env.retrieval.base import Retriever
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.reward import SCORE_NAMES
from rexrag_env.signing import tree_digest
from rexrag_env.vector import SearchQAVectorEnv

METRICS = SCORE_NAMES


@dataclass(frozen=True)
class EvalProtocol:
    """Everything that must match for two evaluation numbers to be comparable.

    ``max_new_tokens`` (per turn) and ``max_observation_tokens`` bind LLM agents
    (:func:`protocol_llm_agent` builds one from the protocol); scripted agents ignore them.
    """

    datasets: tuple[str, ...] = EMBEDDED_DATASETS
    retriever: str = DEFAULT_RETRIEVER
    topk: int = DEFAULT_TOPK
    max_turns: int = DEFAULT_MAX_TURNS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    max_observation_tokens: int = DEFAULT_MAX_OBSERVATION_TOKENS
    limit: int | None = None
    decoding: str = "greedy"
    metric: str = "EM after SQuAD normalisation vs any gold answer, last <answer> span"

    def header(self) -> str:
        limit = "all" if self.limit is None else f"first {self.limit}"
        return (
            f"protocol: retriever={self.retriever} top-k={self.topk} max_turns={self.max_turns}+1 "
            f"tokens per turn={self.max_new_tokens} per observation={self.max_observation_tokens} "
            f"decoding={self.decoding} questions={limit} per dataset\n"
            f"metric: {self.metric}"
        )


@dataclass(frozen=True)
class AgentIdentity:
    """Which agent wrote an evaluation's records: its kind (``rexrag eval --agent``),
    model (alias, hub name, path or served name) and, for a model directory, the
    SHA-256 of its files (the same path holds another policy after more training)."""

    kind: str
    model: str | None = None
    policy_digest: str | None = None

    @classmethod
    def of(cls, kind: str, model: str | Path | None = None) -> AgentIdentity:
        """The identity of agent ``kind`` playing ``model`` (digested if a directory)."""
        if model is None:
            return cls(kind)
        digest = tree_digest(Path(model)) if Path(model).is_dir() else None
        return cls(kind, str(model), digest)

    def describe(self) -> str:
        model = f" model {self.model}" if self.model else ""
        digest = f" (files sha256 {self.policy_digest[:12]})" if self.policy_digest else ""
        return f"agent {self.kind}{model}{digest}"


def protocol_llm_agent(model: str, protocol: EvalProtocol, backend: str = "hf") -> LLMAgent:
    """The LLM agent that evaluations of a policy use: ``model`` (alias, hub name or
    ``save_pretrained`` directory) on ``backend`` (``hf`` or ``vllm``), decoding
    greedily with the protocol's tokens per turn and observation limit."""
    from agents.llm.backends import load_generator

    return LLMAgent(
        load_generator(model, backend),
        SamplingParams(temperature=0.0, max_new_tokens=protocol.max_new_tokens),
        max_observation_tokens=protocol.max_observation_tokens,
    )


#: The agents ``rexrag eval --agent`` names: scripted baselines, an LLM played here
#: (``model``: alias, hub name or path), and a served model behind an OpenAI-compatible API.
AGENT_KINDS = ("search-once", "no-search", "oracle", "llm", "openai")


def make_agent(
    kind: str,
    protocol: EvalProtocol,
    *,
    model: str | None = None,
    base_url: str | None = None,
    backend: str = "hf",
) -> BatchAgent:
    """The agent of ``kind`` for an evaluation under ``protocol`` (``backend``: where an
    ``llm`` agent generates)."""
    from agents.base import SequentialAgents
    from agents.scripted import NoSearchAgent, OracleAgent, SearchOnceAgent

    scripted = {"search-once": SearchOnceAgent, "no-search": NoSearchAgent, "oracle": OracleAgent}
    if kind in scripted:
        return SequentialAgents(scripted[kind])
    if kind not in AGENT_KINDS:
        raise ValueError(f"agent {kind!r} is not one of {AGENT_KINDS}")
    if not model:
        raise ValueError(f"agent {kind} needs a model (--model)")
    if kind == "openai":
        from agents.openai_agent import OpenAIChatAgent

        return SequentialAgents(lambda: OpenAIChatAgent(base_url, model))
    return protocol_llm_agent(model, protocol, backend)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a results file; a torn last line (a killed run) is dropped."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # written half-way when the previous run died; it is redone
            raise ValueError(f"results file {path}: line {number} is corrupt ({error})") from error
    return records


def _append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def _rewrite_without_torn_line(path: Path, records: list[dict[str, Any]]) -> None:
    if path.is_file() and len(path.read_text(encoding="utf-8").splitlines()) != len(records):
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )


def play_pending(
    agent: BatchAgent,
    pending: Sequence[tuple[str, QAExample]],
    retriever: Retriever,
    protocol: EvalProtocol,
    out: Path,
    batch_size: int,
    progress: bool,
) -> dict[str, list[dict[str, Any]]]:
    """Play the questions not yet recorded, in batches that mix datasets.

    Mixing keeps batches full: a batched agent waits for the longest episode of a batch,
    so fewer, fuller batches finish sooner. Each batch's records are appended to their
    dataset's file before the next batch starts.
    """
    new_records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not pending:
        return new_records
    envs = SearchQAVectorEnv(
        min(batch_size, len(pending)),
        dataset=[pending[0][1]],
        retriever=retriever,
        max_turns=protocol.max_turns,
        topk=protocol.topk,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    with tqdm(total=len(pending), desc="questions", unit="q", disable=not progress) as bar:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            trajectories = agent.play(envs, [{"example": example} for _, example in chunk])
            by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for (name, _), trajectory in zip(chunk, trajectories, strict=True):
                by_dataset[name].append(trajectory.to_record())
            for name, records in by_dataset.items():
                _append_records(out / f"{name}.jsonl", records)
                new_records[name].extend(records)
            bar.update(len(chunk))
    return new_records


def summarize(records_by_dataset: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean EM / F1 / cover-EM (×100) and search counts per dataset, plus their average."""
    summary = {}
    for name, records in records_by_dataset.items():
        count = max(len(records), 1)
        row = {metric: 100 * sum(r[metric] for r in records) / count for metric in METRICS}
        row["searches"] = sum(r["num_searches"] for r in records) / count
        row["n"] = len(records)
        summary[name] = row
    if summary:
        summary["average"] = {
            key: sum(row[key] for row in summary.values()) / len(summary)
            for key in (*METRICS, "searches")
        }
        summary["average"]["n"] = sum(
            row["n"] for name, row in summary.items() if name != "average"
        )
    return summary


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """A Markdown table in the order of the paper's results table."""
    names = [name for name in summary if name != "average"]
    header = "| metric | " + " | ".join(names) + " | avg |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for metric in (*METRICS, "searches"):
        cells = [
            f"{summary[name][metric]:.1f}"
            if metric != "searches"
            else f"{summary[name][metric]:.2f}"
            for name in [*names, "average"]
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append(
        "| questions | " + " | ".join(str(int(summary[n]["n"])) for n in [*names, "average"]) + " |"
    )
    return "\n".join(lines)


def check_same_evaluation(
    protocol_file: Path, protocol: EvalProtocol, identity: AgentIdentity | None
) -> None:
    """Raise ``ValueError`` when ``protocol_file`` records another protocol or agent than
    the ones about to add records beside it (naming both agents)."""
    if not protocol_file.is_file():
        return
    stored = json.loads(protocol_file.read_text())
    stored_agent = stored.pop("agent", "unrecorded")
    if stored != json.loads(json.dumps(asdict(protocol))):
        raise ValueError(
            f"{protocol_file.parent} holds results of another protocol ({protocol_file}); "
            "use a new --out"
        )
    current = asdict(identity) if identity else None
    if stored_agent != current and not (stored_agent == "unrecorded" and current is None):
        if stored_agent == "unrecorded":
            before = "an agent it did not record (written by an older rexrag)"
        elif stored_agent is None:
            before = "an unnamed agent"
        else:
            before = AgentIdentity(**stored_agent).describe()
        now = identity.describe() if identity else "an unnamed agent"
        raise ValueError(
            f"{protocol_file.parent} holds results of {before}; this is {now}: their "
            "records must not mix, use a new --out"
        )


def evaluate(
    agent: BatchAgent,
    protocol: EvalProtocol,
    out_dir: str | Path,
    batch_size: int = 16,
    progress: bool = True,
    log: Callable[[str], None] = print,
    identity: AgentIdentity | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``agent`` under ``protocol`` into ``out_dir``.

    Writes ``<dataset>.jsonl`` (one record per question), ``summary.json`` and ``summary.md``.

    Re-running with the same ``out_dir`` resumes: recorded questions are skipped. A
    different protocol or agent ``identity`` in an existing ``out_dir`` is refused, so
    results of two protocols or two agents never mix in one file; pass ``identity``
    whenever another agent might resume into ``out_dir`` (``rexrag eval`` always does).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_same_evaluation(out / "protocol.json", protocol, identity)
    record = {**asdict(protocol), "agent": asdict(identity) if identity else None}
    (out / "protocol.json").write_text(json.dumps(record, indent=2))
    log(protocol.header())
    retriever = make_retriever(protocol.retriever)
    results, pending = {}, []
    for dataset in protocol.datasets:
        name = dataset if dataset in EMBEDDED_DATASETS else Path(dataset).stem
        records = read_records(out / f"{name}.jsonl")
        _rewrite_without_torn_line(out / f"{name}.jsonl", records)
        done = {record["id"] for record in records}
        examples = load_qa_dataset(dataset)[: protocol.limit]
        pending += [(name, example) for example in examples if example.id not in done]
        results[name] = records
    for name, records in play_pending(
        agent, pending, retriever, protocol, out, batch_size, progress
    ).items():
        results[name].extend(records)
    summary = summarize(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = format_summary(summary)
    (out / "summary.md").write_text(protocol.header() + "\n\n" + table + "\n")
    log(table)
    return summary
