"""The rules that judge issue 28's pre-registered predictions, and the judging end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agents.analysis.paired_stats import Interval
from benchmarks import predictions
from benchmarks.predictions import CONFIRMED, REFUTED, UNDECIDED

SCREEN = Path(__file__).resolve().parents[2] / "docs" / "data" / "screen-tiny-synthwiki"


def ci(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 24)


@pytest.mark.parametrize(
    ("interval", "outcome"),
    [
        (ci(+1.0, +11.0), CONFIRMED),  # mean 6 >= 5, excludes 0
        (ci(+0.5, +7.5), UNDECIDED),  # mean 4 < 5, could still be >= 5
        (ci(-1.0, +13.0), UNDECIDED),  # mean 6, but 0 is inside
        (ci(+0.5, +4.5), REFUTED),  # all of it below 5
    ],
)
def test_at_least_five(interval, outcome):
    assert predictions.at_least(interval, 5.0) == outcome


@pytest.mark.parametrize(
    ("interval", "outcome"),
    [
        (ci(+0.2, +4.0), CONFIRMED),
        (ci(-2.0, +2.5), REFUTED),  # level: within ±3
        (ci(-6.0, -1.0), REFUTED),
        (ci(-4.0, +5.0), UNDECIDED),
    ],
)
def test_beats(interval, outcome):
    assert predictions.beats(interval) == outcome


@pytest.mark.parametrize(
    ("interval", "outcome"),
    [
        (ci(-2.5, +1.0), CONFIRMED),  # no worse than level
        (ci(-5.0, +1.0), UNDECIDED),
        (ci(-5.0, -0.5), REFUTED),
    ],
)
def test_not_below(interval, outcome):
    assert predictions.not_below(interval) == outcome


@pytest.mark.parametrize(
    ("interval", "outcome"),
    [(ci(-1.0, +4.0), CONFIRMED), (ci(+2.0, +9.0), UNDECIDED), (ci(+5.0, +9.0), REFUTED)],
)
def test_stuck_means_rising_by_less_than_five(interval, outcome):
    assert predictions.below(interval, 5.0) == outcome


def test_a_rate_that_stays_at_zero_does_not_rise():
    zero = ci(0.0, 0.0)
    assert predictions.rises(zero) == REFUTED and predictions.does_not_rise(zero) == CONFIRMED
    assert predictions.rises(ci(0.01, 0.05)) == CONFIRMED
    assert predictions.does_not_rise(ci(0.01, 0.05)) == REFUTED


def test_combining_parts():
    assert predictions.all_of([CONFIRMED, CONFIRMED]) == CONFIRMED
    assert predictions.all_of([CONFIRMED, UNDECIDED]) == UNDECIDED
    assert predictions.all_of([UNDECIDED, REFUTED]) == REFUTED
    assert predictions.any_of([REFUTED, CONFIRMED]) == CONFIRMED
    assert predictions.any_of([REFUTED, UNDECIDED]) == UNDECIDED
    assert predictions.any_of([REFUTED, REFUTED]) == REFUTED


def test_the_screen_judged_as_if_it_were_both_decisions(monkeypatch, capsys, tmp_path):
    """The tiny screen stands in for every directory: each prediction gets its parts,
    intervals over the screen's 6 seeds, and an outcome; the best setting is the one
    with the highest mean test EM (group_only, 63.7, ahead of masked's 63.0)."""
    screen = predictions.Runs(SCREEN)
    assert screen.best() == "group_only"
    judged = predictions.judge(screen, screen, screen)
    assert [len(p.parts) for p in judged.values()] == [2, 2, 5, 1]
    gain = judged["P1"].parts[0]
    assert (gain.interval.n, round(gain.interval.mean, 1), gain.outcome) == (6, 11.9, CONFIRMED)
    # SynthWiki's default warm start never goes on after hop 1 greedily, GRPO teaches it to
    assert judged["P2"].parts[0].outcome == REFUTED
    assert judged["P3"].outcome == REFUTED  # nobody doubts on their own there
    argv = ["predictions", "--tiny", str(SCREEN), "--trap", str(SCREEN)]
    figure = tmp_path / "decisions.png"
    monkeypatch.setattr(sys, "argv", [*argv, "--trap-screen", str(SCREEN), "--figure", str(figure)])
    predictions.main()
    printed = capsys.readouterr().out
    assert "| **P3** | | | | | **refuted** |" in printed
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_a_held_out_curve_starts_at_the_warm_start():
    curve = predictions.held_out_points(
        predictions.Runs(SCREEN), "grpo", "tracked_multi_hop", "warm_start_held_out_multi_hop_em"
    )
    assert list(curve) == [0, 3, 6, 9, 10] and curve[0] == 0.0
    assert curve[10] == pytest.approx(55.9, abs=0.05)  # the screen's table


def test_the_follow_up_judged_on_the_trap_screen():
    """The trap screen stands in for the 40-iteration follow-up (P5): after 10 iterations
    no setting's multi-hop EM has risen, though rexrag's originals doubt more than GRPO's."""
    trap = predictions.Runs(SCREEN.parent / "screen-tiny-synthwiki-trap")
    judged = predictions.judge_follow_up(trap)
    outcomes = {part.claim: part.outcome for part in judged.parts}
    assert outcomes["rexrag: multi-hop EM rises ≥ 5"] == REFUTED
    assert outcomes["self-doubt rise, rexrag − GRPO"] == CONFIRMED
    assert outcomes["GRPO: multi-hop EM rises < 5"] == CONFIRMED
    assert judged.outcome == REFUTED


def test_p6_judged_on_the_trap_decision():
    """The trap decision stands in for P6's 40 iterations: after 10, the official credit
    is level with group_only (refuted), and group_only's originals doubt no more than
    GRPO's."""
    trap = predictions.Runs(SCREEN.parent / "decision-tiny-synthwiki-trap")
    judged = predictions.judge_default_at_length(trap)
    lead, doubt = judged.parts
    assert lead.interval.format() == "+0.6 [-0.5, +1.7]" and lead.outcome == REFUTED
    assert doubt.outcome == CONFIRMED and doubt.interval.low <= 0 < doubt.interval.high
    assert judged.outcome == REFUTED


def test_the_default_rule_keeps_copy_on_the_screens():
    """On the screens standing in for the decisions, group_only − copy's final test EM
    interval at tiny-synthwiki reaches below level (+5.2 [-4.0, +14.4]), so the rule keeps
    the official copy, whatever the early lead (+11.9 at iteration 3, above 0)."""
    tiny = predictions.Runs(SCREEN)
    trap = predictions.Runs(SCREEN.parent / "screen-tiny-synthwiki-trap")
    choice, parts = predictions.probe_credit_rule(tiny, trap)
    assert choice == "copy"
    outcomes = {(part.source, part.claim): part.outcome for part in parts}
    assert (
        outcomes[(tiny.name, "group_only − copy no worse than level, final test EM")] == UNDECIDED
    )
    assert (
        outcomes[(trap.name, "group_only − copy no worse than level, final test EM")] == CONFIRMED
    )
    assert (
        outcomes[(tiny.name, "group_only − copy above 0, held-out EM at iteration 3")] == CONFIRMED
    )


def test_the_default_rule_chooses_group_only_when_level_at_both_and_ahead_at_one():
    """With the tiny screen's masked runs standing in for copy, group_only is level with
    it at both presets on final test EM and ahead at iteration 3 at tiny-synthwiki, so
    the rule chooses group_only; at the trap alone (level, ahead nowhere) it would not."""
    tiny = predictions.Runs(SCREEN)
    tiny.by_setting["rexrag"] = tiny.by_setting["masked"]
    trap = predictions.Runs(SCREEN.parent / "screen-tiny-synthwiki-trap")
    choice, parts = predictions.probe_credit_rule(tiny, trap)
    assert choice == "group_only"
    assert all(p.outcome == CONFIRMED for p in parts if "no worse" in p.claim)
    assert predictions.probe_credit_rule(trap, trap)[0] == "copy"
