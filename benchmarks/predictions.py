"""Issue 28's pre-registered predictions (docs/results.md), judged from the saved runs.

    python -m benchmarks.predictions --tiny DIR --trap DIR --trap-screen DIR [--long DIR]

``DIR``s are ``benchmarks/dead_ends.py`` output directories: the decision's runs at
``tiny-synthwiki`` and at ``tiny-synthwiki-trap``, and the trap's screen (which chose
its "best REX-RAG setting", and holds ``masked``'s trap runs when the decision does
not); ``--long``: the 40-iteration follow-up at the trap (P5, and P6 once it holds
``group_only``'s runs; both exploratory). Prints
each prediction's parts with their 95% intervals (paired by seed, Student-t, EM
points), the rule that judges each and the outcome: confirmed, refuted or undecided;
then the default ``probe_credit`` that item 6's rule chooses, with the parts it rests
on. The rules were written into docs/results.md before any decision run's outcome was
seen; they are the functions below.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.analysis.paired_stats import Interval, mean_interval, paired_difference
from benchmarks.dead_ends import (
    DECIDED_HALF_WIDTH,
    RUN_SUMMARY,
    SETTINGS,
    held_out_curve,
    load_runs,
)

CONFIRMED, REFUTED, UNDECIDED = "confirmed", "refuted", "undecided"
#: The settings "the best REX-RAG setting" is chosen from (the official one is ``rexrag``).
REX_RAG_SETTINGS = ("rexrag", "masked", "group_only", "sequence")
#: EM points within which two settings are level (``dead_ends.py``'s "decided" margin).
LEVEL = DECIDED_HALF_WIDTH


def at_least(interval: Interval, bound: float) -> str:
    """ "a − b ≥ +bound": the mean reaches it and the interval excludes 0; refuted when
    the whole interval lies below it."""
    if interval.mean >= bound and interval.low > 0:
        return CONFIRMED
    return REFUTED if interval.high < bound else UNDECIDED


def beats(interval: Interval) -> str:
    """ "a beats b": the interval lies above 0; refuted when it lies below 0 or within
    ±:data:`LEVEL` (decided level)."""
    if interval.low > 0:
        return CONFIRMED
    return REFUTED if interval.high < 0 or interval.half_width < LEVEL else UNDECIDED


def not_below(interval: Interval) -> str:
    """ "a ends ≥ b": no worse than level (the interval's low end above −:data:`LEVEL`);
    refuted when the interval lies below 0."""
    if interval.low > -LEVEL:
        return CONFIRMED
    return REFUTED if interval.high < 0 else UNDECIDED


def below(interval: Interval, bound: float) -> str:
    """ "rises by < bound": the interval's high end is below it; refuted when its low end
    reaches it."""
    if interval.high < bound:
        return CONFIRMED
    return REFUTED if interval.low >= bound else UNDECIDED


def rises(interval: Interval) -> str:
    """ "the rate rises": the interval lies above 0; refuted when its high end is not."""
    if interval.low > 0:
        return CONFIRMED
    return REFUTED if interval.high <= 0 else UNDECIDED


def does_not_rise(interval: Interval) -> str:
    """ "the rate does not rise": the interval does not lie above 0."""
    return CONFIRMED if interval.low <= 0 else REFUTED


def all_of(outcomes: list[str]) -> str:
    if REFUTED in outcomes:
        return REFUTED
    return CONFIRMED if all(o == CONFIRMED for o in outcomes) else UNDECIDED


def any_of(outcomes: list[str]) -> str:
    if CONFIRMED in outcomes:
        return CONFIRMED
    return REFUTED if all(o == REFUTED for o in outcomes) else UNDECIDED


@dataclass(frozen=True)
class Part:
    """One judged claim: what it says, where its numbers come from, its interval, outcome."""

    claim: str
    source: str
    interval: Interval
    outcome: str


@dataclass(frozen=True)
class Prediction:
    """Judged parts and what they add up to: an outcome, or the default they choose."""

    parts: list[Part]
    outcome: str


class Runs:
    """One experiment directory's runs, by setting and seed."""

    def __init__(self, directory: Path) -> None:
        self.name = directory.name
        self.meta = json.loads((directory / "meta.json").read_text())
        self.by_setting: dict[str, dict[int, dict]] = {}
        for run in load_runs(directory):
            self.by_setting.setdefault(run["setting"], {})[run["seed"]] = run

    def has(self, setting: str) -> bool:
        return setting in self.by_setting

    def best(self) -> str:
        """The REX-RAG setting with the highest mean final test EM (the screen's choice)."""
        ran = [s for s in REX_RAG_SETTINGS if self.has(s)]
        return max(ran, key=lambda s: np.mean([r["test_em"] for r in self.by_setting[s].values()]))

    def difference(
        self, a: str, b: str, value: Callable[[dict], float], scale: float = 100
    ) -> Interval:
        """``a − b`` (EM points by default), paired by seed over the seeds both ran."""
        seeds = sorted(set(self.by_setting[a]) & set(self.by_setting[b]))
        return paired_difference(
            [scale * value(self.by_setting[a][s]) for s in seeds],
            [scale * value(self.by_setting[b][s]) for s in seeds],
        )

    def per_run(self, setting: str, value: Callable[[dict], float], scale: float) -> Interval:
        return mean_interval([scale * value(r) for r in self.by_setting[setting].values()])


test_em = RUN_SUMMARY["test_em"]
self_doubt_rise = RUN_SUMMARY["self_doubt_rise"]


def multi_hop_rise(runs: Runs, setting: str) -> Interval:
    """How far the setting's held-out multi-hop EM rose from the warm start's by its last
    tracked iteration (points, mean over seeds)."""
    start = runs.meta["warm_start_held_out_multi_hop_em"]
    last = RUN_SUMMARY["held_out_multi_hop_em_last"]
    return runs.per_run(setting, lambda r: last(r) - start, 100)


def held_out_em_at_3(run: dict) -> float:
    return run["tracked"][3]


def judge(tiny: Runs, trap: Runs, trap_screen: Runs) -> dict[str, Prediction]:
    """Every prediction, judged: P1 at ``tiny-synthwiki``, P2-P4 at the trap, where "the
    best REX-RAG setting" is the trap screen's. A prediction holds when all its parts do,
    except P3's "masked or copy", which holds through either."""
    best = trap_screen.best()

    gain = tiny.difference("group_only", "rexrag", held_out_em_at_3)
    level = tiny.difference("group_only", "grpo", test_em)
    p1 = [
        Part(
            "group_only − copy ≥ +5, held-out EM at iteration 3",
            tiny.name,
            gain,
            at_least(gain, 5.0),
        ),
        Part("group_only ends ≥ GRPO, final test EM", tiny.name, level, not_below(level)),
    ]

    stuck = multi_hop_rise(trap, "grpo")
    over_grpo = trap.difference(best, "grpo", test_em)
    p2 = [
        Part(
            "GRPO's multi-hop held-out EM rises < 5 over 10 iterations",
            trap.name,
            stuck,
            below(stuck, 5.0),
        ),
        Part(
            f"best ({best}) − GRPO ≥ +3, final test EM",
            trap.name,
            over_grpo,
            at_least(over_grpo, 3.0),
        ),
    ]

    p3, learners = [], []
    for setting in ("masked", "rexrag"):  # rexrag is the official "copy"
        runs = trap if trap.has(setting) else trap_screen
        pays = runs.difference(setting, "group_only", test_em)
        doubt = runs.per_run(setting, self_doubt_rise, 1.0)
        pair = [
            Part(f"{setting} beats group_only, final test EM", runs.name, pays, beats(pays)),
            Part(f"self-doubt rate rises under {setting}", runs.name, doubt, rises(doubt)),
        ]
        p3 += pair
        learners.append(all_of([part.outcome for part in pair]))
    grpo_doubt = trap.per_run("grpo", self_doubt_rise, 1.0)
    p3.append(
        Part(
            "self-doubt rate does not rise under GRPO",
            trap.name,
            grpo_doubt,
            does_not_rise(grpo_doubt),
        )
    )

    over_batch = trap.difference(best, "grpo_batch", test_em)
    p4 = [
        Part(
            f"best ({best}) beats grpo_batch, final test EM",
            trap.name,
            over_batch,
            beats(over_batch),
        )
    ]
    return {
        "P1": Prediction(p1, all_of([part.outcome for part in p1])),
        "P2": Prediction(p2, all_of([part.outcome for part in p2])),
        "P3": Prediction(p3, all_of([any_of(learners), p3[-1].outcome])),
        "P4": Prediction(p4, p4[0].outcome),
    }


def probe_credit_rule(tiny: Runs, trap: Runs) -> tuple[str, list[Part]]:
    """The rule that chooses ``RexRagSettings.probe_credit`` (item 6), written into
    docs/results.md before any decision outcome was seen: ``group_only`` when
    ``group_only − copy`` is no worse than level at both presets on final test EM and
    better (interval above 0) at one of them on final test EM or on held-out EM at
    iteration 3; ``copy`` (the official behaviour) otherwise. Returns the choice and the
    parts it rests on."""
    no_worse, better = [], []
    for runs in (tiny, trap):
        final = runs.difference("group_only", "rexrag", test_em)
        early = runs.difference("group_only", "rexrag", held_out_em_at_3)
        no_worse.append(
            Part(
                "group_only − copy no worse than level, final test EM",
                runs.name,
                final,
                not_below(final),
            )
        )
        better += [
            Part("group_only − copy above 0, final test EM", runs.name, final, rises(final)),
            Part(
                "group_only − copy above 0, held-out EM at iteration 3",
                runs.name,
                early,
                rises(early),
            ),
        ]
    chosen = (
        all_of([p.outcome for p in no_worse]) == CONFIRMED
        and any_of([p.outcome for p in better]) == CONFIRMED
    )
    return ("group_only" if chosen else "copy"), no_worse + better


def held_out_points(runs: Runs, setting: str, tracked: str, start: str) -> dict[int, float]:
    """:func:`dead_ends.held_out_curve` of the setting's runs, in EM points."""
    curve = held_out_curve(list(runs.by_setting[setting].values()), runs.meta, tracked, start)
    return {i: 100 * em for i, em in curve.items()}


def plot_decisions(tiny: Runs, trap: Runs, path: Path) -> Path:
    """The README's figure: held-out EM over training at both severities, and on the
    trap's multi-hop questions (where GRPO is stuck if anywhere); one colour per
    setting in every panel, one legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tiny-synthwiki: held-out EM", tiny, "tracked", "warm_start_held_out_em"),
        ("tiny-synthwiki-trap: held-out EM", trap, "tracked", "warm_start_held_out_em"),
        (
            "tiny-synthwiki-trap: multi-hop questions",
            trap,
            "tracked_multi_hop",
            "warm_start_held_out_multi_hop_em",
        ),
    ]
    settings = list(dict.fromkeys([*tiny.by_setting, *trap.by_setting]))
    colours = {s: f"C{i}" for i, s in enumerate(settings)}
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.8))
    for axis, (title, runs, tracked, start) in zip(axes, panels, strict=True):
        for setting in runs.by_setting:
            curve = held_out_points(runs, setting, tracked, start)
            axis.plot(
                list(curve),
                list(curve.values()),
                marker=".",
                color=colours[setting],
                label=SETTINGS[setting][0],
            )
        seeds = len(next(iter(runs.by_setting.values())))
        axis.set_title(f"{title} ({seeds} seeds)", fontsize="medium")
        axis.set_xlabel("training iteration")
        axis.set_ylabel("greedy EM, mean over seeds")
        axis.grid(alpha=0.3)
    handles = {
        label: handle
        for axis in axes
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
    }
    figure.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=3,
        fontsize="small",
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def judge_follow_up(long: Runs) -> Prediction:
    """P5 (the 40-iteration follow-up): under ``rexrag`` or ``masked`` the multi-hop EM
    rises by 5 or more and the self-doubt rise exceeds GRPO's (paired); under GRPO the
    multi-hop EM rises by < 5."""
    parts, learners = [], []
    for setting in ("rexrag", "masked"):
        rise = multi_hop_rise(long, setting)
        doubt = long.difference(setting, "grpo", self_doubt_rise, scale=1.0)
        pair = [
            Part(f"{setting}: multi-hop EM rises ≥ 5", long.name, rise, at_least(rise, 5.0)),
            Part(f"self-doubt rise, {setting} − GRPO", long.name, doubt, rises(doubt)),
        ]
        parts += pair
        learners.append(all_of([part.outcome for part in pair]))
    grpo = multi_hop_rise(long, "grpo")
    parts.append(Part("GRPO: multi-hop EM rises < 5", long.name, grpo, below(grpo, 5.0)))
    return Prediction(parts, all_of([any_of(learners), parts[-1].outcome]))


def judge_default_at_length(long: Runs) -> Prediction:
    """P6 (pre-registered after P5's outcome): over the same 40 iterations, probes kept in
    the group statistics only do not escape as the official credit does: ``rexrag`` beats
    ``group_only`` on final test EM, and ``group_only``'s self-doubt rise does not exceed
    GRPO's (paired)."""
    lead = long.difference("rexrag", "group_only", test_em)
    doubt = long.difference("group_only", "grpo", self_doubt_rise, scale=1.0)
    parts = [
        Part("rexrag beats group_only, final test EM", long.name, lead, beats(lead)),
        Part(
            "self-doubt rise, group_only − GRPO, not above 0",
            long.name,
            doubt,
            does_not_rise(doubt),
        ),
    ]
    return Prediction(parts, all_of([part.outcome for part in parts]))


def print_prediction(name: str, prediction: Prediction) -> None:
    for part in prediction.parts:
        digits = 3 if "self-doubt" in part.claim else 1
        print(
            f"| {name} | {part.claim} | {part.source} | {part.interval.n} "
            f"| {part.interval.format(digits=digits)} | {part.outcome} |"
        )
    print(f"| **{name}** | | | | | **{prediction.outcome}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", required=True, type=Path, help="tiny-synthwiki's decision")
    parser.add_argument("--trap", required=True, type=Path, help="the trap's decision")
    parser.add_argument("--trap-screen", required=True, type=Path, help="the trap's screen")
    parser.add_argument("--long", type=Path, help="the 40-iteration follow-up (P5, P6)")
    parser.add_argument("--figure", type=Path, help="also draw the README's figure here")
    args = parser.parse_args()
    tiny, trap, trap_screen = Runs(args.tiny), Runs(args.trap), Runs(args.trap_screen)
    print(f"the trap screen's best REX-RAG setting: {trap_screen.best()}\n")
    print("| prediction | part | runs | seeds | 95% CI | outcome |\n|---|---|---|---:|---:|---|")
    for name, prediction in judge(tiny, trap, trap_screen).items():
        print_prediction(name, prediction)
    choice, parts = probe_credit_rule(tiny, trap)
    print_prediction("default probe_credit", Prediction(parts, choice))
    if args.long:
        long = Runs(args.long)
        print_prediction("P5", judge_follow_up(long))
        if long.has("group_only"):
            print_prediction("P6", judge_default_at_length(long))
    if args.figure:
        print(f"\nfigure: {plot_decisions(tiny, trap, args.figure)}")


if __name__ == "__main__":
    main()
