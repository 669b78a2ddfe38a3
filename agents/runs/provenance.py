"""Where a measured number came from: the command and the checkout's commit."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

#: The checkout this package runs from (a git work tree in development installs).
_ROOT = Path(__file__).resolve().parents[2]


def checkout_commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), if it is one."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=_ROOT, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head.stdout.decode().strip() + ("+dirty" if dirty.stdout.strip() else "")


def stamp(previous: dict | None = None) -> dict:
    """``command``, ``date`` and ``commits`` (every commit that added to a resumed
    experiment, with those of ``previous``) for an experiment's meta record."""
    commits = {*(previous or {}).get("commits", []), checkout_commit()}
    return {
        "command": shlex.join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commits": sorted(commits),
    }
