"""The experiment: plain GRPO vs REX-RAG (correction none / rexrag / sequence), same budget.

    python benchmarks/dead_ends.py [--config tiny-synthwiki] [--iterations 20] [--seeds 0,1,2]
                                   [--eval-dataset DATASET] [--eval-limit N] [--out DIR]

Every run starts from the same warm-started policy (the preset's ``llm``), sees the same
number of questions (iterations × questions_per_iteration) and differs only in the
setting and the seed. After training, the policy is evaluated greedily on
``--eval-dataset`` (default: the preset's ``eval_dataset``, SynthWiki's test split). The
table reports exact match (mean ± std over seeds), the dead-end fraction (all originals
of a question wrong) in the first and the last iteration, sampled tokens per iteration
(probes cost tokens), probes spawned/kept and their accuracy, and wall time;
``curves.png`` plots the originals' accuracy and the dead-end fraction per iteration,
one line per setting (mean over seeds).
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


def greedy_accuracy(policy_dir, config, dataset: str, limit: int | None) -> float:
    """Greedy exact match (0-1) through the evaluation harness, the run's settings."""
    from agents.runs.policy_eval import evaluate_policy

    with tempfile.TemporaryDirectory() as out:
        summary = evaluate_policy(
            policy_dir, config, [dataset], out, limit=limit, log=lambda _: None
        )
    return summary["average"]["em"] / 100


def run(preset: str, overrides: dict, iterations: int, eval_dataset: str, eval_limit: int | None):
    """One training run; returns its per-iteration metrics, test EM and wall time."""
    from agents.rexrag import RexRagConfig
    from agents.rexrag.rexrag import METRICS_KEY

    config = RexRagConfig.from_yaml(preset, overrides)
    start = time.perf_counter()
    algo = config.build_algo()
    history = []
    for iteration in range(iterations):
        history.append(algo.train()[METRICS_KEY])
        print(f"  {overrides} iteration {iteration + 1}/{iterations}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        algo.export_policy(directory)
        algo.stop()
        accuracy = greedy_accuracy(directory, config, eval_dataset, eval_limit)
    return history, accuracy, time.perf_counter() - start


def main() -> None:
    import ray

    from agents.llm.models import resolve_model
    from agents.rexrag import RexRagConfig
    from agents.runs.curves import plot_panels
    from agents.runs.policy_eval import dead_end_profile

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-synthwiki", help="preset or YAML file")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--eval-dataset", default=None, help="default: the preset's eval_dataset or questions"
    )
    parser.add_argument("--eval-limit", type=int, default=None, help="default: all")
    parser.add_argument("--out", default="out/dead_ends")
    args = parser.parse_args()

    base = RexRagConfig.from_yaml(args.config)
    eval_dataset = args.eval_dataset or base.eval_dataset or base.question_source()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    ray.init(include_dashboard=False, log_to_driver=False)
    # every run starts from this policy: evaluate it once, and measure how stuck it is
    before = greedy_accuracy(resolve_model(base.llm), base, eval_dataset, args.eval_limit)
    try:
        profile = dead_end_profile(resolve_model(base.llm), base, eval_dataset)
    except ValueError as error:  # no multi-hop questions (e.g. the sanity task)
        print(f"no dead-end profile: {error}")
    else:
        print(
            f"warm start on the {profile['questions']:.0f} multi-hop questions of "
            f"{eval_dataset}, {base.group_size} rollouts each at T={base.temperature}: "
            f"all wrong {profile['dead_end']:.2f}, most giving one same wrong answer "
            f"{profile['same_wrong_majority']:.2f}, rollout accuracy {profile['accuracy']:.3f}",
            flush=True,
        )
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

        def mean(metric, part=slice(None), histories=histories):
            return np.mean([np.mean([m[metric] for m in h[part]]) for h in histories])

        rows.append(
            (
                name,
                f"{100 * np.mean(accuracy):.1f} ± {100 * np.std(accuracy):.1f}",
                mean("dead_end_fraction_before_probing", slice(0, 1)),
                mean("dead_end_fraction_before_probing", slice(-1, None)),
                mean("sampled_tokens"),
                f"{mean('probes_spawned'):.1f}/{mean('probes_kept'):.1f}",
                mean("accuracy_probe"),
                np.mean([seconds for _, _, seconds in results]),
            )
        )
        curves[name] = {
            metric: np.mean([[m[metric] for m in h] for h in histories], axis=0)
            for metric in ("accuracy_original", "dead_end_fraction_before_probing")
        }
    ray.shutdown()

    print(
        f"config={args.config} iterations={args.iterations} seeds={seeds} "
        f"eval={eval_dataset} ({args.eval_limit or 'all'} questions, greedy); "
        f"before training: EM {100 * before:.1f}"
    )
    print(
        "| setting | test EM (mean ± std) | dead-end fraction, first iteration | last iteration "
        "| sampled tokens / iteration | probes spawned/kept / iteration | probe accuracy "
        "| wall s per run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, em, start, end, tokens, probes, probe_accuracy, seconds in rows:
        print(
            f"| {name} | {em} | {start:.2f} | {end:.2f} | {tokens:.0f} | {probes} | "
            f"{probe_accuracy:.2f} | {seconds:.0f} |"
        )
    panels = [
        (title, {name: curve[metric] for name, curve in curves.items()})
        for title, metric in (
            ("accuracy of originals (mean over seeds)", "accuracy_original"),
            ("dead-end fraction (mean over seeds)", "dead_end_fraction_before_probing"),
        )
    ]
    out = plot_panels(panels, Path(args.out) / "curves.png", f"{args.config}, seeds {seeds}")
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
