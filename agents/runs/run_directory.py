"""The layout of a run directory: where its config, checkpoints and policies are.

Shared by training (which writes it) and evaluation (which reads it); see
:mod:`agents.runs.training_run` for the whole layout.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from agents.rexrag import RexRagConfig
from agents.rexrag.rexrag import POLICY_DIR
from agents.runs.provenance import checkout_commit

CHECKPOINT_PREFIX = "iteration_"
#: A checkpoint's name: the prefix and its iteration, nothing else (``iteration_000010-
#: backup`` or ``iteration_000010.saving`` are not checkpoints, whatever they hold).
CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
#: Written last into a checkpoint: the signed manifest of its files
#: (:mod:`agents.runs.checkpoint_guard`); a checkpoint without it is ignored.
COMPLETE_MARKER = "COMPLETE"
#: The run's page (``rexrag report``, :mod:`agents.runs.report`).
REPORT_FILE = "report.html"
#: Everything ``rexrag train`` printed, third-party notices included (:mod:`agents.runs.console`).
LOG_FILE = "train.log"
#: One record per training session (new or resumed): when, what command, which code.
PROVENANCE_FILE = "provenance.json"
#: Packages whose versions a session records.
_RECORDED_PACKAGES = ("rexrag", "torch", "ray", "transformers", "vllm")


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


def record_session(run_dir: str | Path, resumed_from: int | None) -> dict[str, Any]:
    """Append this training session to ``RUN/provenance.json`` and return its record: the
    command, start time, the checkout's commit, Python and package versions, and the
    iteration it resumed from (None for a new run); a resumed run keeps every session."""
    versions = {}
    for package in _RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    session = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "resumed_from": resumed_from,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": checkout_commit(),
        "python": platform.python_version(),
        "versions": versions,
    }
    path = Path(run_dir) / PROVENANCE_FILE
    sessions = read_provenance(run_dir)
    path.write_text(json.dumps([*sessions, session], indent=2) + "\n")
    return session


def read_provenance(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's sessions, oldest first (none for a run made before they were recorded)."""
    path = Path(run_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else []
