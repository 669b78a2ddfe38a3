"""Every "spec §N" in the repository names a heading of docs/spec.md.

The code cites the method's specification by section number; a citation that names no
heading sends the reader nowhere. This scans every .py and .md file of the checkout
(not virtual environments, git metadata, run outputs or build directories) and reads
a list such as "spec §3.3, §4.3 and §4.4" as three citations.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"

#: Directories never scanned: environments, metadata, caches, run outputs, builds.
SKIPPED_DIRS = {".git", ".venv", "out", "build", "dist", "__pycache__", "node_modules"}
SKIPPED_DIR_PATTERN = re.compile(r"^(venv.*|\..*_cache|.*\.egg-info)$")

#: A cited section number: "3", "3.2". (A bare letter is a placeholder, as in "§N".)
SECTION = r"\d+(?:\.\d+)*"
#: "spec §3.2", and the sections listed after it: "spec §3.3, §4.3 and §4.4".
CITATION = re.compile(rf"spec §({SECTION}(?:\s*(?:,|and|or|/)\s*§{SECTION})*)")
#: "## 3. Mixed sampling", "### 3.2 What the official code does", "## A. One training step".
HEADING = re.compile(rf"^#{{1,6}}\s+({SECTION}|[A-Z])\.?\s")


def heading_numbers(text: str) -> list[str]:
    """The section numbers of a Markdown document's headings, in order (code fences skipped)."""
    numbers, in_fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (match := HEADING.match(line)):
            numbers.append(match.group(1))
    return numbers


def scanned_files(root: Path) -> list[Path]:
    """Every .py and .md file under ``root``, outside :data:`SKIPPED_DIRS`."""
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [
            d for d in subdirs if d not in SKIPPED_DIRS and not SKIPPED_DIR_PATTERN.match(d)
        ]
        found += [Path(directory, n) for n in names if n.endswith((".py", ".md"))]
    return sorted(found)


def citations(path: Path) -> list[tuple[int, str]]:
    """(line number, section) of every spec citation in ``path``."""
    found = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        for match in CITATION.finditer(line):
            found += [(number, s) for s in re.findall(SECTION, match.group(1))]
    return found


def missing_citations(files: list[Path], sections: set[str], root: Path) -> list[str]:
    """``file:line: spec §N`` for every citation whose section is not in ``sections``."""
    return [
        f"{path.relative_to(root)}:{line}: spec §{section}"
        for path in files
        for line, section in citations(path)
        if section not in sections
    ]


def test_every_spec_citation_names_a_heading_of_docs_spec():
    sections = set(heading_numbers(SPEC.read_text(encoding="utf-8")))
    files = scanned_files(ROOT)
    assert any(citations(path) for path in files), "no spec citation found: is the scan broken?"
    missing = missing_citations(files, sections, ROOT)
    assert not missing, (
        "these citations name no heading of docs/spec.md (cite an existing section, or "
        "add the section there):\n" + "\n".join(missing)
    )


def test_docs_spec_numbers_each_heading_once():
    numbers = heading_numbers(SPEC.read_text(encoding="utf-8"))
    repeated = sorted(n for n, count in Counter(numbers).items() if count > 1)
    assert not repeated, f"docs/spec.md numbers these headings more than once: {repeated}"
    assert {"0", "1.3", "3.2", "4.3", "7", "A"} <= set(numbers)


def test_a_citation_of_a_missing_section_is_reported(tmp_path):
    missing = "§9.9"  # kept out of literal citations, which the first test would flag
    cited = tmp_path / "module.py"
    cited.write_text(f'"""Filter (spec §3.3, §4.3 and {missing}); turns (spec §1.2)."""\n')
    sections = set(heading_numbers("## 1. Rollout\n### 1.2 Turns\n### 3.3 Filter\n## 4.3 Mix"))
    assert missing_citations([cited], sections, tmp_path) == [f"module.py:1: spec {missing}"]
