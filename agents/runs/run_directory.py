"""The layout of a run directory: where its config, checkpoints and policies are.

Shared by training (which writes it) and evaluation (which reads it); see
:mod:`agents.runs.training_run` for the whole layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from agents.rexrag import RexRagConfig
from agents.rexrag.rexrag import POLICY_DIR

CHECKPOINT_PREFIX = "iteration_"
#: A checkpoint's name: the prefix and its iteration, nothing else (``iteration_000010-
#: backup`` or ``iteration_000010.saving`` are not checkpoints, whatever they hold).
CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
#: Written last into a checkpoint: the signed manifest of its files
#: (:mod:`agents.runs.checkpoint_guard`); a checkpoint without it is ignored.
COMPLETE_MARKER = "COMPLETE"


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (would overwrite, or nothing to resume)."""


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first: by iteration number, not by name
    (``iteration_1000000`` comes after ``iteration_999999``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    numbered = []
    for path in run_dir.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            numbered.append((int(match.group(1)), path))
    return [path for _, path in sorted(numbered)]


def resolve_policy(path: str | Path) -> Path:
    """The Hugging Face policy directory of a checkpoint or of a run's latest checkpoint."""
    path = Path(path)
    if (path / POLICY_DIR).is_dir():
        return path / POLICY_DIR
    checkpoints = complete_checkpoints(path)
    if not checkpoints:
        raise RunDirectoryError(f"{path} is neither a checkpoint nor a run with a complete one")
    return checkpoints[-1] / POLICY_DIR


def run_config(path: str | Path) -> tuple[Path, RexRagConfig] | None:
    """The ``config.yaml`` of the run that ``path`` (a run, one of its checkpoints, or a
    checkpoint's ``policy/``) belongs to, and the config; None outside a run."""
    path = Path(path).resolve()
    for directory in (path, *list(path.parents)[:2]):
        if (directory / "config.yaml").is_file():
            return directory / "config.yaml", RexRagConfig.from_yaml(directory / "config.yaml")
    return None
