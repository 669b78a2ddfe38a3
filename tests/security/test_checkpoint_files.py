"""Checkpoint files (issue 29 items 1 and 7): saved atomically and signed, found by
number, pruned safely; an unverified checkpoint is refused, a verified one that cannot
be read falls back to the previous one. The algorithm is a stand-in that pickles its
iteration, as RLlib's state file does; tests/security/test_resume.py runs RLlib."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from agents.runs import checkpoint_guard
from agents.runs.checkpoint_guard import (
    UntrustedCheckpointError,
    check_checkpoint,
    remove_checkpoint,
    restore_latest,
    save_checkpoint,
)
from agents.runs.run_directory import COMPLETE_MARKER, complete_checkpoints
from rexrag_env.signing import write_manifest

STATE_FILE = "algorithm_state.pkl"


class PicklingAlgo:
    """Saves and restores its iteration through a pickle; ``crash_on_save`` dies half-way."""

    def __init__(self, iteration: int, crash_on_save: bool = False):
        self.iteration = iteration
        self.crash_on_save = crash_on_save

    def save_to_path(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / STATE_FILE).write_bytes(pickle.dumps({"iteration": self.iteration})[:5])
        if self.crash_on_save:
            raise OSError("No space left on device")
        (Path(path) / STATE_FILE).write_bytes(pickle.dumps({"iteration": self.iteration}))

    def restore_from_path(self, path: str) -> None:
        self.iteration = pickle.loads((Path(path) / STATE_FILE).read_bytes())["iteration"]


def complete_dir(run_dir: Path, name: str) -> Path:
    (run_dir / name).mkdir()
    (run_dir / name / COMPLETE_MARKER).write_text("ok\n")
    return run_dir / name


def test_checkpoints_are_ordered_by_number_and_named_exactly(tmp_path):
    for name in ("iteration_999999", "iteration_1000000", "iteration_000010-backup"):
        complete_dir(tmp_path, name)
    assert [p.name for p in complete_checkpoints(tmp_path)] == [
        "iteration_999999",
        "iteration_1000000",
    ]


def test_keep_checkpoints_spares_what_only_looks_like_one(tmp_path):
    backup = complete_dir(tmp_path, "iteration_000010-backup")
    for iteration in (11, 12):
        save_checkpoint(PicklingAlgo(iteration), tmp_path, keep=1)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["iteration_000012"]
    assert backup.is_dir() and (backup / COMPLETE_MARKER).is_file()


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    save_checkpoint(PicklingAlgo(1), tmp_path)
    for crashing in (PicklingAlgo(1, crash_on_save=True), PicklingAlgo(2, crash_on_save=True)):
        with pytest.raises(OSError, match="No space left"):
            save_checkpoint(crashing, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iteration_000001"]
    algo = PicklingAlgo(0)
    assert restore_latest(algo, tmp_path) == tmp_path / "iteration_000001"
    assert algo.iteration == 1


def test_a_deletion_cut_short_leaves_no_complete_looking_checkpoint(tmp_path, monkeypatch):
    checkpoint = save_checkpoint(PicklingAlgo(3), tmp_path)

    def power_loss(path, *args, **kwargs):
        raise OSError("power loss")

    monkeypatch.setattr(checkpoint_guard.shutil, "rmtree", power_loss)
    with pytest.raises(OSError, match="power loss"):
        remove_checkpoint(checkpoint)
    assert (checkpoint / STATE_FILE).is_file() and complete_checkpoints(tmp_path) == []


def test_a_checkpoint_is_signed_and_every_change_is_refused(tmp_path):
    checkpoint = save_checkpoint(PicklingAlgo(4), tmp_path)
    check_checkpoint(checkpoint)
    (checkpoint / "extra.pkl").write_bytes(b"x")
    with pytest.raises(UntrustedCheckpointError, match=r"added \['extra.pkl'\]"):
        check_checkpoint(checkpoint)
    (checkpoint / "extra.pkl").unlink()
    (checkpoint / STATE_FILE).write_bytes(pickle.dumps({"iteration": 99}))
    with pytest.raises(UntrustedCheckpointError, match="changed"):
        check_checkpoint(checkpoint)
    (checkpoint / COMPLETE_MARKER).write_text("ok\n")  # how checkpoints were marked before
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        check_checkpoint(checkpoint)


def test_an_unverified_checkpoint_is_refused_not_skipped(tmp_path):
    save_checkpoint(PicklingAlgo(1), tmp_path)
    newest = save_checkpoint(PicklingAlgo(2), tmp_path)
    (newest / STATE_FILE).write_bytes(pickle.dumps({"iteration": 7}))
    algo = PicklingAlgo(0)
    with pytest.raises(UntrustedCheckpointError, match="iteration_000002"):
        restore_latest(algo, tmp_path)
    assert algo.iteration == 0  # nothing restored, the older one not silently taken
    assert restore_latest(algo, tmp_path, trust=True) == newest and algo.iteration == 7


def test_a_verified_checkpoint_that_cannot_be_read_falls_back_with_a_warning(tmp_path):
    """A state file damaged on disk after it was signed (the power-loss case of the
    issue): the previous complete checkpoint is restored and the user is told."""
    save_checkpoint(PicklingAlgo(1), tmp_path)
    newest = save_checkpoint(PicklingAlgo(2), tmp_path)
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[:7])
    write_manifest(newest, COMPLETE_MARKER)  # signed as it now is: only unreadable
    warnings, algo = [], PicklingAlgo(0)
    assert restore_latest(algo, tmp_path, log=warnings.append) == tmp_path / "iteration_000001"
    assert algo.iteration == 1
    assert "cannot restore" in warnings[0] and "iteration_000002" in warnings[0]
