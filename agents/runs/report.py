"""``rexrag report RUN``: one self-contained HTML page of a run, ``RUN/report.html``.

What a person studying dead ends wants on one page: the run's config and provenance,
the learning curves, the per-iteration table, where the credit went per component, the
before/after evaluation question by question, and a trajectory browser over the
iterations' samples (:mod:`agents.runs.samples`): pick an iteration and a group, and
see each original beside its probes, segments coloured by kind, the branch point marked,
kept/dropped, rewards and advantages shown, long passages folded.

Self-contained: the stylesheet, the script and the curves (a PNG as a data URL) are in
the file, which loads nothing from anywhere (its Content-Security-Policy forbids it),
so it opens offline and can be mailed. A run directory may come from someone else, so
everything in it is data: tables are escaped here, and the samples travel as JSON in a
``<script type="application/json">`` block (``<``, ``>`` and ``&`` escaped) that the
browser script renders as text nodes only.

Bounded for runs of hundreds of iterations: the samples of the last
:data:`RECENT_ITERATIONS` iterations and of every :data:`EARLIER_EVERY`-th before them
are embedded, texts cut at :data:`SEGMENT_CHARS` characters (the files in ``samples/``
keep them whole), and the oldest of those iterations are left out when the samples
would pass :data:`SAMPLES_BUDGET_BYTES`; the page says what it left out.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from agents.runs.curves import plot_run, read_metrics_csv
from agents.runs.run_directory import PROVENANCE_FILE, REPORT_FILE, read_provenance
from agents.runs.samples import read_samples, sample_iterations

#: Every iteration among the last this many has its samples embedded ...
RECENT_ITERATIONS = 50
#: ... and before them, every this-many-th iteration.
EARLIER_EVERY = 10
#: A segment's text is cut here in the page (the samples files keep it whole).
SEGMENT_CHARS = 2000
#: The embedded samples stay under this many bytes: the page stays a few MB.
SAMPLES_BUDGET_BYTES = 4_000_000
#: Per-question evaluation rows shown (changed answers first).
EVAL_ROWS = 1000

#: (metric, heading, format) of the per-iteration table.
ITERATION_COLUMNS = (
    ("accuracy_original", "acc", ".2f"),
    ("accuracy_probe", "probe acc", ".2f"),
    ("accuracy_probe_kept", "kept acc", ".2f"),
    ("probes_spawned", "spawned", ".0f"),
    ("probes_kept", "kept", ".0f"),
    ("dead_end_fraction_before_probing", "dead end", ".2f"),
    ("dead_end_fraction_after_probing", "after probing", ".2f"),
    ("rescued_groups", "rescued", ".0f"),
    ("keep_ratio", "keep ratio", ".3f"),
    ("alpha", "\u03b1", ".3f"),
    ("importance_weight_mean", "w mean", ".3f"),
    ("clip_fraction", "clip", ".3f"),
    ("kl", "KL", ".4f"),
    ("entropy", "entropy", ".3f"),
    ("searches_per_trajectory", "searches", ".2f"),
    ("invalid_action_rate", "invalid", ".3f"),
    ("response_length", "length", ".0f"),
    ("logprob_mismatch", "mismatch", ".1e"),
)
#: Of those, what the overview shows of the last iteration.
OVERVIEW_METRICS = (
    "accuracy_original",
    "dead_end_fraction_before_probing",
    "dead_end_fraction_after_probing",
    "rescued_groups",
)
#: (statistic, heading, format) per credit component (``credit_<component>_<statistic>``).
CREDIT_COLUMNS = (
    ("share", "share", ".3f"),
    ("tokens", "tokens", ".0f"),
    ("weight_mean", "w mean", ".3f"),
    ("clip_fraction_update", "clip", ".3f"),
    ("kl", "KL", ".4f"),
)
CREDIT_COMPONENTS = ("original", "prefix", "prompt", "continuation")
_WALL_PHASES = ("rollout", "scoring", "learning")


def embedded_iterations(
    available: Sequence[int], recent: int = RECENT_ITERATIONS, every: int = EARLIER_EVERY
) -> list[int]:
    """Which iterations' samples a report embeds: the last ``recent`` of ``available``
    and, before them, those divisible by ``every``."""
    ordered = sorted(available)
    if len(ordered) <= recent:
        return ordered
    cut = ordered[-recent]
    return [i for i in ordered if i >= cut or i % every == 0]


def cut_texts(group: Mapping[str, Any], limit: int = SEGMENT_CHARS) -> dict[str, Any]:
    """A copy of a sampled group with every segment (and the prompt) cut to ``limit``
    characters; a cut segment says how many it lost (``cut``)."""
    group = dict(group)
    group["prompt"] = group.get("prompt", "")[:limit]
    rows = []
    for row in group.get("trajectories", []):
        segments = []
        for segment in row.get("segments", []):
            text = segment.get("text", "")
            if len(text) > limit:
                segment = {**segment, "text": text[:limit], "cut": len(text) - limit}
            segments.append(segment)
        rows.append({**row, "segments": segments})
    group["trajectories"] = rows
    return group


def embedded_samples(run_dir: Path, budget: int = SAMPLES_BUDGET_BYTES) -> dict[str, Any]:
    """``{"iterations": [{"iteration", "groups"}], "note"}``: the samples the page embeds,
    newest kept first until ``budget`` bytes of JSON, then back in iteration order."""
    available = sample_iterations(run_dir)
    chosen = embedded_iterations(available)
    kept: list[dict[str, Any]] = []
    size = 0
    for iteration in reversed(chosen):
        groups = [cut_texts(group) for group in read_samples(run_dir, iteration)]
        entry = {"iteration": iteration, "groups": groups}
        entry_size = len(script_json(entry).encode())  # as the page holds it
        if kept and size + entry_size > budget:
            break
        kept.append(entry)
        size += entry_size
    kept.reverse()
    note = f"samples of {len(kept)} of the run's {len(available)} sampled iterations"
    if len(chosen) < len(available):
        note += (
            f" (the last {RECENT_ITERATIONS} and every {EARLIER_EVERY}th before them"
            + (
                f"; {len(chosen) - len(kept)} older ones left out to stay under "
                f"{budget / 1e6:.0f} MB"
                if len(kept) < len(chosen)
                else ""
            )
            + ")"
        )
    note += f"; texts over {SEGMENT_CHARS} characters are cut here, whole in samples/"
    return {"iterations": kept, "note": note}


def report_data(run_dir: str | Path) -> dict[str, Any]:
    """Everything the page shows, JSON-ready (NaN and infinities as None)."""
    run_dir = Path(run_dir)
    metrics = (
        read_metrics_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else {}
    )
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    return _finite(
        {
            "run": {"name": run_dir.resolve().name, "path": str(run_dir.resolve())},
            "generated": time.strftime("%Y-%m-%d %H:%M"),
            "config": config or {},
            "provenance": read_provenance(run_dir),
            "metrics": metrics,
            "evaluation": evaluation_changes(run_dir),
            "samples": embedded_samples(run_dir),
        }
    )


def evaluation_changes(run_dir: Path) -> dict[str, Any]:
    """The before/after evaluation: per dataset the summary, and per question the
    answers before and after and what changed (``fixed``, ``broken``, ``right``,
    ``wrong``: same correctness both times), changed ones first."""
    before_dir, after_dir = run_dir / "eval_before", run_dir / "eval_after"
    summaries = {name: _summary(run_dir / name) for name in ("eval_before", "eval_after")}
    questions = []
    for before_file in sorted(before_dir.glob("*.jsonl")) if before_dir.is_dir() else []:
        after = {r["id"]: r for r in _jsonl(after_dir / before_file.name)}
        for record in _jsonl(before_file):
            later = after.get(record["id"])
            questions.append(
                {
                    "dataset": before_file.stem,
                    "id": record["id"],
                    "question": record.get("question", ""),
                    "gold": list(record.get("golden_answers", [])),
                    "before": record.get("prediction"),
                    "before_em": record.get("em"),
                    "after": None if later is None else later.get("prediction"),
                    "after_em": None if later is None else later.get("em"),
                    "change": _change(record.get("em"), None if later is None else later.get("em")),
                }
            )
    order = {"fixed": 0, "broken": 1, "wrong": 2, "right": 3, "": 4}
    questions.sort(key=lambda q: order[q["change"]])
    return {
        "before": summaries["eval_before"],
        "after": summaries["eval_after"],
        "questions": questions[:EVAL_ROWS],
        "total": len(questions),
        "changes": {name: sum(q["change"] == name for q in questions) for name in order if name},
    }


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    if before == after:
        return "right" if before > 0 else "wrong"
    return "fixed" if after > before else "broken"


def _summary(directory: Path) -> dict[str, Any]:
    path = directory / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's page (default ``RUN/report.html``, under a temporary name first)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    out = Path(out) if out is not None else run_dir / REPORT_FILE
    page = render_report(report_data(run_dir), _curves_png(run_dir))
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    return out


def _curves_png(run_dir: Path) -> bytes | None:
    """The run's ``curves.png``, drawn afresh when ``metrics.csv`` is newer (the run
    redraws it at checkpoints only)."""
    metrics, curves = run_dir / "metrics.csv", run_dir / "curves.png"
    if not metrics.is_file():
        return curves.read_bytes() if curves.is_file() else None
    if curves.is_file() and curves.stat().st_mtime >= metrics.stat().st_mtime:
        return curves.read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        return plot_run(metrics, Path(scratch) / "curves.png", run_dir.name).read_bytes()


# ---------------------------------------------------------------------------------------
# the page


def _asset(name: str) -> str:
    return (files("agents.runs") / "report_assets" / name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """JSON that is inert inside ``<script type="application/json">``: no ``<``, ``>`` or
    ``&`` can close the block or open another tag."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_report(data: Mapping[str, Any], curves_png: bytes | None = None) -> str:
    """The page: static, escaped sections, and the browser's data as inert JSON."""
    script = _asset("report.js")
    script_hash = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'"
    )
    run = data["run"]
    sections = [
        ("overview", "Overview", _overview(data)),
        ("curves", "Learning curves", _curves(curves_png)),
        ("trajectories", "Trajectories", _browser(data["samples"])),
        ("iterations", "Iterations", _iteration_table(data["metrics"])),
        ("credit", "Credit by component", _credit_table(data["metrics"])),
        ("evaluation", "Evaluation before and after", _evaluation(data["evaluation"])),
        ("config", "Config and provenance", _config(data["config"], data["provenance"])),
    ]
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>'
        for key, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rexrag run {_e(run['name'])}</title>"
        f"<style>{_asset('report.css')}</style></head><body>"
        f'<header class="page"><h1>rexrag run {_e(run["name"])}</h1>'
        f"<p>{_e(run['path'])} \u00b7 report written {_e(data['generated'])}</p></header>"
        f'<nav class="sections">{nav}</nav><main>{body}</main>'
        f'<script type="application/json" id="report-data">{script_json(data)}</script>'
        f"<script>{script}</script></body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _format(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _last(metrics: Mapping[str, list], name: str) -> float | None:
    values = metrics.get(name) or [None]
    return values[-1]


def _overview(data: Mapping[str, Any]) -> str:
    metrics, evaluation = data["metrics"], data["evaluation"]
    iterations = metrics.get("iteration", [])
    cards = [("iterations", f"{len(iterations)}")]
    for name, label, fmt in (c for c in ITERATION_COLUMNS if c[0] in OVERVIEW_METRICS):
        value = _last(metrics, name)
        if value is not None:
            cards.append((f"{label} (last iteration)", format(value, fmt)))
    before = evaluation["before"].get("average", {}).get("em")
    after = evaluation["after"].get("average", {}).get("em")
    if before is not None:
        shown = f"{before:.1f}" + ("" if after is None else f" \u2192 {after:.1f}")
        cards.append(("test EM before \u2192 after", shown))
    groups = sum(len(entry["groups"]) for entry in data["samples"]["iterations"])
    cards.append(("sampled groups in this page", str(groups)))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{_e(value)}</div>'
            f'<div class="label">{_e(label)}</div></div>'
            for label, value in cards
        )
        + "</div>"
    )


def _curves(png: bytes | None) -> str:
    if png is None:
        return '<p class="note">no metrics yet</p>'
    encoded = base64.b64encode(png).decode()
    return f'<img class="curves" alt="learning curves" src="data:image/png;base64,{encoded}">'


def _table(
    headings: Iterable[str], rows: Iterable[Iterable[str]], classes: Iterable[str] | None = None
) -> str:
    """A scrolling table of already escaped cells (``classes``: one per row)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    body = "".join(
        f'<tr class="{_e(cls)}">' + "".join(row) + "</tr>"
        for row, cls in zip(rows, classes or itertools.repeat(""), strict=False)
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _iteration_table(metrics: Mapping[str, list]) -> str:
    if not metrics.get("iteration"):
        return '<p class="note">no iterations yet</p>'
    columns = [c for c in ITERATION_COLUMNS if c[0] in metrics]
    rows = []
    for i, iteration in enumerate(metrics["iteration"]):
        wall = sum(metrics.get(f"seconds_{p}", [0.0] * (i + 1))[i] or 0.0 for p in _WALL_PHASES)
        cells = [f"<td>{int(iteration)}</td>"]
        cells += [f"<td>{_e(_format(metrics[name][i], fmt))}</td>" for name, _, fmt in columns]
        cells.append(f"<td>{wall:.1f}</td>")
        rows.append(cells)
    headings = ["iteration", *(label for _, label, _ in columns), "seconds"]
    return _table(headings, rows) + (
        '<p class="note">every column of every iteration is in metrics.csv '
        "(docs/training.md lists them)</p>"
    )


def _credit_table(metrics: Mapping[str, list]) -> str:
    present = [
        (component, stat, label, fmt)
        for component in CREDIT_COMPONENTS
        for stat, label, fmt in CREDIT_COLUMNS
        if f"credit_{component}_{stat}" in metrics
    ]
    if not present or not metrics.get("iteration"):
        return '<p class="note">no credit metrics in this run</p>'
    rows = []
    for i, iteration in enumerate(metrics["iteration"]):
        cells = [f"<td>{int(iteration)}</td>"]
        for component, stat, _, fmt in present:
            value = metrics[f"credit_{component}_{stat}"][i]
            cells.append(f"<td>{_e(_format(value, fmt))}</td>")
        rows.append(cells)
    headings = ["iteration", *(f"{component} {label}" for component, _, label, _ in present)]
    return _table(headings, rows) + (
        '<p class="note">per credit component of the trained tokens (docs/credit.md): its '
        "share of \u03a3|A\u00b7w| at \u03b8_old, tokens, mean importance weight, clip fraction "
        "in the update and KL; empty where a component had no token that iteration</p>"
    )


def _evaluation(evaluation: Mapping[str, Any]) -> str:
    before, after = evaluation["before"], evaluation["after"]
    if not before and not after:
        return '<p class="note">no evaluation in this run (set eval_dataset)</p>'
    datasets = [name for name in {**before, **after} if name != "average"]
    rows = []
    for name in [*datasets, "average"]:
        b, a = before.get(name, {}), after.get(name, {})
        delta = "" if "em" not in a or "em" not in b else f"{a['em'] - b['em']:+.1f}"
        rows.append(
            [
                f'<td class="text">{_e(name)}</td>',
                f"<td>{_e(_format(b.get('n', a.get('n')), '.0f'))}</td>",
                f"<td>{_e(_format(b.get('em'), '.1f'))}</td>",
                f"<td>{_e(_format(a.get('em'), '.1f'))}</td>",
                f"<td>{_e(delta)}</td>",
            ]
        )
    parts = [_table(["dataset", "questions", "EM before", "EM after", "\u0394"], rows)]
    changes = evaluation["changes"]
    parts.append(
        f'<p class="note">{changes.get("fixed", 0)} fixed, {changes.get("broken", 0)} broken, '
        f"{changes.get('right', 0)} right and {changes.get('wrong', 0)} wrong both times "
        f"(greedy exact match); {len(evaluation['questions'])} of {evaluation['total']} "
        "questions below, changes first</p>"
    )
    question_rows, classes = [], []
    for q in evaluation["questions"]:
        question_rows.append(
            [
                f'<td class="text">{_e(q["change"])}</td>',
                f'<td class="text">{_e(q["question"])}</td>',
                f'<td class="text">{_e(" | ".join(q["gold"]))}</td>',
                f'<td class="text">{_e(_answer(q["before"], q["before_em"]))}</td>',
                f'<td class="text">{_e(_answer(q["after"], q["after_em"]))}</td>',
            ]
        )
        classes.append(q["change"])
    headings = ["change", "question", "gold", "before", "after"]
    parts.append(_table(headings, question_rows, classes))
    return "".join(parts)


def _answer(prediction: str | None, em: float | None) -> str:
    if em is None:
        return ""
    mark = "\u2713" if em > 0 else "\u2717"
    return f"{mark} {prediction if prediction is not None else '(no answer)'}"


def _browser(samples: Mapping[str, Any]) -> str:
    legend = "".join(
        f'<span class="{kind}">{_e(label)}</span>'
        for kind, label in (
            ("model", "model"),
            ("information", "information"),
            ("invalid", "invalid-action notice"),
            ("probe_prompt", "probe prompt"),
        )
    )
    return (
        '<div class="browser-controls"><label for="iteration-select">iteration</label>'
        '<select id="iteration-select"></select>'
        f'<div class="legend">{legend}</div></div>'
        f'<p class="note">{_e(samples["note"])}. Each original is on the left, its probes on '
        "the right: a probe copies its parent up to the cut before &lt;answer&gt; (folded), "
        "then its own text starts at the branch point. \u03a3A\u00b7w: the advantage times "
        "the importance weight summed over a segment's trained tokens (its push on "
        "\u2207log\u03c0 at \u03b8_old).</p>"
        '<div id="group-list" role="toolbar"></div><div id="group-view">'
        "<noscript>The trajectory browser needs JavaScript; the samples are also in "
        "samples/*.jsonl.</noscript></div>"
    )


def _config(config: Mapping[str, Any], provenance: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [f'<td class="text">{_e(key)}</td>', f'<td class="text">{_e(_plain(value))}</td>']
        for key, value in config.items()
    ]
    parts = [
        f"<details open><summary>config.yaml</summary>{_table(['field', 'value'], rows)}</details>"
    ]
    if provenance:
        keys = ["started", "resumed_from", "command", "commit", "versions", "python"]
        session_rows = [
            [f'<td class="text">{_e(_plain(session.get(key)))}</td>' for key in keys]
            for session in provenance
        ]
        parts.append(
            f"<details open><summary>sessions ({PROVENANCE_FILE})</summary>"
            f"{_table(keys, session_rows)}</details>"
        )
    return "".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {item}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)
