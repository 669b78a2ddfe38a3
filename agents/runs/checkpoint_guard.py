"""Checkpoints that survive a power loss, and are restored only when this user wrote them.

RLlib's restore unpickles ``algorithm_state.pkl`` and ``class_and_ctor_args.pkl``
(msgpack state would still leave the pickled constructor arguments), so restoring a
checkpoint from someone else runs their code. A checkpoint is therefore signed when
it is saved and checked before it is restored (:mod:`rexrag_env.signing`: SHA-256 of
every file, HMAC with a per-user key kept outside the run directory). The driver
alone saves and restores (``save_to_path``/``restore_from_path`` run in the
``rexrag train`` process; the learners only hand it their state), so only the
driver's machine needs the key.

Saving: RLlib writes into ``iteration_N.saving``, a name no reader takes for a
checkpoint; its files are fsynced, the signed manifest ``COMPLETE`` is written last,
and the directory is renamed to ``iteration_N``. A crash at any point leaves either
the old state or the whole new checkpoint.

Restoring, newest first:

* a checkpoint that fails the check (edited, unsigned, another user's) is refused
  with an error naming it, never skipped for an older one: ``--trust-checkpoint``
  (``trust=True``) restores it anyway;
* a checkpoint that passes the check but cannot be restored (a state file damaged
  on disk, an RLlib that cannot read it) is reported as a warning, and the previous
  complete checkpoint is tried, checked in turn.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from agents.runs.run_directory import (
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    RunDirectoryError,
    complete_checkpoints,
)
from rexrag_env.signing import (
    UntrustedFileError,
    check_manifest,
    fsync_directory,
    write_manifest,
)

#: The ``rexrag train`` / ``rexrag tune`` flag that restores an unverified checkpoint.
TRUST_FLAG = "--trust-checkpoint"
#: Suffix of the directory a checkpoint is written into before it is renamed.
_STAGING_SUFFIX = ".saving"


class UntrustedCheckpointError(RunDirectoryError):
    """A checkpoint fails the authenticity check; it is not restored."""


def save_checkpoint(algo, run_dir: Path, keep: int | None = None) -> Path:
    """Save the algorithm's checkpoint (with its ``policy/``) atomically and signed; then,
    with ``keep``, delete all but the newest ``keep`` complete checkpoints.

    Older ones go only once the new one is in place, so a crash while saving still
    leaves a checkpoint to resume from. At 3B/7B scale a checkpoint (weights and AdamW
    state) is tens of GB, so a long run that keeps them all fills a disk.
    """
    final = run_dir / f"{CHECKPOINT_PREFIX}{algo.iteration:06d}"
    staging = final.with_name(final.name + _STAGING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)  # a save of this iteration that crashed
    try:
        algo.save_to_path(str(staging.resolve()))
        write_manifest(staging, COMPLETE_MARKER)
        if final.exists():  # a checkpoint of this iteration that could not be restored
            remove_checkpoint(final)
        os.replace(staging, final)
        fsync_directory(run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if keep is not None:
        for old in complete_checkpoints(run_dir)[:-keep]:
            remove_checkpoint(old)
    return final


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint, its ``COMPLETE`` first: a deletion cut short leaves an
    incomplete directory, which no resume takes, never a complete-looking half."""
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    fsync_directory(path)
    shutil.rmtree(path)


def check_checkpoint(path: Path) -> None:
    """Raise :class:`UntrustedCheckpointError` unless ``path`` is a checkpoint this user
    saved, unchanged since."""
    try:
        check_manifest(path, COMPLETE_MARKER)
    except UntrustedFileError as error:
        raise UntrustedCheckpointError(
            f"refusing to restore checkpoint {path}: {error}. Restoring unpickles its "
            f"files, which runs any code they hold; if you trust where it came from, pass "
            f"{TRUST_FLAG}"
        ) from error


def restore_latest(
    algo, run_dir: Path, *, trust: bool = False, log: Callable[[str], None] = print
) -> Path | None:
    """Restore ``algo`` from the newest complete checkpoint that restores; which one, or
    None when the run has none. See the module docstring for what is refused and what
    falls back."""
    checkpoints = complete_checkpoints(run_dir)
    for checkpoint in reversed(checkpoints):
        if not trust:
            check_checkpoint(checkpoint)
        try:
            algo.restore_from_path(str(checkpoint.resolve()))
        except Exception as error:  # a verified file RLlib cannot read: try the previous
            log(
                f"warning: cannot restore {checkpoint} ({type(error).__name__}: {error}); "
                "falling back to the previous complete checkpoint"
            )
            continue
        return checkpoint
    if checkpoints:
        raise RunDirectoryError(
            f"none of the {len(checkpoints)} complete checkpoints in {run_dir} could be "
            "restored (see the warnings above)"
        )
    return None
