"""One run of an experiment that a cut session continues where it stopped, and that two
launches sharing an output directory never both train.

``benchmarks/dead_ends.py`` trains each run of an experiment for minutes (a SmolLM2 run
for half an hour and more) in sessions that end on a clock; a run cut at iteration 9 of
10 would start over. So after every iteration the run's progress (its metrics so far, as
JSON) and then its checkpoint go to the run's work directory, the newest checkpoint
only, saved and signed as ``rexrag train`` saves them (:mod:`agents.runs.checkpoint_guard`).
A rerun restores the checkpoint and keeps the progress up to the checkpoint's
iteration: a cut between the two writes costs that one iteration, never a number, since
RLlib's state, the samplers' RNG and the keep ratio restore exactly
(tests/agents/rexrag/test_rexrag.py). A checkpoint is restored only if this user signed
it, so a work directory from elsewhere runs no code.

Two launches into one directory (two streams on two cores) claim a run by an exclusive
``flock`` on its lock file: the kernel drops the lock when the process holding it ends,
however it ends, so a killed stream never leaves a run claimed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.runs.checkpoint_guard import restore_latest, save_checkpoint
from agents.runs.run_directory import RunDirectoryError

#: The run's metrics so far, in its work directory (written before each checkpoint).
PROGRESS_FILE = "progress.json"


@dataclass
class RunProgress:
    """What a run has measured so far: one metrics row per iteration, held-out EM at the
    tracked iterations (all questions, multi-hop ones) and its training seconds."""

    history: list[dict] = field(default_factory=list)
    tracked: dict[int, float] = field(default_factory=dict)
    tracked_multi_hop: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def up_to(self, iteration: int) -> RunProgress:
        """The progress as it stood after ``iteration``."""
        return RunProgress(
            history=self.history[:iteration],
            tracked={i: em for i, em in self.tracked.items() if i <= iteration},
            tracked_multi_hop={i: em for i, em in self.tracked_multi_hop.items() if i <= iteration},
            seconds=self.seconds,
        )


def keep_progress(algo, work: Path, progress: RunProgress) -> None:
    """Save ``progress`` and then ``algo``'s checkpoint into ``work`` (only the newest
    checkpoint stays). In this order a cut leaves the progress at most one iteration
    ahead of the checkpoint, which :func:`restore_progress` drops."""
    partial = work / f".{PROGRESS_FILE}.tmp"
    partial.write_text(json.dumps(asdict(progress)))
    os.replace(partial, work / PROGRESS_FILE)
    save_checkpoint(algo, work, keep=1)


def restore_progress(algo, work: Path) -> RunProgress:
    """Restore ``algo`` from the run's newest checkpoint in ``work`` and return the progress
    up to it; an empty progress when the run has no checkpoint yet.

    Raises :class:`~agents.runs.checkpoint_guard.UntrustedCheckpointError` for a
    checkpoint this user did not sign, and :class:`RunDirectoryError` when the progress
    that goes with the checkpoint is missing or unreadable: nothing is deleted, the
    error names the directory.
    """
    restored = restore_latest(algo, work)
    if restored is None:
        return RunProgress()
    try:
        saved = json.loads((work / PROGRESS_FILE).read_text())
        progress = RunProgress(
            history=list(saved["history"]),
            tracked={int(i): float(em) for i, em in saved["tracked"].items()},
            tracked_multi_hop={int(i): float(em) for i, em in saved["tracked_multi_hop"].items()},
            seconds=float(saved["seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunDirectoryError(
            f"{work} holds checkpoint {restored.name} but not the progress that goes with it "
            f"({type(error).__name__}: {error}); remove the directory to start the run over"
        ) from error
    if len(progress.history) < algo.iteration:
        raise RunDirectoryError(
            f"{work}: {PROGRESS_FILE} has {len(progress.history)} iterations, its checkpoint "
            f"{algo.iteration}; remove the directory to start the run over"
        )
    return progress.up_to(algo.iteration)


@contextmanager
def claimed(lock_file: Path) -> Iterator[bool]:
    """Whether this process holds ``lock_file``'s exclusive lock for the ``with`` block:
    False while another launch (or another open of it here) holds it. The file stays."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file releases the lock
