"""Read a report page as a browser's parser would, and make the short real run the report
tests look at (once per test session, shared by test_report.py and test_report_browser.py)."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from agents.rexrag import RexRagConfig
from agents.runs.samples import read_samples, write_samples
from agents.runs.training_run import train

#: Text that would run a script or fetch an image if a page took it as markup.
HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)> & "q" \u2028 end'

#: Elements that never hold children.
_VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base"}


@dataclass
class Element:
    """A parsed HTML element: tag, attributes, children and its own text pieces."""

    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants (self included) with ``tag`` and every ``attrs`` (``cls`` for a
        class among the element's classes)."""
        wanted_class = attrs.pop("cls", None)
        return [
            element
            for element in self.iter()
            if (tag is None or element.tag == tag)
            and all(element.attrs.get(name) == value for name, value in attrs.items())
            and (wanted_class is None or wanted_class in element.attrs.get("class", "").split())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        (found,) = self.find_all(tag, **attrs)
        return found

    @property
    def text(self) -> str:
        return "".join(self.texts) + "".join(child.text for child in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("document", {})
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        self.open[-1].texts.append(data)


def parse_page(path: Path) -> Element:
    """The page's element tree."""
    builder = _TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    return builder.root


def page_data(page: Element) -> dict:
    """The JSON the page's script renders from."""
    return json.loads(page.find("script", id="report-data").text)


def short_run(directory: Path) -> Path:
    """A real run of the embedded default (tiny-synthwiki: dead ends), cut to 2 iterations
    of 8 questions x 3 rollouts, and a 4-question
    evaluation before and after; made once in ``directory`` (needs Ray)."""
    run = directory / "run"
    if (run / "report.html").is_file():
        return run
    config = RexRagConfig.from_yaml(
        "tiny-synthwiki",
        {
            "questions_per_iteration": 8,
            "group_size": 3,
            "eval_limit": 4,
            "minibatch_size": 24,
            "seed": 0,
        },
    )
    lines: list[str] = []
    train(config, run, stop_iters=2, checkpoint_every=1, sample_groups=4, log=lines.append)
    return run


def foreign_run(report_run: Path, run: Path) -> Path:
    """A run directory from someone else: the real run's first group and an evaluation
    record with :data:`HOSTILE` as question, answer, model text and config value."""
    run.mkdir()
    (run / "config.yaml").write_text(json.dumps({"llm": HOSTILE, "group_size": 3}))
    group = read_samples(report_run, 1)[0]
    group["question"] = HOSTILE
    row = group["trajectories"][0]
    row["answer"] = HOSTILE
    row["segments"][0]["text"] = HOSTILE
    write_samples(run, 1, [group])
    (run / "eval_before").mkdir()
    record = {"id": "q", "question": HOSTILE, "golden_answers": [HOSTILE], "prediction": HOSTILE}
    (run / "eval_before" / "test.jsonl").write_text(json.dumps({**record, "em": 0.0}) + "\n")
    summary = {"test": {"em": 0.0, "n": 1}, "average": {"em": 0.0, "n": 1}}
    (run / "eval_before" / "summary.json").write_text(json.dumps(summary))
    return run


def long_run(report_run, run, iterations, text_chars=None):
    """A run directory of ``iterations`` iterations made from the real run's files: its
    metrics rows and sampled groups repeated (texts stretched to ``text_chars``)."""
    run.mkdir()
    shutil.copy(report_run / "config.yaml", run)
    with (report_run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for iteration in range(1, iterations + 1):
            writer.writerow({**rows[iteration % 2], "iteration": iteration})
    groups = [{k: v for k, v in g.items() if k != "iteration"} for g in read_samples(report_run, 2)]
    if text_chars:
        for group in groups:
            for row in group["trajectories"]:
                for segment in row["segments"]:
                    segment["text"] = (segment["text"] * text_chars)[:text_chars]
    for iteration in range(1, iterations + 1):
        write_samples(run, iteration, groups)
    return run
