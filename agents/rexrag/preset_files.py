"""Presets and other packaged YAML files: a name or a path, with ``base:`` chains.

A preset is a YAML file of RexRagConfig fields (``presets/*.yaml``); a file may start
from another preset or file with ``base: NAME``, its own fields overriding the base's.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml


def packaged_yaml(
    source: str | Path, package: str, folder: str, what: str, names: list[str]
) -> Path:
    """``source`` if it is a file, else the packaged ``<package>/<folder>/<source>.yaml``
    (presets, search spaces); a ``FileNotFoundError`` listing ``names`` if neither."""
    path = Path(source)
    if not path.is_file():
        path = Path(str(files(package) / folder / f"{source}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{source!r} is neither a YAML file nor {what} ({', '.join(names)})"
        )
    return path


def read_config_file(source: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's or YAML file's fields, with its ``base`` chain resolved."""
    path = packaged_yaml(source, "agents.rexrag", "presets", "a preset", presets())
    if str(path) in seen:
        raise ValueError(f"config {path}: its base chain loops ({' -> '.join(seen)})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config {path}: expected a mapping of fields, got {type(values).__name__}"
        )
    base = values.pop("base", None)
    if base is None:
        return values
    return {**read_config_file(base, (*seen, str(path))), **values}


def presets() -> list[str]:
    """Names of the shipped presets."""
    directory = Path(str(files("agents.rexrag") / "presets"))
    return sorted(p.stem for p in directory.glob("*.yaml"))
