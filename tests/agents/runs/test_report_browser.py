"""The run report in a real browser: headless Chromium loads the page of a real short run,
a person's clicks pick an iteration and a group, and a screenshot is saved.

Needs Debian's ``chromium`` and the ``playwright`` Python package (its driver only: no
browser download); skipped without them. Run::

    apt-get install chromium && pip install playwright
    pytest -m browser tests/agents/runs/test_report_browser.py

``REXRAG_CHROMIUM`` names another Chromium executable; the screenshot goes to
``$REXRAG_SCREENSHOT_DIR`` (default: the test's temporary directory) as
``trajectory-browser.png``. ``REXRAG_REPORT_RUN`` points the click-through test at a run
of your own instead of the short run it makes (the README's picture is of a ``rexrag
train`` run of the embedded default, taken so).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from agents.runs.report import embedded_iterations, write_report
from agents.runs.samples import read_samples, sample_iterations
from tests.agents.runs.report_page import HOSTILE, foreign_run, long_run, short_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium; a training run on Ray

CHROMIUM = os.environ.get("REXRAG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests drive Chromium with playwright"
)
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

#: A page must be usable this soon after it is opened (seconds; measured 0.4-1.0 s here).
LOAD_SECONDS = 5.0
#: The screenshot shows at most this much of the browser's height (pixels).
SCREENSHOT_HEIGHT = 1300


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, ray_cluster):
    return short_run(tmp_path_factory.getbasetemp() / "report-run")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # as root (CI, containers) Chromium refuses its sandbox
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """``open_page(path) -> (page, seconds to the first group shown, problems)``, where
    problems collects script errors and dialogs (an injected ``alert`` would be one)."""
    pages = []

    def open_(path: Path):
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.set_default_timeout(10_000)
        pages.append(page)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"error: {error}"))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on(
            "dialog",
            lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()),
        )
        start = time.perf_counter()
        page.goto(path.resolve().as_uri())
        page.wait_for_selector("#group-view .group")
        return page, time.perf_counter() - start, problems

    yield open_
    for page in pages:
        page.close()


def group_to_show(run: Path, iterations: list[int]) -> tuple[int, int]:
    """(iteration, group index) a person studying dead ends would open: the latest
    rescued group, else the latest group with a probe."""
    for wanted in ({"rescued"}, {"rescued", "kept_probe", "probes_dropped"}):
        for iteration in reversed(iterations):
            kinds = [group["kind"] for group in read_samples(run, iteration)]
            found = [i for i, kind in enumerate(kinds) if kind in wanted]
            if found:
                return iteration, found[0]
    raise AssertionError(f"no group of {run} has a probe")


def test_click_through_an_iteration_and_a_group(report_run, open_page, tmp_path):
    run = Path(os.environ.get("REXRAG_REPORT_RUN") or report_run)
    page, seconds, problems = open_page(run / "report.html")
    assert seconds < LOAD_SECONDS
    iterations = embedded_iterations(sample_iterations(run))
    options = page.locator("#iteration-select option").all_text_contents()
    assert [o.split(" (")[0] for o in options] == [f"iteration {i}" for i in iterations]
    assert page.locator("#iteration-select").input_value() == str(len(iterations) - 1)

    # a person picks an iteration, then a group with a probe in it
    iteration, index = group_to_show(run, iterations)
    page.select_option("#iteration-select", label=options[iterations.index(iteration)])
    groups = read_samples(run, iteration)
    assert page.locator(".group-button").count() == len(groups)
    group = groups[index]
    button = page.locator(f".group-button[data-group='{index}']")
    button.click()
    assert button.get_attribute("aria-pressed") == "true"
    assert page.evaluate("location.hash") == f"#iteration={iteration}&group={index}"
    view = page.locator("#group-view")
    assert view.locator(".question").text_content() == group["question"]

    # each probe beside its parent, its branch point marked, kept or dropped as filtered
    probes = [row for row in group["trajectories"] if row["probe"]]
    assert view.locator(".trajectory.probe").count() == len(probes)
    for probe in probes:
        selector = f".trajectory.probe[data-id='{probe['id']}']"
        card = view.locator(selector)
        pair = view.locator(".pair").filter(has=page.locator(selector))
        assert pair.locator(".trajectory.original").get_attribute("data-id") == probe["parent"]
        assert card.locator(".branch-marker").count() == 1
        status = "kept by the filter" if probe["kept"] else "dropped by the filter"
        assert card.locator(".badge", has_text=status).count() == 1
        shown = card.locator(".segment.probe_prompt pre").first.text_content()
        # shown without the blank lines the protocol puts around blocks
        assert shown == probe["segments"][probe["branch_segment"]]["text"].strip("\n").rstrip()
        copied = card.locator("details.copied")
        if probe["branch_segment"]:  # the parent's text, folded until asked for
            assert not copied.locator(".segment").first.is_visible()
            copied.locator("> summary").click()
            assert copied.locator(".segment").first.is_visible()

    # segments coloured by kind
    colours = {
        kind: view.locator(f".segment.{kind}").first.evaluate(
            "node => getComputedStyle(node).backgroundColor"
        )
        for kind in ("model", "information", "probe_prompt")
        if view.locator(f".segment.{kind}").count()
    }
    assert len(set(colours.values())) == len(colours) >= 2

    screenshots = Path(os.environ.get("REXRAG_SCREENSHOT_DIR") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    box = page.locator("#trajectories").bounding_box()  # in the viewport: to the page's
    top = box["y"] + page.evaluate("window.scrollY")
    clip = {**box, "y": top, "height": min(box["height"], SCREENSHOT_HEIGHT)}
    page.screenshot(path=str(screenshots / "trajectory-browser.png"), clip=clip, full_page=True)
    assert (screenshots / "trajectory-browser.png").stat().st_size > 10_000
    assert problems == []


def test_untrusted_text_is_shown_as_text(report_run, open_page, tmp_path):
    run = foreign_run(report_run, tmp_path / "foreign")
    page, _, problems = open_page(write_report(run))
    assert page.locator("#group-view .question").text_content() == HOSTILE
    first = page.locator("#group-view .trajectory").first
    assert first.locator(".segment pre").first.text_content() == HOSTILE
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 2
    assert problems == []


def test_a_page_of_hundreds_of_iterations_loads_quickly(report_run, open_page, tmp_path):
    run = long_run(report_run, tmp_path / "long", 300)
    page, seconds, problems = open_page(write_report(run))
    print(f"report of 300 iterations: {seconds:.2f} s to the first group")
    assert seconds < LOAD_SECONDS
    assert page.locator("#iteration-select option").count() == 75
    page.select_option("#iteration-select", label=page.locator("option").first.text_content())
    assert page.locator("#group-view .group").count() == 1
    assert page.evaluate("location.hash").startswith("#iteration=10&")
    assert problems == []
