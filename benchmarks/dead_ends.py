"""The experiment: plain GRPO vs REX-RAG (corrections, probe credit, baselines), same budget.

    python benchmarks/dead_ends.py [--config tiny-synthwiki] [--iterations 15]
        [--seeds 0,1,2,3,4] [--settings grpo,none,rexrag,sequence]   # the default four
        (more settings: grpo_batch, masked, group_only; see SETTINGS)
        [--track-dataset synthwiki/validation] [--track-every 3]
        [--eval-dataset DATASET] [--eval-limit N] [--out DIR]
    python benchmarks/dead_ends.py --replot DIR      # tables and figure from saved runs
    python benchmarks/dead_ends.py --blind ...       # a decisive run: no outcome until all are done

Every run starts from the same warm-started policy (the preset's ``llm``), sees the same
number of questions (iterations × questions_per_iteration) and differs only in the
setting and the seed; with the same seed, every setting draws the same questions in the
same order, so settings are compared seed by seed (paired differences).

Learning is tracked on a fixed held-out set (``--track-dataset``, greedy EM every
``--track-every`` iterations, over all its questions and over its multi-hop ones, where
a policy that answers after one search is stuck): the accuracy of an iteration's own
originals swings by ±0.15 with which questions it drew, more than a few iterations of
learning move it.
After training, each policy is evaluated greedily on ``--eval-dataset`` (default: the
preset's ``eval_dataset``, SynthWiki's test split).

Prints the command and commit, then per setting: test EM (mean ± std and its 95%
t-interval over seeds), held-out EM at the end, the dead-end fraction over all
iterations with its interval, probe accuracy, sampled tokens and wall time; then each
paired difference of test EM and of held-out EM with its 95% interval, marked
"decided" when it excludes 0 or is narrower than ±3 EM points. Each run's history is
saved as it finishes (``DIR/runs/<setting>-seed<k>.json``; a rerun with the same
``--out`` skips the runs already there), with ``runs.csv``, ``differences.csv`` and
``curves.png`` beside them. A run in progress keeps its metrics and newest checkpoint in
``DIR/partial/<setting>-seed<k>/`` after every iteration, so a rerun after a cut session
continues it with the same numbers; two launches into one ``--out`` (one per core)
share its runs, each run trained by whichever claims it first
(:mod:`agents.runs.partial_run`).

``--blind`` is for the runs that decide (launch them all before looking at any): it
trains and saves every run as usual but prints no outcome (no held-out EM per iteration,
no table) until every planned run of the directory is done. The directory stays blind:
``meta.json`` records it and the planned runs, a resumed or extended launch adds to
them, and ``--replot`` refuses to report while any is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np

from agents.analysis.paired_stats import Interval, mean_interval, paired_difference
from agents.runs.provenance import stamp

#: key -> (label, config overrides). The REX-RAG settings name ``probe_credit`` (the
#: official ``copy`` where the label does not say otherwise), so that each keeps the
#: numbers it was measured with whatever ``RexRagSettings``' default is.
SETTINGS = {
    "grpo": ("GRPO (probes off)", {"probes": False}),
    "none": ("REX-RAG, correction none", {"correction": "none", "probe_credit": "copy"}),
    "rexrag": ("REX-RAG, correction rexrag", {"correction": "rexrag", "probe_credit": "copy"}),
    "sequence": (
        "REX-RAG, correction sequence",
        {"correction": "sequence", "probe_credit": "copy"},
    ),
    "grpo_batch": (
        "GRPO, tied groups on the batch baseline",
        {"probes": False, "advantage_baseline": "group_or_batch"},
    ),
    "masked": ("REX-RAG, rexrag, prefix masked", {"probe_credit": "masked"}),
    "group_only": (
        "REX-RAG, rexrag, probes in group statistics only",
        {"probe_credit": "group_only"},
    ),
}
#: What ``--settings`` runs unless told: the four of the 24-seed comparison (docs/results.md).
DEFAULT_SETTINGS = ("grpo", "none", "rexrag", "sequence")
#: (a, b): the differences a - b reported, where both settings ran.
COMPARISONS = (
    ("rexrag", "grpo"),
    ("sequence", "grpo"),
    ("none", "grpo"),
    ("rexrag", "none"),
    ("sequence", "rexrag"),
    ("grpo_batch", "grpo"),
    ("masked", "rexrag"),
    ("group_only", "rexrag"),
    ("group_only", "grpo"),
    ("group_only", "grpo_batch"),
    # Issue 28's P3 (does learning on probe tokens pay?) and P4 (does the best setting
    # beat GRPO's batch baseline?), whichever setting is the best.
    ("masked", "group_only"),
    ("rexrag", "group_only"),
    ("sequence", "group_only"),
    ("masked", "grpo"),
    ("rexrag", "grpo_batch"),
    ("masked", "grpo_batch"),
    ("sequence", "grpo_batch"),
)
#: A difference is decided when its interval excludes 0 or is narrower than this (EM points).
DECIDED_HALF_WIDTH = 3.0


def greedy_em(policy_dir, config, dataset: str, limit: int | None) -> float:
    """Greedy exact match (0-1) through the evaluation harness, the run's settings."""
    return held_out_em(policy_dir, config, dataset, limit)["all"]


def held_out_em(policy_dir, config, dataset: str, limit: int | None) -> dict[str, float]:
    """Greedy exact match (0-1) through the evaluation harness, the run's settings: over
    all questions (``all``) and over the multi-hop ones (``multi_hop``: SynthWiki's
    ``num_hops`` >= 2, where a policy that stops after one search is stuck; NaN when
    the set has none), from one evaluation."""
    from agents.analysis.dead_end_profile import hops_of
    from agents.runs.policy_eval import evaluate_policy
    from rexrag_env.datasets import load_qa_dataset

    hops = {q.id: hops_of(q) for q in load_qa_dataset(dataset)}
    with tempfile.TemporaryDirectory() as out:
        summary = evaluate_policy(
            policy_dir, config, [dataset], out, limit=limit, log=lambda _: None
        )
        records = [
            json.loads(line)
            for path in Path(out).glob("*.jsonl")
            for line in path.read_text().splitlines()
        ]
    multi_hop = [r["em"] for r in records if hops.get(r["id"], 0) >= 2]
    return {
        "all": summary["average"]["em"] / 100,
        "multi_hop": float(np.mean(multi_hop)) if multi_hop else float("nan"),
    }


def run(args, key: str, seed: int, work: Path) -> dict:
    """One training run: its per-iteration metrics, held-out EM every ``track_every``
    iterations, final test EM and training seconds. It keeps its progress in ``work``
    after every iteration and continues from there when a cut session left it
    (:mod:`agents.runs.partial_run`)."""
    from agents.rexrag import RexRagConfig
    from agents.rexrag.rexrag import METRICS_KEY
    from agents.runs.partial_run import keep_progress, restore_progress
    from agents.runs.run_directory import resolve_policy

    overrides = {**SETTINGS[key][1], "seed": seed}
    config = RexRagConfig.from_yaml(args.config, overrides)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    algo = config.build_algo()
    try:
        done = restore_progress(algo, work)
        before = done.seconds
        with tempfile.TemporaryDirectory() as directory:
            for iteration in range(algo.iteration + 1, args.iterations + 1):
                done.history.append(algo.train()[METRICS_KEY])
                if iteration % args.track_every == 0 or iteration == args.iterations:
                    algo.export_policy(directory)
                    em = held_out_em(directory, config, args.track_dataset, None)
                    done.tracked[iteration] = em["all"]
                    done.tracked_multi_hop[iteration] = em["multi_hop"]
                shown = None if args.blind else done.tracked.get(iteration)
                print(progress(key, seed, iteration, args.iterations, shown), flush=True)
                done.seconds = before + time.perf_counter() - start
                keep_progress(algo, work, done)
        # the final policy, as the newest checkpoint holds it (also when resumed at the end)
        test_em = greedy_em(resolve_policy(work), config, args.eval_dataset, args.eval_limit)
    finally:
        algo.stop()
    return {
        "setting": key,
        "seed": seed,
        "overrides": overrides,
        "history": done.history,
        "tracked": done.tracked,
        "tracked_multi_hop": done.tracked_multi_hop,
        "test_em": test_em,
        "seconds": before + time.perf_counter() - start,
    }


def progress(key: str, seed: int, iteration: int, iterations: int, em: float | None) -> str:
    """A run's progress line, with its held-out EM when ``em`` is given (not when blind)."""
    line = f"  {key} seed {seed}: iteration {iteration}/{iterations}"
    return line if em is None else f"{line}, held-out EM {100 * em:.1f}"


def run_name(key: str, seed: int) -> str:
    """A run's file stem in ``DIR/runs/`` and its name in ``meta.json``'s planned runs."""
    return f"{key}-seed{seed}"


#: Under an experiment's directory: each run in progress (its work directory and lock).
PARTIAL_DIR = "partial"


def save_run(path: Path, record: dict) -> None:
    """Write a finished run's record whole or not at all: a session cut mid-write must not
    leave a partial file that a resumed launch would take for a done run."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)


def still_hidden(meta: dict, out: Path) -> list[str]:
    """The planned runs of a blind experiment that are not done yet (none if not blind)."""
    if not meta.get("blind"):
        return []
    return [name for name in meta["planned_runs"] if not (out / "runs" / f"{name}.json").is_file()]


def warm_start_numbers(base, args) -> dict:
    """What every run starts from: the warm start's greedy EM on both sets, and how
    stuck it is on the multi-hop test questions (its dead-end profile)."""
    from agents.analysis.dead_end_profile import dead_end_profile
    from agents.llm.models import resolve_model

    policy = resolve_model(base.llm)
    held_out = held_out_em(policy, base, args.track_dataset, None)
    numbers = {
        "warm_start_test_em": greedy_em(policy, base, args.eval_dataset, args.eval_limit),
        "warm_start_held_out_em": held_out["all"],
        "warm_start_held_out_multi_hop_em": held_out["multi_hop"],
    }
    on_test = base.copy(copy_frozen=False)
    on_test.dataset = args.eval_dataset
    try:
        profile = dead_end_profile(on_test, passes=1)
    except ValueError:  # no multi-hop questions (e.g. the sanity task)
        numbers["warm_start_profile"] = None
        return numbers
    multi_hop = [i for hops, i in profile.accuracy_by_hops.items() if hops >= 2]
    numbers["warm_start_profile"] = {
        "dead_end": profile.dead_end_group_rate,
        "same_wrong_majority": profile.same_wrong_group_rate,
        "accuracy": sum(i.mean * i.n for i in multi_hop) / sum(i.n for i in multi_hop),
        "questions": profile.multi_hop_questions,
        "continue_rate": profile.continue_rate.mean,
    }
    return numbers


def load_runs(out: Path) -> list[dict]:
    runs = []
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        for name in ("tracked", "tracked_multi_hop"):  # older records have no multi-hop
            record[name] = {int(i): em for i, em in record.get(name, {}).items()}
        runs.append(record)
    return runs


#: A run "did not learn" when its final test EM is within this many points of the warm
#: start's (a learning run of the tiny presets gains ~25-30).
LEARNED_MARGIN = 10.0

#: Fewer seeds decide nothing: two equal differences give an interval of width 0.
MIN_SEEDS_TO_DECIDE = 3


def decided(interval: Interval) -> str:
    if interval.n < MIN_SEEDS_TO_DECIDE:
        return f"no ({MIN_SEEDS_TO_DECIDE}+ seeds needed)"
    if interval.excludes_zero():
        return "yes (excludes 0)"
    if 100 * interval.half_width < DECIDED_HALF_WIDTH:
        return f"yes (within ±{DECIDED_HALF_WIDTH:.0f})"
    return "no"


#: The learner's credit components (``credit_<component>_share`` of the push, Σ|A·w|).
CREDIT_COMPONENTS = ("original", "prefix", "prompt", "continuation")

#: Per run, what the tables and runs.csv report: name -> value of a saved run record.
RUN_SUMMARY = {
    "test_em": lambda r: r["test_em"],
    "held_out_em_last": lambda r: r["tracked"][max(r["tracked"])],
    "held_out_multi_hop_em_last": lambda r: _last(r["tracked_multi_hop"]),
    "self_doubt_rise": lambda r: self_doubt_rise([m.get("self_doubt_rate") for m in r["history"]]),
    "dead_end_mean": lambda r: _over_iterations(r, "dead_end_fraction_before_probing"),
    "probe_accuracy": lambda r: _over_iterations(r, "accuracy_probe"),
    "sampled_tokens": lambda r: _over_iterations(r, "sampled_tokens"),
    "rescued_groups": lambda r: _over_iterations(r, "rescued_groups"),
    **{
        f"credit_{component}_share": lambda r, c=component: _over_iterations(r, f"credit_{c}_share")
        for component in CREDIT_COMPONENTS
    },
    "seconds": lambda r: r["seconds"],
}


def _last(tracked: dict[int, float]) -> float:
    return tracked[max(tracked)] if tracked else float("nan")


#: The pre-registered "late" iterations of a self-doubt rise: 8-10 of a 10-iteration run.
LATE_ITERATIONS = 3


def self_doubt_rise(rates: list[float | None]) -> float:
    """How much more often the originals doubt their answer late in a run than at its
    start: the mean self-doubt rate over the last :data:`LATE_ITERATIONS` iterations minus
    the first iteration's (prediction P3's "the self-doubt rate rises"). NaN for a run too
    short to have both, or from before the rate was recorded."""
    if len(rates) <= LATE_ITERATIONS or any(rate is None for rate in rates):
        return float("nan")
    return float(np.mean(rates[-LATE_ITERATIONS:]) - rates[0])


def _over_iterations(record: dict, metric: str) -> float:
    """The metric's mean over the run's iterations, those that have it (NaN when none
    does: an older record, or a component with no token in any iteration)."""
    values = [m[metric] for m in record["history"] if m.get(metric) is not None]
    values = [value for value in values if not np.isnan(value)]
    return float(np.mean(values)) if values else float("nan")


def paired_differences(groups: dict[str, list[dict]]) -> dict[tuple[str, str], dict]:
    """Per comparison of :data:`COMPARISONS` with 2+ common seeds, the paired interval of
    each metric: test EM, the last held-out EM and the held-out EM at every iteration
    tracked in all of those runs (``held_out_em_<iteration>``)."""
    differences = {}
    for a, b in COMPARISONS:
        if a not in groups or b not in groups:
            continue
        by_seed = {key: {r["seed"]: r for r in groups[key]} for key in (a, b)}
        seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(seeds) < 2:
            continue
        runs = [by_seed[key][seed] for key in (a, b) for seed in seeds]
        iterations = sorted(set.intersection(*(set(r["tracked"]) for r in runs)))
        names = ("test_em", "held_out_em_last", "held_out_multi_hop_em_last")
        metrics = {name: RUN_SUMMARY[name] for name in names}
        for i in iterations:
            metrics[f"held_out_em_{i}"] = lambda r, i=i: r["tracked"][i]
        differences[a, b] = {
            name: paired_difference(
                [value(by_seed[a][s]) for s in seeds], [value(by_seed[b][s]) for s in seeds]
            )
            for name, value in metrics.items()
        }
    return differences


def report(runs: list[dict], meta: dict, out: Path) -> None:
    """Print the tables, write ``runs.csv``, ``differences.csv`` and ``curves.png``."""
    groups = {
        key: sorted((r for r in runs if r["setting"] == key), key=lambda r: r["seed"])
        for key in SETTINGS
    }
    groups = {key: group for key, group in groups.items() if group}
    summary = {
        key: [{name: f(r) for name, f in RUN_SUMMARY.items()} for r in group]
        for key, group in groups.items()
    }
    print(f"command: {meta['command']}\ncommit: {', '.join(meta['commits'])}  date: {meta['date']}")
    profile = meta["warm_start_profile"]
    if profile:
        print(
            f"warm start on the {profile['questions']:.0f} multi-hop test questions, "
            f"rollouts at the run's temperature: all wrong {profile['dead_end']:.2f}, most "
            f"giving one same wrong answer {profile['same_wrong_majority']:.2f}, rollout "
            f"accuracy {profile['accuracy']:.3f}"
        )
    print(
        f"config={meta['config']} iterations={meta['iterations']} eval={meta['eval_dataset']}, "
        f"held-out={meta['track_dataset']} (greedy); warm start: test EM "
        f"{100 * meta['warm_start_test_em']:.1f}, held-out EM "
        f"{100 * meta['warm_start_held_out_em']:.1f}\n"
    )
    print(
        "| setting | seeds | test EM (mean ± std) | test EM 95% CI | held-out EM, last | "
        "dead-end fraction over iterations (95% CI) | probe accuracy | sampled tokens / "
        "iteration | wall s per run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, rows in summary.items():
        column = {name: [row[name] for row in rows] for name in RUN_SUMMARY}
        test, dead = column["test_em"], column["dead_end_mean"]
        several = len(rows) > 1
        test_ci = mean_interval(test).format(scale=100, signed=False) if several else "-"
        dead_cell = (
            mean_interval(dead).format(digits=2, signed=False) if several else f"{dead[0]:.2f}"
        )
        spread = np.std(test, ddof=1) if several else 0.0
        print(
            f"| {SETTINGS[key][0]} | {len(rows)} | {100 * np.mean(test):.1f} ± {100 * spread:.1f} "
            f"| {test_ci} | {100 * np.mean(column['held_out_em_last']):.1f} | {dead_cell} "
            f"| {np.mean(column['probe_accuracy']):.2f} | {np.mean(column['sampled_tokens']):.0f} "
            f"| {np.mean(column['seconds']):.0f} |"
        )
    with (out / "runs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "seed", *RUN_SUMMARY])
        for key, group in groups.items():
            for record, row in zip(group, summary[key], strict=True):
                writer.writerow([key, record["seed"], *row.values()])
    differences = paired_differences(groups)
    print(
        "\n| difference (paired by seed) | seeds | test EM, 95% CI | decided | "
        "held-out EM (last), 95% CI | decided | held-out multi-hop EM (last), 95% CI | "
        "decided |"
    )
    print("|---|---:|---:|---|---:|---|---:|---|")
    for (a, b), intervals in differences.items():
        cells = [
            f"{intervals[metric].format(scale=100)} | {decided(intervals[metric])}"
            for metric in ("test_em", "held_out_em_last", "held_out_multi_hop_em_last")
        ]
        print(f"| {a} - {b} | {intervals['test_em'].n} | " + " | ".join(cells) + " |")
    print_multi_hop_rise(summary, meta)
    print_self_doubt_rise(summary)
    print_credit(summary)
    print_every_run(groups, meta)
    # How fast each setting learns: the held-out EM at every tracked iteration, paired.
    tracked = sorted({i for group in groups.values() for r in group for i in r["tracked"]})
    print(
        "\n| held-out EM difference (paired by seed), 95% CI | "
        + " | ".join(f"iteration {i}" for i in tracked)
        + " |\n|---|"
        + "---:|" * len(tracked)
    )
    for (a, b), intervals in differences.items():
        cells = [intervals.get(f"held_out_em_{i}") for i in tracked]
        print(
            f"| {a} - {b} | "
            + " | ".join(
                "-" if c is None else f"{c.format(scale=100)}{' *' if c.excludes_zero() else ''}"
                for c in cells
            )
            + " |"
        )
    print("(* the interval excludes 0; -: not tracked in both settings' runs)")
    with (out / "differences.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "metric", "seeds", "mean", "low", "high"])
        for (a, b), intervals in differences.items():
            for metric, interval in intervals.items():
                writer.writerow(
                    [a, b, metric, interval.n, interval.mean, interval.low, interval.high]
                )
    path = plot_curves(groups, meta, out / "curves.png")
    print(f"\nfiles: {out / 'runs.csv'}, {out / 'differences.csv'}, {path}")


def print_multi_hop_rise(summary: dict[str, list[dict]], meta: dict) -> None:
    """How far each setting's greedy EM on the held-out multi-hop questions rose from
    the warm start's by the last tracked iteration (mean over seeds, 95% CI): under 5
    points for GRPO is what the pre-registration calls stuck (prediction P2)."""
    start = meta.get("warm_start_held_out_multi_hop_em")
    if start is None:  # an experiment from before multi-hop tracking
        return
    print(
        f"\n| setting | held-out multi-hop EM, last (mean) | rise from the warm start "
        f"({100 * start:.1f}), 95% CI |\n|---|---:|---:|"
    )
    for key, rows in summary.items():
        last = [row["held_out_multi_hop_em_last"] for row in rows]
        rise = [value - start for value in last]
        cell = mean_interval(rise).format(scale=100) if len(rows) > 1 else f"{100 * rise[0]:+.1f}"
        print(f"| {SETTINGS[key][0]} | {100 * np.mean(last):.1f} | {cell} |")


def print_self_doubt_rise(summary: dict[str, list[dict]]) -> None:
    """Per setting, how much the originals' self-doubt rate rose from the first iteration
    to the last :data:`LATE_ITERATIONS` (mean over seeds, 95% CI): above 0 under a probe
    setting and not under GRPO is P3's sign that the policy learned to doubt by itself."""
    rises = {key: [row["self_doubt_rise"] for row in rows] for key, rows in summary.items()}
    if all(np.isnan(rise).all() for rise in rises.values()):  # from before the rate existed
        return
    print(
        f"\n| setting | self-doubt rate of originals: rise from iteration 1 to the mean of "
        f"the last {LATE_ITERATIONS}, 95% CI |\n|---|---:|"
    )
    for key, rise in rises.items():
        cell = mean_interval(rise).format(digits=3) if len(rise) > 1 else f"{rise[0]:+.3f}"
        print(f"| {SETTINGS[key][0]} | {cell} |")


def print_every_run(groups: dict[str, list[dict]], meta: dict) -> None:
    """Every run's final test EM, seed by setting, marking the runs that did not learn
    (within :data:`LEARNED_MARGIN` points of the warm start): nothing is averaged away."""
    start = 100 * meta["warm_start_test_em"]
    seeds = sorted({r["seed"] for group in groups.values() for r in group})
    by_seed = {key: {r["seed"]: 100 * r["test_em"] for r in group} for key, group in groups.items()}
    failed = [
        (key, seed)
        for key in groups
        for seed, em in by_seed[key].items()
        if em < start + LEARNED_MARGIN
    ]
    print(
        f"\n| final test EM per run (warm start {start:.1f}) | "
        + " | ".join(groups)
        + " |\n|---|"
        + "---:|" * len(groups)
    )
    for seed in seeds:
        cells = []
        for key in groups:
            em = by_seed[key].get(seed)
            mark = " †" if (key, seed) in failed else ""
            cells.append("-" if em is None else f"{em:.1f}{mark}")
        print(f"| seed {seed} | " + " | ".join(cells) + " |")
    names = ", ".join(f"{key} seed {seed}" for key, seed in failed)
    print(
        f"(† did not learn: within {LEARNED_MARGIN:.0f} points of the warm start; "
        f"{len(failed)} of {sum(map(len, by_seed.values()))} runs"
        + (f": {names})" if failed else ")")
    )


def print_credit(summary: dict[str, list[dict]]) -> None:
    """Per setting, the all-wrong groups a right kept probe rescued per iteration and
    where the learner's push (Σ|A·w| at θ_old) went: the originals, a probe's copied
    prefix, its inserted prompt, its own continuation (means over iterations and seeds)."""
    if all(np.isnan([row["rescued_groups"] for row in rows]).all() for rows in summary.values()):
        return  # from before these were recorded
    header = " | ".join(f"push on {c}" for c in CREDIT_COMPONENTS)
    print(
        f"\n| setting | rescued groups / iteration | {header} |\n|---|---:|"
        + "---:|" * len(CREDIT_COMPONENTS)
    )
    for key, rows in summary.items():
        cells = []
        for component in CREDIT_COMPONENTS:
            shares = [row[f"credit_{component}_share"] for row in rows]
            cells.append("-" if np.isnan(shares).all() else f"{np.nanmean(shares):.3f}")
        rescued = np.nanmean([row["rescued_groups"] for row in rows])
        print(f"| {SETTINGS[key][0]} | {rescued:.2f} | " + " | ".join(cells) + " |")


def held_out_curve(
    runs: list[dict], meta: dict, tracked: str = "tracked", start: str = "warm_start_held_out_em"
) -> dict[int, float]:
    """Greedy held-out EM (0-1) from the warm start's (iteration 0, ``meta[start]``)
    through every iteration tracked in all ``runs`` (``run[tracked]``: all questions, or
    ``tracked_multi_hop``), the mean over the runs."""
    iterations = sorted(set.intersection(*(set(r[tracked]) for r in runs)))
    return {
        0: meta[start],
        **{i: float(np.mean([r[tracked][i] for r in runs])) for i in iterations},
    }


def plot_curves(groups: dict[str, list[dict]], meta: dict, path: Path) -> Path:
    """Held-out EM (from the warm start), dead-end fraction and accuracy of originals
    per iteration, one line per setting, each the mean over its seeds."""
    from agents.runs.curves import plot_panels

    def mean_of(group, values):
        return np.mean([values(record) for record in group], axis=0)

    held_out = {SETTINGS[key][0]: held_out_curve(group, meta) for key, group in groups.items()}
    panels = [("held-out greedy EM (mean over seeds)", held_out)]
    for title, metric in (
        ("dead-end fraction (mean over seeds)", "dead_end_fraction_before_probing"),
        ("accuracy of originals (mean over seeds)", "accuracy_original"),
    ):
        panels.append(
            (
                title,
                {
                    SETTINGS[key][0]: mean_of(
                        group, lambda r, m=metric: [x[m] for x in r["history"]]
                    )
                    for key, group in groups.items()
                },
            )
        )
    seeds = sorted({record["seed"] for group in groups.values() for record in group})
    return plot_panels(panels, path, f"{meta['config']}, seeds {seeds}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-synthwiki", help="preset or YAML file")
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--settings", default=",".join(DEFAULT_SETTINGS), help=f"of {list(SETTINGS)}"
    )
    parser.add_argument("--track-dataset", default="synthwiki/validation")
    parser.add_argument("--track-every", type=int, default=3, help="iterations")
    parser.add_argument("--eval-dataset", default=None, help="default: the preset's eval_dataset")
    parser.add_argument("--eval-limit", type=int, default=None, help="default: all")
    parser.add_argument("--out", default="out/dead_ends")
    parser.add_argument(
        "--replot", metavar="DIR", help="report the runs saved in DIR, train nothing"
    )
    parser.add_argument(
        "--blind",
        action="store_true",
        help="print no outcome until every planned run is done (the directory stays blind)",
    )
    args = parser.parse_args()

    if args.replot:
        out = Path(args.replot)
        meta = json.loads((out / "meta.json").read_text())
        missing = still_hidden(meta, out)
        if missing:
            sys.exit(f"{out} is a blind experiment with {len(missing)} runs still to do: no report")
        report(load_runs(out), meta, out)
        return
    import ray

    from agents.rexrag import RexRagConfig
    from agents.runs.partial_run import claimed
    from agents.runs.ray_cluster import init_ray

    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")
    base = RexRagConfig.from_yaml(args.config)
    args.eval_dataset = args.eval_dataset or base.eval_dataset or base.dataset
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    experiment = {
        "config": args.config,
        "iterations": args.iterations,
        "track_dataset": args.track_dataset,
        "eval_dataset": args.eval_dataset,
        "eval_limit": args.eval_limit,
    }
    if meta_path.is_file():  # resuming, or adding seeds: the same experiment only
        meta = json.loads(meta_path.read_text())
        if {key: meta[key] for key in experiment} != experiment:
            sys.exit(
                f"{out} holds runs of another experiment ({meta['command']}): use another --out"
            )
    else:
        meta = {**experiment, **warm_start_numbers(base, args)}
    seeds = [int(s) for s in args.seeds.split(",")]
    planned = [run_name(key, seed) for seed in seeds for key in args.settings.split(",")]
    args.blind = args.blind or bool(meta.get("blind"))  # a blind experiment stays blind
    if args.blind:
        meta["blind"] = True
        meta["planned_runs"] = list(dict.fromkeys([*meta.get("planned_runs", []), *planned]))
    meta.update(stamp(meta))
    meta_path.write_text(json.dumps(meta, indent=1))
    init_ray()
    try:
        for seed in seeds:
            for key in args.settings.split(","):  # seed-major: every seed completes all settings
                name = run_name(key, seed)
                path = out / "runs" / f"{name}.json"
                if path.is_file():
                    continue
                with claimed(out / PARTIAL_DIR / f"{name}.lock") as ours:
                    if not ours or path.is_file():  # another launch trains it, or just did
                        continue
                    work = out / PARTIAL_DIR / name
                    save_run(path, run(args, key, seed, work))
                    shutil.rmtree(work)
    finally:
        ray.shutdown()
    missing = still_hidden(meta, out)
    if missing:
        print(f"blind: {len(missing)} planned runs still to do; no outcome is shown until then")
        return
    report(load_runs(out), meta, out)


if __name__ == "__main__":
    main()
