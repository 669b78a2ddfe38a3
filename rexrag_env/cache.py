"""Where derived artefacts (passage stores of corpora, indexes, built models) are cached.

Many processes may ask for the same artefact at once (Ray EnvRunners, pytest-xdist,
a Tune sweep), so every build runs under a file lock, writes into a temporary
directory and is renamed into place only when complete: a reader never sees half an
index, and an interrupted build leaves nothing behind that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

CACHE_ENV_VAR = "REXRAG_CACHE_DIR"
#: In the name of every index the package caches: indexes are signed with the user's key
#: since "v2" (docs/security.md), and one cached by an older rexrag (unsigned, so refused
#: on load) is rebuilt under the new name rather than refused.
INDEX_CACHE_VERSION = "v2"


def cache_dir() -> Path:
    """The cache root: ``$REXRAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rexrag`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV_VAR):
        root = Path(os.environ[CACHE_ENV_VAR])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rexrag"
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_fingerprint(path: Path) -> str:
    """A short key that changes when the file at ``path`` is replaced or edited.

    Size, mtime and the first and last 64 KiB: cheap on a 13 GB wiki-18 file, and
    enough to notice a different corpus behind the same name.
    """
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 16))
        if stat.st_size > 1 << 16:
            handle.seek(max(stat.st_size - (1 << 16), 1 << 16))
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Make ``target`` (a directory) with ``build(tmp_dir)`` unless it already exists.

    Safe under concurrency: one process builds while the others wait on the lock and
    then reuse the result.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
