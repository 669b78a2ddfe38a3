"""``rexrag quickstart``: a one-minute tour.

A scripted search-once agent plays questions of an embedded benchmark through the
evaluation harness (the same path as ``rexrag eval``), then REX-RAG trains the
sanity task's warm-started tiny policy for a few iterations (the same path as
``rexrag train``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agents.evaluation import EvalProtocol, evaluate, make_agent
from rexrag_env.reward import SCORE_NAMES


def quickstart(
    dataset: str,
    retriever: str,
    limit: int,
    train_iters: int,
    out: str | Path,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the tour into ``out/<time>/`` (``baseline/``: harness records; ``train/``: a
    run directory) and return that directory."""
    run_dir = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    start = time.perf_counter()
    protocol = EvalProtocol(
        datasets=(dataset,), retriever=retriever, limit=limit, decoding="scripted"
    )
    topk = protocol.topk
    log(f"SearchOnceAgent on {limit} {dataset} questions, {retriever} retriever, top-{topk}")
    summary = evaluate(
        make_agent("search-once", protocol), protocol, run_dir / "baseline", log=lambda _: None
    )["average"]
    scores = "  ".join(f"{key}={summary[key]:.1f}" for key in SCORE_NAMES)
    log(f"{scores}  ({time.perf_counter() - start:.1f}s; records in {run_dir / 'baseline'})")
    if train_iters > 0:
        _train_on_the_sanity_task(run_dir / "train", train_iters, log)
    return run_dir


def _train_on_the_sanity_task(run_dir: Path, iterations: int, log: Callable[[str], None]) -> None:
    """REX-RAG with the tiny-sanity preset: tiny-cpu on the sanity task, warm-started."""
    from agents.rexrag import RexRagConfig
    from agents.runs.training_run import train
    from agents.warm_start.sanity_task import sanity_policy_path

    start = time.perf_counter()
    log("\nREX-RAG on the sanity task: warm-starting the tiny policy (cached after the first run)")
    sanity_policy_path()
    config = RexRagConfig.from_yaml("tiny-sanity")
    history = train(config, run_dir, stop_iters=iterations, checkpoint_every=iterations, log=log)
    window = max(1, min(5, len(history) // 2))

    def mean(key, part):
        return float(np.mean([metrics[key] for metrics in part]))

    first, last = history[:window], history[-window:]
    log(
        f"accuracy of originals {mean('accuracy_original', first):.2f} -> "
        f"{mean('accuracy_original', last):.2f}, dead-end fraction "
        f"{mean('dead_end_fraction_before_probing', first):.2f} -> "
        f"{mean('dead_end_fraction_before_probing', last):.2f} (first/last {window} iterations); "
        f"{time.perf_counter() - start:.0f}s"
    )
    log(f"run directory: {run_dir} (config.yaml, metrics.csv, checkpoint with policy/)")
