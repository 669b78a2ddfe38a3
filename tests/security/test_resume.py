"""`rexrag train --resume` with real RLlib checkpoints (issue 29 items 1 and 7): a run
directory built by someone else is refused before anything in it is unpickled; a
checkpoint of ours that cannot be read falls back to the previous one."""

from __future__ import annotations

import csv
import pathlib
import pickle

import pytest
import yaml

from agents.cli import main
from agents.runs.run_directory import COMPLETE_MARKER, complete_checkpoints
from agents.runs.training_run import train
from rexrag_env.signing import write_manifest
from tests.agents.conftest import ray_cluster, tiny_config  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]


class WritesMarker:
    """Unpickling this writes ``path``: what a crafted checkpoint does, harmlessly."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.path, "unpickled"))


def test_a_run_directory_from_someone_else_runs_nothing(
    answering_model_dir, capital_task, tmp_path, capsys
):
    """The reproduction: config.yaml, iteration_000001/COMPLETE and a crafted pickle."""
    run, marker = tmp_path / "downloaded-run", tmp_path / "marker"
    checkpoint = run / "iteration_000001"
    checkpoint.mkdir(parents=True)
    config = {"base": "tiny-cpu", "llm": str(answering_model_dir), "dataset": str(capital_task)}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for name in ("algorithm_state.pkl", "class_and_ctor_args.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(WritesMarker(marker)))
    (checkpoint / COMPLETE_MARKER).write_text("ok\n")

    assert main(["train", "--resume", "--checkpoint-dir", str(run), "--stop-iters", "2"]) == 2
    err = capsys.readouterr().err
    assert "refusing to restore checkpoint" in err and "--trust-checkpoint" in err
    assert not marker.exists()


def test_an_unreadable_checkpoint_of_ours_falls_back_to_the_previous_one(
    answering_model_dir, capital_task, tmp_path
):
    run = tmp_path / "run"
    config = tiny_config(answering_model_dir, capital_task, questions_per_iteration=2, group_size=2)
    train(config, run, stop_iters=2, checkpoint_every=1, log=lambda _: None)
    newest = complete_checkpoints(run)[-1]
    state = next(newest.rglob("algorithm_state.pkl"))
    state.write_bytes(state.read_bytes()[:100])  # damaged on disk
    write_manifest(newest, COMPLETE_MARKER)  # after it was signed: it passes the check

    lines = []
    train(None, run, stop_iters=3, resume=True, log=lines.append)
    warning = next(line for line in lines if line.startswith("warning"))
    assert "iteration_000002" in warning and "falling back" in warning
    assert any("resumed from" in line and "iteration_000001" in line for line in lines)
    with (run / "metrics.csv").open() as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [1, 2, 3]
    assert [p.name for p in complete_checkpoints(run)][-2:] == [
        "iteration_000002",
        "iteration_000003",
    ]


@pytest.mark.parametrize("tamper", ["edit", "unsign"])
def test_our_own_checkpoint_changed_afterwards_is_refused(
    answering_model_dir, capital_task, tmp_path, tamper
):
    run = tmp_path / "run"
    config = tiny_config(answering_model_dir, capital_task, questions_per_iteration=2, group_size=2)
    train(config, run, stop_iters=1, log=lambda _: None)
    (checkpoint,) = complete_checkpoints(run)
    if tamper == "edit":
        state = next(checkpoint.rglob("algorithm_state.pkl"))
        state.write_bytes(state.read_bytes() + b"\0")
    else:
        (checkpoint / COMPLETE_MARKER).write_text("ok\n")
    with pytest.raises(ValueError, match="refusing to restore"):
        train(None, run, stop_iters=2, resume=True, log=lambda _: None)
    history = train(None, run, stop_iters=2, resume=True, trust_checkpoint=True, log=print)
    assert len(history) == 1
