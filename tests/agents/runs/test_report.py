"""The run report: the page of a real short run, parsed as HTML (structure, content, no
network, untrusted text kept as text), its bounds on a run of hundreds of iterations,
and a resumed run's samples."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil

import pytest

from agents.cli import main
from agents.runs.report import (
    EARLIER_EVERY,
    RECENT_ITERATIONS,
    SEGMENT_CHARS,
    cut_texts,
    embedded_iterations,
    write_report,
)
from agents.runs.run_directory import PROVENANCE_FILE
from agents.runs.samples import GROUP_KINDS, read_samples, sample_iterations, write_samples
from agents.runs.training_run import train
from tests.agents.runs.report_page import (
    HOSTILE,
    foreign_run,
    long_run,
    page_data,
    parse_page,
    short_run,
)

pytestmark = pytest.mark.slow  # report_run: a real training run on a Ray cluster

SECTIONS = ["overview", "curves", "trajectories", "iterations", "credit", "evaluation", "config"]


def config_fields(page):
    """The config table of a page: field -> value as shown."""
    table = page.find("section", id="config").find_all("table")[0]
    rows = [tr.find_all("td") for tr in table.find("tbody").find_all("tr")]
    return {name.text: value.text for name, value in rows}


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, ray_cluster):
    return short_run(tmp_path_factory.getbasetemp() / "report-run")


def test_the_page_of_a_real_run(report_run):
    page = parse_page(report_run / "report.html")
    assert page.find("title").text == f"rexrag run {report_run.name}"
    assert [s.attrs["id"] for s in page.find_all("section")] == SECTIONS
    assert [a.attrs["href"] for a in page.find("nav").find_all("a")] == [f"#{s}" for s in SECTIONS]

    # self-contained: nothing to fetch, and only our own script may run
    for element in page.iter():
        assert element.attrs.get("src", "data:").startswith("data:"), element.tag
        assert element.attrs.get("href", "#").startswith("#"), element.tag
    json_block, code = page.find_all("script")
    assert json_block.attrs == {"type": "application/json", "id": "report-data"}
    policy = page.find("meta", **{"http-equiv": "Content-Security-Policy"}).attrs["content"]
    digest = base64.b64encode(hashlib.sha256(code.text.encode()).digest()).decode()
    assert "default-src 'none'" in policy and f"script-src 'sha256-{digest}'" in policy
    curves = page.find("img", cls="curves").attrs["src"]
    assert base64.b64decode(curves.removeprefix("data:image/png;base64,"))[:4] == b"\x89PNG"

    # the per-iteration table is metrics.csv's
    with (report_run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    table = page.find("section", id="iterations").find("table")
    headings = [th.text for th in table.find_all("th")]
    body = [[td.text for td in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")]
    assert [row[0] for row in body] == ["1", "2"]
    acc = headings.index("acc")
    assert [row[acc] for row in body] == [f"{float(r['accuracy_original']):.2f}" for r in rows]
    credit = [th.text for th in page.find("section", id="credit").find_all("th")]
    assert "original share" in credit and "prefix share" in credit

    # before/after evaluation, question by question
    evaluation = page.find("section", id="evaluation")
    summary, questions = evaluation.find_all("table")
    before = [json.loads(line) for line in (report_run / "eval_before/test.jsonl").open()]
    after = {r["id"]: r for r in map(json.loads, (report_run / "eval_after/test.jsonl").open())}
    shown = {tr.find_all("td")[1].text: tr for tr in questions.find("tbody").find_all("tr")}
    assert len(shown) == len(before) == 4
    for record in before:
        cells = [td.text for td in shown[record["question"]].find_all("td")]
        change = {(0, 0): "wrong", (1, 1): "right", (0, 1): "fixed", (1, 0): "broken"}
        assert cells[0] == change[record["em"] > 0, after[record["id"]]["em"] > 0]
        assert cells[3].endswith(str(record["prediction"]))
        assert cells[4].endswith(str(after[record["id"]]["prediction"]))
    assert summary.find("tbody").find_all("tr")[-1].find_all("td")[0].text == "average"

    # config and provenance
    fields = config_fields(page)
    assert fields["group_size"] == "3" and fields["llm"] == "tiny-synthwiki"
    sessions = json.loads((report_run / PROVENANCE_FILE).read_text())
    assert len(sessions) == 1 and sessions[0]["resumed_from"] is None
    assert "torch" in sessions[0]["versions"]

    # the browser's data: every sampled iteration, as on disk
    data = page_data(page)
    assert [entry["iteration"] for entry in data["samples"]["iterations"]] == [1, 2]
    for entry in data["samples"]["iterations"]:
        on_disk = read_samples(report_run, entry["iteration"])
        assert entry["groups"] == [cut_texts(group) for group in on_disk]
        assert 1 <= len(entry["groups"]) <= 4
        assert {group["kind"] for group in entry["groups"]} <= set(GROUP_KINDS)
    probes = [
        row
        for entry in data["samples"]["iterations"]
        for group in entry["groups"]
        for row in group["trajectories"]
        if row["probe"]
    ]
    assert probes and any(row["kept"] for row in probes)


def test_the_report_command_rewrites_the_page(report_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(report_run), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    assert [s.attrs["id"] for s in parse_page(out).find_all("section")] == SECTIONS
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_untrusted_text_stays_text(report_run, tmp_path):
    """A run directory from elsewhere: its text cannot add elements to the page."""
    run = foreign_run(report_run, tmp_path / "foreign")
    page = parse_page(write_report(run))
    assert len(page.find_all("script")) == 2 and not page.find_all("img")
    raw = page.find("script", id="report-data").text
    assert "<" not in raw and ">" not in raw and "&" not in raw
    data = page_data(page)
    assert data["samples"]["iterations"][0]["groups"][0]["question"] == HOSTILE
    assert data["config"]["llm"] == HOSTILE
    assert config_fields(page)["llm"] == HOSTILE
    rows = page.find("section", id="evaluation").find_all("table")[1].find_all("tr")
    assert rows[1].find_all("td")[1].text == HOSTILE


def test_which_iterations_a_page_embeds():
    assert embedded_iterations([1, 2, 3]) == [1, 2, 3]
    chosen = embedded_iterations(range(1, 301))
    assert chosen == [*range(10, 251, 10), *range(251, 301)]
    assert len(chosen) == 25 + RECENT_ITERATIONS
    assert embedded_iterations(range(1, 61), recent=50, every=EARLIER_EVERY) == [
        10,
        *range(11, 61),
    ]


def test_a_page_of_hundreds_of_iterations_stays_small(report_run, tmp_path):
    run = long_run(report_run, tmp_path / "long", 300)
    page_path = write_report(run)
    size = page_path.stat().st_size
    data = page_data(parse_page(page_path))
    shown = [entry["iteration"] for entry in data["samples"]["iterations"]]
    assert shown == embedded_iterations(range(1, 301))
    assert len(parse_page(page_path).find("section", id="iterations").find_all("tr")) == 301
    assert size < 5_000_000, size

    # long texts: cut in the page, and the oldest embedded iterations go to stay small
    run = long_run(report_run, tmp_path / "verbose", 300, text_chars=3 * SEGMENT_CHARS)
    page_path = write_report(run)
    assert page_path.stat().st_size < 5_000_000
    data = page_data(parse_page(page_path))
    shown = [entry["iteration"] for entry in data["samples"]["iterations"]]
    assert shown == embedded_iterations(range(1, 301))[-len(shown) :] and 300 in shown
    assert len(shown) < 75 and "older ones left out" in data["samples"]["note"]
    segment = data["samples"]["iterations"][-1]["groups"][0]["trajectories"][0]["segments"][0]
    assert len(segment["text"]) == SEGMENT_CHARS and segment["cut"] == 2 * SEGMENT_CHARS
    on_disk = read_samples(run, 300)[0]["trajectories"][0]["segments"][0]["text"]
    assert len(on_disk) == 3 * SEGMENT_CHARS


def test_a_resumed_run_drops_the_samples_past_its_checkpoint(report_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    # a killed session had written iteration 3 and 4 past the last checkpoint (2)
    for stale in (3, 4):
        write_samples(run, stale, read_samples(report_run, 2))
    train(None, run, stop_iters=3, resume=True, sample_groups=2, log=lambda _: None)
    assert sample_iterations(run) == [1, 2, 3]
    assert len(read_samples(run, 3)) <= 2
    sessions = json.loads((run / PROVENANCE_FILE).read_text())
    assert [s["resumed_from"] for s in sessions] == [None, 2]
    data = page_data(parse_page(run / "report.html"))
    assert [entry["iteration"] for entry in data["samples"]["iterations"]] == [1, 2, 3]
