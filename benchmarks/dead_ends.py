"""The experiment: plain GRPO vs REX-RAG (correction none / rexrag / sequence), same budget.

    python benchmarks/dead_ends.py [--config tiny-sanity] [--iterations 10] [--seeds 0,1,2]
                                   [--eval-dataset DATASET] [--eval-limit 64] [--out DIR]

Every run starts from the same warm-started policy (the preset's ``llm``), sees the same
number of questions (iterations × questions_per_iteration) and differs only in the
setting and the seed. After training, the policy is evaluated greedily on
``--eval-dataset`` (default: the preset's own questions). The table reports exact match
(mean ± std over seeds), the dead-end fraction (all originals of a question wrong) in the
first and the last iteration, sampled tokens per iteration (probes cost tokens) and wall
time; ``curves.png`` plots the originals' accuracy per iteration, one line per setting
(mean over seeds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np

SETTINGS = (
    ("GRPO (probes off)", {"probes": False}),
    ("REX-RAG, correction none", {"correction": "none"}),
    ("REX-RAG, correction rexrag", {"correction": "rexrag"}),
    ("REX-RAG, correction sequence", {"correction": "sequence"}),
)


def greedy_accuracy(policy_dir: str, config, dataset: str, limit: int) -> float:
    """Greedy exact match on the first ``limit`` questions of ``dataset``, through the
    evaluation harness (its pinned protocol), with the config's turn and token limits."""
    from agents.evaluation import EvalProtocol, evaluate
    from agents.llm.base import SamplingParams
    from agents.llm.hf import HFGenerator
    from agents.llm_agent import LLMAgent

    agent = LLMAgent(
        HFGenerator.from_pretrained(policy_dir),
        SamplingParams(temperature=0.0, max_new_tokens=config.max_new_tokens_per_turn),
        max_observation_tokens=config.max_observation_tokens,
    )
    protocol = EvalProtocol(
        datasets=(dataset,),
        retriever=config.retriever,
        topk=config.topk,
        max_turns=config.max_turns,
        limit=limit,
    )
    with tempfile.TemporaryDirectory() as out:
        summary = evaluate(
            agent, protocol, out, batch_size=limit, progress=False, log=lambda _: None
        )
    return summary["average"]["em"] / 100


def run(preset: str, overrides: dict, iterations: int, eval_dataset: str, eval_limit: int):
    """One training run; returns its per-iteration metrics, test EM and wall time."""
    from agents.rexrag.config import RexRagConfig
    from agents.rexrag.rexrag import METRICS_KEY

    config = RexRagConfig.from_yaml(preset, overrides)
    start = time.perf_counter()
    algo = config.build_algo()
    history = [algo.train()[METRICS_KEY] for _ in range(iterations)]
    with tempfile.TemporaryDirectory() as directory:
        algo.export_policy(directory)
        algo.stop()
        accuracy = greedy_accuracy(directory, config, eval_dataset, eval_limit)
    return history, accuracy, time.perf_counter() - start


def main() -> None:
    import ray

    from agents.llm.models import resolve_model
    from agents.rexrag.config import RexRagConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-sanity", help="preset or YAML file")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-dataset", default=None, help="default: the preset's questions")
    parser.add_argument("--eval-limit", type=int, default=64)
    parser.add_argument("--out", default="out/dead_ends")
    args = parser.parse_args()

    base = RexRagConfig.from_yaml(args.config)
    eval_dataset = args.eval_dataset or base.question_source()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    ray.init(include_dashboard=False, log_to_driver=False)
    # every run starts from this policy: evaluate it once
    before = greedy_accuracy(resolve_model(base.llm), base, eval_dataset, args.eval_limit)
    rows, curves = [], {}
    for name, overrides in SETTINGS:
        results = [
            run(
                args.config,
                {**overrides, "seed": seed},
                args.iterations,
                eval_dataset,
                args.eval_limit,
            )
            for seed in seeds
        ]
        histories = [history for history, _, _ in results]
        accuracy = [em for _, em, _ in results]
        rows.append(
            (
                name,
                f"{100 * np.mean(accuracy):.1f} ± {100 * np.std(accuracy):.1f}",
                np.mean([h[0]["dead_end_fraction_before_probing"] for h in histories]),
                np.mean([h[-1]["dead_end_fraction_before_probing"] for h in histories]),
                np.mean([np.mean([m["sampled_tokens"] for m in h]) for h in histories]),
                np.mean([np.mean([m["probes_kept"] for m in h]) for h in histories]),
                np.mean([seconds for _, _, seconds in results]),
            )
        )
        curves[name] = np.mean(
            [[m["accuracy_original"] for m in history] for history in histories], axis=0
        )
    ray.shutdown()

    print(
        f"config={args.config} iterations={args.iterations} seeds={seeds} "
        f"eval={eval_dataset} (first {args.eval_limit}, greedy); before training: "
        f"EM {100 * before:.1f}"
    )
    print(
        "| setting | test EM (mean ± std) | dead-end fraction, first iteration | last iteration "
        "| sampled tokens / iteration | probes kept / iteration | wall s per run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, em, start, end, tokens, kept, seconds in rows:
        print(
            f"| {name} | {em} | {start:.2f} | {end:.2f} | {tokens:.0f} | {kept:.1f} | "
            f"{seconds:.0f} |"
        )
    plot(curves, Path(args.out))


def plot(curves: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        axis.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    axis.set_xlabel("training iteration")
    axis.set_ylabel("accuracy of originals (mean over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=120)
    print(f"plot: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
