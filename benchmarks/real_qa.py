"""GRPO and REX-RAG on real questions: the seven-benchmark EM table a reader compares with
the paper's (issue 16, item 3).

    python benchmarks/real_qa.py [--iterations 8] [--limit 50] [--out out/real_qa]
        [--steps search-once,zero-shot,warm-start,grpo,rexrag] [--backend vllm|hf]

Each step is a ``rexrag`` command, printed before it runs and skipped when its results
are complete, so rerunning the same command resumes an interrupted experiment:

1. ``search-once``: BM25 retrieve-then-read without an LLM (``rexrag eval --agent search-once``);
2. ``zero-shot``: SmolLM2-135M-Instruct as packaged (``--agent llm --model smollm2-135m``);
3. ``warm-start``: the same after SFT on search-read-answer demonstrations on
   ``nq-hotpotqa/train`` (``--model smollm2-realqa``; built once on first use);
4. ``grpo``, ``rexrag``: ``rexrag train --config smollm2-realqa`` from the warm start for
   ``--iterations`` (``probes=false`` for GRPO), then ``rexrag eval --checkpoint`` of the
   final policy.

Every evaluation uses the preset's protocol (retriever, top-k, turns, tokens per turn
and per observation), greedy decoding, and the first ``--limit`` questions of each
held-out set ``heldout/<benchmark>`` (shuffled; NQ's and HotpotQA's are disjoint from
the training split). Writes ``DIR/eval/<step>/`` (per-question records and
``summary.json``; the warm start's and the trained rows' directories carry the warm
start's recipe key, so a changed recipe makes new rows), ``DIR/runs/<setting>-<key>/``
(the training runs: metrics.csv, curves, the last checkpoint: 2.2 GB with its AdamW
state), ``DIR/table.md`` and ``DIR/meta.json`` (command, commits, date, wall time of
each step).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from agents.evaluation import EvalProtocol
from agents.rexrag import RexRagConfig
from agents.runs.provenance import stamp
from agents.runs.run_directory import complete_checkpoints
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.embedded import EMBEDDED_DATASETS
from rexrag_env.splits import HELD_OUT_SPLITS

PRESET = "smollm2-realqa"
#: step -> its row's label
STEPS = {
    "search-once": "BM25 search-once (no LLM)",
    "zero-shot": "SmolLM2-135M-Instruct, zero-shot",
    "warm-start": "warm start (SFT on demonstrations)",
    "grpo": "GRPO from the warm start",
    "rexrag": "REX-RAG from the warm start",
}
#: the model an untrained LLM row evaluates (alias)
MODELS = {"zero-shot": "smollm2-135m", "warm-start": PRESET}
#: the config overrides of a trained row
TRAINING = {"grpo": ["probes=false"], "rexrag": []}


def rexrag(*arguments: str) -> list[str]:
    """A ``rexrag`` command line, run with this interpreter."""
    return [sys.executable, "-m", "agents.cli", *arguments]


def run(command: list[str]) -> float:
    """Run ``command`` (its output goes to this terminal); returns its wall seconds."""
    print("$ rexrag " + shlex.join(command[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def protocol_flags(protocol: EvalProtocol) -> list[str]:
    """``rexrag eval`` flags that pin ``protocol`` (the preset's, for the untrained rows)."""
    names = ("retriever", "topk", "max_turns", "max_new_tokens", "max_observation_tokens")
    return [
        flag
        for name in names
        for flag in (f"--{name.replace('_', '-')}", str(getattr(protocol, name)))
    ]


def evaluated(directory: Path, expected: int) -> bool:
    summary = directory / "summary.json"
    return summary.is_file() and json.loads(summary.read_text())["average"]["n"] == expected


def trained(run_dir: Path, iterations: int) -> bool:
    return any(path.name.endswith(f"{iterations:06d}") for path in complete_checkpoints(run_dir))


def train_command(step: str, run_dir: Path, args) -> list[str]:
    resume = ["--resume"] if (run_dir / "config.yaml").is_file() else []
    overrides = [*TRAINING[step], f"backend={args.backend}", "eval_dataset=null"]
    return rexrag(
        "train", "--config", PRESET, *overrides, "--stop-iters", str(args.iterations),
        "--checkpoint-dir", str(run_dir), "--checkpoint-every", "1", "--keep-checkpoints", "1",
        *resume,
    )  # fmt: skip


def warm_start_key() -> str:
    """The warm start's recipe key: a changed recipe is a new warm start, so its rows
    (and the runs trained from it) go to new directories instead of being reused."""
    from agents.warm_start.recipes import WARM_STARTS

    return WARM_STARTS[MODELS["warm-start"]].key()


def run_dir_of(out: Path, step: str) -> Path:
    return out / "runs" / f"{step}-{warm_start_key()}"


def eval_dir(out: Path, step: str, iterations: int) -> Path:
    """Where a step's evaluation goes: the warm start's and the trained rows' name the
    warm start's key, a trained policy's also its iterations."""
    if step in TRAINING:
        return out / "eval" / f"{step}-{warm_start_key()}-it{iterations}"
    return out / "eval" / (f"{step}-{warm_start_key()}" if step == "warm-start" else step)


def run_step(step: str, args, out: Path, protocol: EvalProtocol, expected: int) -> dict:
    """Train (GRPO, REX-RAG) and evaluate one row; returns its wall seconds by what was
    made (the run's or the evaluation's directory name: a new warm start's rows are
    timed apart from the old ones')."""
    seconds = {}
    target = eval_dir(out, step, args.iterations)
    if step in TRAINING:
        run_dir = run_dir_of(out, step)
        if not trained(run_dir, args.iterations):
            seconds[f"train {run_dir.name}"] = run(train_command(step, run_dir, args))
        agent = ["--checkpoint", str(run_dir), "--backend", args.backend]
    elif step in MODELS:
        agent = ["--agent", "llm", "--model", MODELS[step], "--backend", args.backend]
        agent += protocol_flags(protocol)
    else:
        agent = ["--agent", step, *protocol_flags(protocol)]
    if not evaluated(target, expected):
        selection = ["--datasets", ",".join(protocol.datasets), "--limit", str(args.limit)]
        where = ["--batch-size", str(args.batch_size), "--out", str(target)]
        seconds[f"eval {target.name}"] = run(rexrag("eval", *agent, *selection, *where))
    return seconds


def training_summary(run_dir: Path) -> dict[str, float]:
    """Means over a run's iterations of what its sampling did (metrics.csv)."""
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))

    def mean(key: str, last: int | None = None) -> float:
        chosen = rows[-last:] if last else rows
        return sum(float(row.get(key) or 0.0) for row in chosen) / len(chosen)

    return {
        "iterations": len(rows),
        "accuracy_original": mean("accuracy_original"),
        "accuracy_original_last3": mean("accuracy_original", last=3),
        "probes_kept": sum(float(row.get("probes_kept") or 0.0) for row in rows),
        "accuracy_probe": mean("accuracy_probe"),
        "seconds_per_iteration": mean("seconds_rollout")
        + mean("seconds_scoring")
        + mean("seconds_learning"),
    }


def report(out: Path, meta: dict) -> str:
    """The EM table (per benchmark and average), searches, and the training runs."""
    names = list(EMBEDDED_DATASETS)
    lines = [
        f"{meta['command']}  (commits {', '.join(meta['commits'])}, {meta['date']})",
        "",
        "| greedy EM | " + " | ".join(names) + " | avg | searches |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for step, label in STEPS.items():
        path = eval_dir(out, step, meta["iterations"]) / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        cells = [f"{summary[name]['em']:.1f}" if name in summary else "" for name in names]
        average = summary["average"]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {average['em']:.1f} | {average['searches']:.2f} |"
        )
    lines.append(f"\nquestions per benchmark: {meta['limit']} (heldout/<benchmark>, first N)")
    for step in TRAINING:
        run_dir = run_dir_of(out, step)
        if (run_dir / "metrics.csv").is_file():
            sampled = training_summary(run_dir)
            lines.append(
                f"{step}: {sampled['iterations']} iterations, accuracy of originals "
                f"{sampled['accuracy_original']:.2f} "
                f"(last 3: {sampled['accuracy_original_last3']:.2f}), "
                f"probes kept {sampled['probes_kept']:.0f} "
                f"(accuracy {sampled['accuracy_probe']:.2f}), "
                f"{sampled['seconds_per_iteration']:.0f} s per iteration"
            )
    seconds = meta.get("seconds", {})
    lines.append(
        "wall time: " + ", ".join(f"{step} {s / 60:.1f} min" for step, s in seconds.items())
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=8, help="of GRPO and of REX-RAG")
    parser.add_argument("--limit", type=int, default=50, help="questions per held-out set")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"of {list(STEPS)}")
    vllm = importlib.util.find_spec("vllm") is not None
    parser.add_argument(
        "--backend",
        choices=("vllm", "hf"),
        default="vllm" if vllm else "hf",
        help="where the LLM generates (default: vllm where it is installed)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="evaluation episodes at once")
    parser.add_argument("--out", default="out/real_qa")
    args = parser.parse_args()
    steps = args.steps.split(",")
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {list(STEPS)}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    # the rows compared are evaluated on the same questions; more iterations add rows
    experiment = {"preset": PRESET, "limit": args.limit}
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else dict(experiment)
    if {key: meta[key] for key in experiment} != experiment:
        sys.exit(f"{out} holds another experiment ({meta['command']}): use another --out")
    meta.update(stamp(meta), backend=args.backend, iterations=args.iterations)
    protocol = RexRagConfig.from_yaml(PRESET).eval_protocol(HELD_OUT_SPLITS, args.limit)
    expected = sum(min(args.limit, len(load_qa_dataset(name))) for name in HELD_OUT_SPLITS)
    for step in steps:
        for key, seconds in run_step(step, args, out, protocol, expected).items():
            meta.setdefault("seconds", {})[key] = meta.get("seconds", {}).get(key, 0) + seconds
            meta_path.write_text(json.dumps(meta, indent=1))
    meta_path.write_text(json.dumps(meta, indent=1))
    table = report(out, meta)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
