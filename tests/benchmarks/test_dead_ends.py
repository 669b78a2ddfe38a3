"""The dead-end experiment's blind mode: a decisive run shows no outcome until all are done."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks import dead_ends

DATA = Path(__file__).resolve().parents[2] / "docs" / "data"


def test_a_blind_run_prints_progress_without_its_held_out_em():
    assert dead_ends.progress("rexrag", 3, 6, 10, 0.4567) == (
        "  rexrag seed 3: iteration 6/10, held-out EM 45.7"
    )
    assert dead_ends.progress("rexrag", 3, 6, 10, None) == "  rexrag seed 3: iteration 6/10"


def test_a_blind_experiment_reports_nothing_until_every_planned_run_is_done(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "runs").mkdir()
    planned = [dead_ends.run_name(key, seed) for seed in (5, 6) for key in ("grpo", "rexrag")]
    meta = {"blind": True, "planned_runs": planned}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "runs" / "grpo-seed5.json").write_text("{}")
    assert dead_ends.still_hidden(meta, tmp_path) == planned[1:]
    assert dead_ends.still_hidden({"planned_runs": planned}, tmp_path) == []  # not blind
    monkeypatch.setattr(sys, "argv", ["dead_ends.py", "--replot", str(tmp_path)])
    with pytest.raises(SystemExit, match="blind experiment with 3 runs still to do"):
        dead_ends.main()


def test_an_experiment_from_before_multi_hop_tracking_still_replots(tmp_path, monkeypatch, capsys):
    """docs/data's 24-seed experiment has no multi-hop numbers: it redraws as before."""
    shutil.copytree(DATA / "dead_ends-2026-11-30", tmp_path / "old")
    monkeypatch.setattr(sys, "argv", ["dead_ends.py", "--replot", str(tmp_path / "old")])
    dead_ends.main()
    printed = capsys.readouterr().out
    assert "| rexrag - grpo | 24 |" in printed and "rise from the warm start" not in printed
    assert "self-doubt rate" not in printed and "rescued groups" not in printed


def test_the_screen_replots_with_the_predictions_comparisons(tmp_path, monkeypatch, capsys):
    """Issue 28's screen: P3's and P4's differences and the self-doubt rise per setting."""
    shutil.copytree(DATA / "screen-tiny-synthwiki", tmp_path / "screen")
    monkeypatch.setattr(sys, "argv", ["dead_ends.py", "--replot", str(tmp_path / "screen")])
    dead_ends.main()
    printed = capsys.readouterr().out
    for row in ("| masked - group_only | 6 |", "| sequence - grpo_batch | 6 |"):
        assert row in printed
    assert "| GRPO (probes off) | +0.000 [+0.000, +0.000] |" in printed  # GRPO never doubts
    # group_only trains no probe token: all the push is on the originals
    assert "| REX-RAG, rexrag, probes in group statistics only | 0.97 | 1.000 | 0.000 |" in printed
    assert "self_doubt_rise" in (tmp_path / "screen" / "runs.csv").read_text()
    # every run is listed; the one that did not learn is named
    assert "| seed 5 | 63.3 | 40.0 † |" in printed and "1 of 36 runs: rexrag seed 5)" in printed


@pytest.mark.parametrize(
    ("rates", "rise"),
    [
        ([0.1, 0.0, 0.2, 0.3, 0.4], 0.2),  # mean of the last three minus the first
        ([0.3, 0.3, 0.3, 0.3], 0.0),
        ([0.1, 0.2, 0.3], float("nan")),  # no iteration between first and late
        ([0.1, None, 0.2, 0.3, 0.4], float("nan")),  # from before the rate was recorded
    ],
)
def test_self_doubt_rise(rates, rise):
    assert dead_ends.self_doubt_rise(rates) == pytest.approx(rise, nan_ok=True)


def test_held_out_em_separates_the_multi_hop_questions():
    """The trap's warm start answers after one search: right on most 1-hop questions,
    on almost no multi-hop one; the two numbers come from one evaluation."""
    from agents.llm.models import resolve_model
    from agents.rexrag import RexRagConfig

    config = RexRagConfig.from_yaml("tiny-synthwiki-trap")
    em = dead_ends.held_out_em(resolve_model(config.llm), config, "synthwiki/validation", 40)
    assert em["multi_hop"] < 0.1 < em["all"]


def test_a_run_record_is_written_whole(tmp_path):
    path = tmp_path / "grpo-seed4.json"
    dead_ends.save_run(path, {"setting": "grpo", "seed": 4})
    assert json.loads(path.read_text()) == {"setting": "grpo", "seed": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["grpo-seed4.json"]


#: Per-iteration metrics that depend on the run's state alone (not on timing).
RESUMED_METRICS = ("accuracy_original", "probes_kept", "policy_loss", "kl", "keep_ratio")


@pytest.fixture
def small_setting(monkeypatch, answering_model_dir, capital_task):
    """A REX-RAG setting on the sanity task, sized for a test; its keep ratio moves, so a
    resume that lost the algorithm's state would train differently."""
    overrides = {
        "llm": str(answering_model_dir),
        "dataset": str(capital_task),
        "questions_per_iteration": 4,
        "group_size": 3,
        "max_new_tokens_per_turn": 24,
        "probe_prob": 1.0,
        "keep_ratio": 0.9,
        "probe_credit": "copy",
    }
    monkeypatch.setitem(dead_ends.SETTINGS, "small", ("small", overrides))
    return argparse.Namespace(
        config="tiny-cpu",
        iterations=3,
        track_every=2,
        track_dataset=str(capital_task),
        eval_dataset=str(capital_task),
        eval_limit=None,
        blind=True,
    )


def test_a_run_cut_by_the_session_end_continues_with_the_same_numbers(
    small_setting, tmp_path, monkeypatch, capsys
):
    import ray

    from agents.runs import partial_run
    from agents.runs.run_directory import RunDirectoryError

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        whole = dead_ends.run(small_setting, "small", 0, tmp_path / "whole")

        keep = partial_run.keep_progress

        def session_ends_after_iteration_2(algo, work, progress):
            keep(algo, work, progress)
            if algo.iteration == 2:
                raise KeyboardInterrupt  # the session's end

        work = tmp_path / "cut"
        monkeypatch.setattr(partial_run, "keep_progress", session_ends_after_iteration_2)
        with pytest.raises(KeyboardInterrupt):
            dead_ends.run(small_setting, "small", 0, work)
        monkeypatch.setattr(partial_run, "keep_progress", keep)

        progress = work / partial_run.PROGRESS_FILE
        saved = progress.read_text()
        progress.unlink()  # a checkpoint without its progress is refused, not started over
        with pytest.raises(RunDirectoryError, match="remove the directory to start the run over"):
            dead_ends.run(small_setting, "small", 0, work)
        progress.write_text(saved)

        capsys.readouterr()
        resumed = dead_ends.run(small_setting, "small", 0, work)
        trained = capsys.readouterr().out
    finally:
        ray.shutdown()
    assert "iteration 3/3" in trained and "iteration 2/3" not in trained  # continued
    assert len(resumed["history"]) == len(whole["history"]) == 3
    for row, expected in zip(resumed["history"], whole["history"], strict=True):
        for name in RESUMED_METRICS:
            assert row[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert resumed["tracked"] == whole["tracked"] and set(whole["tracked"]) == {2, 3}
    assert resumed["test_em"] == whole["test_em"]
