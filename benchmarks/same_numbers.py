"""Did a change keep a run's numbers? Compares two ``rexrag train`` run directories.

A refactoring or a speed-up must leave what a run computes unchanged: every column of
``metrics.csv`` but the timings, and the before/after evaluations' per-question
answers. Run the same command on the old and the new code (same machine), then::

    python -m benchmarks.same_numbers OLD_RUN NEW_RUN

It prints one row per column that differs (or says none does) and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

#: Columns that measure wall time, not what the run computed.
TIMING_MARKERS = ("seconds_", "_per_s")


def is_timing(column: str) -> bool:
    return any(marker in column for marker in TIMING_MARKERS)


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _same_value(a: str, b: str) -> bool:
    """Equal as text, or both NaN (a NaN column is "absent this iteration")."""
    if a == b:
        return True
    try:
        return math.isnan(float(a)) and math.isnan(float(b))
    except ValueError:
        return False


def metric_differences(old: Path, new: Path) -> list[str]:
    """One line per (iteration, column) whose value differs, timings left out."""
    old_rows, new_rows = read_metrics(old), read_metrics(new)
    if len(old_rows) != len(new_rows):
        return [f"metrics.csv: {len(old_rows)} rows vs {len(new_rows)}"]
    differences = []
    for old_row, new_row in zip(old_rows, new_rows, strict=True):
        columns = sorted((set(old_row) | set(new_row)) - {c for c in old_row if is_timing(c)})
        for column in columns:
            a, b = old_row.get(column, "<absent>"), new_row.get(column, "<absent>")
            if not _same_value(a, b):
                differences.append(f"iteration {old_row.get('iteration')}: {column} {a} -> {b}")
    return differences


def _answers(run: Path) -> dict[str, list]:
    """Each evaluation record file's per-question predictions and scores."""
    answers = {}
    for path in sorted(run.glob("eval_*/**/*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = ("id", "prediction", "em", "f1", "num_searches", "trajectory")
        answers[str(path.relative_to(run))] = [{k: r.get(k) for k in kept} for r in rows]
    return answers


def _policy_digests(run: Path) -> dict[str, str | None]:
    """Each evaluation's policy digest (a hash of the evaluated weights)."""
    return {
        str(path.relative_to(run)): json.loads(path.read_text())["agent"].get("policy_digest")
        for path in sorted(run.glob("eval_*/protocol.json"))
    }


def evaluation_differences(old: Path, new: Path) -> list[str]:
    """Per-question answers and trajectories, and the evaluated weights' digests."""
    old_answers, new_answers = _answers(old), _answers(new)
    if old_answers.keys() != new_answers.keys():
        return [f"evaluation files differ: {sorted(old_answers)} vs {sorted(new_answers)}"]
    differences = [
        f"{name}: per-question answers differ"
        for name in old_answers
        if old_answers[name] != new_answers[name]
    ]
    old_digests, new_digests = _policy_digests(old), _policy_digests(new)
    differences += [
        f"{name}: policy digest {digest} -> {new_digests.get(name)}"
        for name, digest in old_digests.items()
        if digest != new_digests.get(name)
    ]
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    differences = metric_differences(args.old, args.new) + evaluation_differences(
        args.old, args.new
    )
    columns = [c for c in read_metrics(args.old)[0] if not is_timing(c)]
    compared = f"{len(read_metrics(args.old))} iterations x {len(columns)} columns"
    print(f"compared {compared} and {len(_answers(args.old))} evaluation files")
    for line in differences:
        print(line)
    print("identical" if not differences else f"{len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
