"""What this user's rexrag wrote: a per-user secret key and HMAC-signed file manifests.

Run directories and index directories are shared on clusters and downloaded, and some
of what they hold decides what runs or what is read: RLlib and Tune checkpoints are
pickles (unpickling runs code), an index's ``rexrag_index.json`` names the corpus file
that is served. rexrag therefore signs what it writes with a key that never lives
beside the files: a manifest of SHA-256 digests, keyed with HMAC-SHA256. A directory
edited, or written by anyone without the key, fails the check before anything in it
is unpickled or opened.

The key is ``$REXRAG_SECRET_FILE``, else ``$XDG_CONFIG_HOME/rexrag/secret.key``
(``~/.config/rexrag/secret.key``), created with mode 0600 the first time rexrag signs
something. Only the process that writes or checks needs it: the ``rexrag train`` /
``rexrag tune`` driver, ``rexrag search``/``serve``/``eval``, and every node that opens
an index directory itself (share the file through ``REXRAG_SECRET_FILE``, or serve the
index from one node).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_FILE_ENV_VAR = "REXRAG_SECRET_FILE"
#: Bytes of randomness in a new key (HMAC-SHA256 uses up to its 64-byte block).
_KEY_BYTES = 32
#: Read size when digesting files: big enough to hash GB-sized shards at disk speed.
_CHUNK = 1 << 20


class UntrustedFileError(ValueError):
    """A signed file or directory fails its check: edited, or not written by this user."""


def secret_key_path() -> Path:
    """Where this user's key lives (``$REXRAG_SECRET_FILE``, else the XDG config dir)."""
    if os.environ.get(SECRET_FILE_ENV_VAR):
        return Path(os.environ[SECRET_FILE_ENV_VAR]).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "rexrag" / "secret.key"


def secret_key(*, create: bool) -> bytes:
    """The key; with ``create``, a new random one (mode 0600) if there is none yet.

    Checking never creates a key: a node without one cannot have signed anything, and
    a fresh key there would only turn the error into a confusing mismatch.
    """
    path = secret_key_path()
    if not path.exists():
        if not create:
            raise UntrustedFileError(
                f"there is no rexrag secret key at {path} on this machine, so nothing here "
                f"was signed by you; point {SECRET_FILE_ENV_VAR} at your key file"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:  # O_EXCL: two processes signing at once agree on one key
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(handle, "w") as key_file:
                key_file.write(secrets.token_hex(_KEY_BYTES) + "\n")
                key_file.flush()
                os.fsync(key_file.fileno())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UntrustedFileError(
            f"rexrag secret key {path} is accessible to other users (mode "
            f"{stat.filemode(mode)}): anyone who reads it can forge checkpoints; "
            f"`chmod 600 {path}`"
        )
    key = path.read_text().strip()
    if len(key) < 2 * _KEY_BYTES:
        raise UntrustedFileError(f"rexrag secret key {path} is truncated: delete it")
    return key.encode()


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """One byte string per payload (sorted keys, no spaces): what a signature covers."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(payload: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of ``payload`` with this user's key (created if missing), hex."""
    return hmac.new(secret_key(create=True), canonical_json(payload), hashlib.sha256).hexdigest()


def check_signature(payload: Mapping[str, Any], signature: object, what: str) -> None:
    """Raise :class:`UntrustedFileError` unless ``signature`` is this user's for ``payload``."""
    expected = hmac.new(secret_key(create=False), canonical_json(payload), hashlib.sha256)
    if not isinstance(signature, str) or not hmac.compare_digest(expected.hexdigest(), signature):
        raise UntrustedFileError(
            f"{what} is not signed with your rexrag key ({secret_key_path()}): it was "
            "edited, or written by someone else or on a machine with another key"
        )


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``directory`` but ``skip``
    (top-level names). A symlink is refused: it could point a checked name anywhere."""
    digests = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative.split("/")[0] in skip:
            continue
        if path.is_symlink():
            raise UntrustedFileError(f"{path} is a symbolic link; rexrag never writes those")
        if path.is_file():
            digests[relative] = file_digest(path)
    return digests


def tree_digest(directory: Path) -> str:
    """One SHA-256 for a whole directory (its files' names and contents)."""
    return hashlib.sha256(canonical_json(file_digests(directory))).hexdigest()


def write_manifest(directory: Path, name: str) -> None:
    """Sign ``directory``: write ``name`` (the digests of every other file under it and
    their HMAC) and fsync it, so that the manifest is on disk only after what it covers.

    The files are fsynced first: a manifest must never vouch for data still in the page
    cache that a power loss would truncate.
    """
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fsync_file(path)
    files = file_digests(directory, skip=(name,))
    manifest = {"format": 1, "files": files, "signature": sign({"files": files})}
    target = directory / name
    temporary = directory / f".{name}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1))
    fsync_file(temporary)
    os.replace(temporary, target)
    fsync_directory(directory)


def check_manifest(directory: Path, name: str) -> None:
    """Raise :class:`UntrustedFileError`, saying why, unless ``directory`` holds exactly
    the files its manifest ``name`` lists, with their digests, signed with this user's key."""
    what = f"{directory} ({name})"
    try:
        manifest = json.loads((directory / name).read_text())
        files, signature = manifest["files"], manifest["signature"]
    except FileNotFoundError:
        raise UntrustedFileError(f"{directory} has no signed manifest ({name})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UntrustedFileError(f"{what} is not a rexrag manifest ({error})") from None
    check_signature({"files": files}, signature, what)
    found = file_digests(directory, skip=(name,))
    added = sorted(set(found) - set(files))
    missing = sorted(set(files) - set(found))
    changed = sorted(p for p in set(files) & set(found) if files[p] != found[p])
    for label, paths in (("added", added), ("missing", missing), ("changed", changed)):
        if paths:
            raise UntrustedFileError(
                f"{directory} differs from what rexrag signed: {label} {paths[:5]}"
            )


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
