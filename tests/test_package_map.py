"""The package map stays true: docs/development.md's Layout names every module (and
nothing that is not one), and agents/rexrag/__init__.py's reading map names every
module of the algorithm. A map that drifts is worse than none; these fail first."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("rexrag_env", "agents", "tuning", "benchmarks", "tools")
ALGORITHM = Path("agents/rexrag")


def layout_block(text: str) -> str:
    """The code block under docs/development.md's ``## Layout``."""
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def map_entries(block: str) -> dict[Path, set[str]]:
    """Each directory of the map -> the ``*.py`` names listed under it (a line's first
    word ending in ``/`` opens a directory, nested by indentation)."""
    entries: dict[Path, set[str]] = {}
    stack: list[tuple[int, Path]] = []
    current = Path()
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first = line.split()[0]
        if first.endswith("/") and indent < 10:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            current = (stack[-1][1] if stack else Path()) / first.rstrip("/")
            stack.append((indent, current))
        entries.setdefault(current, set()).update(re.findall(r"\b(\w+\.py)\b", line))
    return entries


def modules(directory: Path) -> set[str]:
    return {p.name for p in (ROOT / directory).glob("*.py") if p.name != "__init__.py"}


def test_the_layout_names_every_module_and_only_modules():
    entries = map_entries(layout_block((ROOT / "docs/development.md").read_text()))
    directories = {
        p.parent.relative_to(ROOT)
        for package in MAPPED
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    } - {ALGORITHM}
    missing = sorted(
        f"{directory}/{name}"
        for directory in directories
        for name in modules(directory) - entries.get(directory, set())
    )
    assert not missing, f"docs/development.md's Layout does not name {missing}"
    not_modules = sorted(
        f"{directory}/{name}"
        for directory, names in entries.items()
        for name in names
        if not (ROOT / directory / name).is_file()
    )
    assert not not_modules, f"the Layout names files that do not exist: {not_modules}"


def test_the_algorithm_reading_map_names_every_module():
    docstring = ast.get_docstring(ast.parse((ROOT / ALGORITHM / "__init__.py").read_text()))
    named = set(re.findall(r"``(\w+\.py)``", docstring))
    assert modules(ALGORITHM) - named == set(), "agents/rexrag/__init__.py's map misses these"
    assert named - modules(ALGORITHM) == set(), "agents/rexrag/__init__.py names non-modules"


def test_a_module_left_out_of_the_layout_is_named():
    block = "```\nagents/\n  runs/   training_run.py\n```"
    assert map_entries(block.strip("`\n")) == {
        Path("agents"): set(),
        Path("agents/runs"): {"training_run.py"},
    }
