"""The check's rows, its markdown table and its JSON, and what it ran on."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Row:
    """One line of the table: ``result`` is PASS, FAIL or SKIP; ``values`` go to the JSON."""

    part: str
    model: str
    what: str
    measured: str
    expected: str
    result: str
    values: dict[str, Any] = field(default_factory=dict)


def verdict(passed: bool) -> str:
    """A row's result for a check that ran."""
    return "PASS" if passed else "FAIL"


def environment(device: torch.device) -> dict[str, str]:
    """What the check ran on: the device's name and the versions that matter."""
    import transformers

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def render(rows: list[Row], env: dict[str, str], seconds: float) -> str:
    """The markdown table (each model's rows in part order; cells hold no ``|``), headed
    by what it ran on."""
    header = (
        f"gpu_check on {env['device']}: torch {env['torch']} (CUDA {env['cuda']}), "
        f"transformers {env['transformers']}, Python {env['python']}; {seconds:.0f} s"
    )
    lines = [
        header,
        "",
        "| part | model | what | measured | expected | result |",
        "|---|---|---|---|---|---|",
    ]
    models = list(dict.fromkeys(r.model for r in rows))
    lines += [
        f"| {r.part} | {r.model} | {r.what} | {r.measured} | {r.expected} | {r.result} |"
        for r in sorted(rows, key=lambda r: (models.index(r.model), r.part))
    ]
    failed = sum(r.result == "FAIL" for r in rows)
    lines += ["", f"{len(rows)} rows, {failed} failed"]
    return "\n".join(lines)


def write_json(path: Path | None, rows: list[Row], env: dict, args: dict, seconds: float) -> None:
    """The rows so far, what they ran on and with which settings, at ``path`` (if any)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": env,
        "arguments": args,
        "seconds": seconds,
        "passed": not any(r.result == "FAIL" for r in rows),
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
