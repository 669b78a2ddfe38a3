"""Greedy test-set evaluation of a trained (or warm-start) policy, with a run's settings.

The before/after numbers of ``rexrag train`` and ``benchmarks/dead_ends.py`` come from
here: the evaluation harness's pinned protocol (greedy decoding, EM against any gold
answer) with the run's retriever, top-k, turn and token limits, so "before" and "after"
differ only in the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.evaluation import AgentIdentity, EvalProtocol, evaluate, protocol_llm_agent
from agents.rexrag import RexRagConfig
from agents.runs.run_directory import resolve_policy, run_config


def checkpoint_evaluation(
    checkpoint: str | Path,
    datasets: Sequence[str],
    limit: int | None,
    overrides: dict[str, Any],
) -> tuple[Path, EvalProtocol, Path | None]:
    """``(policy directory, protocol, config.yaml it came from)`` for evaluating a
    checkpoint: inside a run, the run's protocol (what its ``eval_before`` and
    ``eval_after`` used), else the harness defaults; ``overrides`` (EvalProtocol
    fields) win over either."""
    policy = resolve_policy(checkpoint)
    found = run_config(checkpoint)
    if found is None:
        return policy, EvalProtocol(datasets=tuple(datasets), limit=limit, **overrides), None
    source, config = found
    for name, value in overrides.items():
        setattr(config, config.EVAL_PROTOCOL_FIELDS[name], value)
    return policy, config.eval_protocol(datasets, limit), source


def evaluate_policy(
    policy_dir: str | Path,
    config: RexRagConfig,
    datasets: Sequence[str],
    out_dir: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """EM / F1 / cover-EM (×100) and searches per question of the policy in
    ``policy_dir`` (an alias or ``save_pretrained`` directory) on the first ``limit``
    questions of each of ``datasets``, under the run's protocol
    (:meth:`RexRagConfig.eval_protocol`); per-question records and the summary (per
    dataset and ``"average"``) are written to ``out_dir``."""
    protocol = config.eval_protocol(datasets, limit)
    agent = protocol_llm_agent(str(policy_dir), protocol)
    return evaluate(
        agent,
        protocol,
        out_dir,
        batch_size=batch_size,
        progress=False,
        log=log,
        identity=AgentIdentity.of("llm", policy_dir),
    )


def dead_end_profile(
    policy_dir: str | Path,
    config: RexRagConfig,
    dataset: str,
    *,
    min_hops: int = 2,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """How stuck a policy is on multi-hop questions, measured as the trainer sees it.

    For each question of ``dataset`` with at least ``min_hops`` hops (SynthWiki's
    ``metadata["num_hops"]``), ``config.group_size`` rollouts are sampled at the
    rollout temperature. Returns the share of questions whose rollouts are all wrong
    (``dead_end``: GRPO gets no signal from them), the share where most rollouts give
    one and the same wrong answer (``same_wrong_majority``: the confident dead end),
    the rollouts' accuracy, and the number of questions.
    """
    from collections import Counter

    from agents.llm.hf import HFGenerator
    from rexrag_env.datasets import load_qa_dataset
    from rexrag_env.retrieval.factory import make_retriever

    examples = load_qa_dataset(dataset)
    retriever = make_retriever(config.retriever)
    indices = [
        i for i, example in enumerate(examples) if example.metadata.get("num_hops", 0) >= min_hops
    ][:limit]
    if not indices:
        raise ValueError(f"{dataset!r} has no questions of {min_hops}+ hops (metadata num_hops)")
    group = config.group_size
    agent = config.make_agent(HFGenerator.from_pretrained(str(policy_dir)), seed)
    rollouts = agent.play(
        config.make_vector_env(len(indices) * group, examples, retriever),
        [{"index": i} for i in indices for _ in range(group)],
    )
    dead, same_wrong = 0, 0
    for start in range(0, len(rollouts), group):
        members = rollouts[start : start + group]
        wrong = Counter(
            (rollout.answer or "").strip().lower() for rollout in members if not rollout.correct
        )
        dead += sum(wrong.values()) == group
        same_wrong += bool(wrong) and wrong.most_common(1)[0][1] > group / 2
    return {
        "dead_end": dead / len(indices),
        "same_wrong_majority": same_wrong / len(indices),
        "accuracy": sum(rollout.correct for rollout in rollouts) / len(rollouts),
        "questions": float(len(indices)),
    }
