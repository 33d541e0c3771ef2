"""The marketing pages in a real headless Chromium, served by `cashback serve`.

A marketer signs in, reads an experiment's results (the report embedded in its frame), sees
the power calculator update as a field changes (HTMX), and looks at the segments and the
rate card with its frontier, on a desktop and on a phone. Each page is saved under
screenshots/ for a person to look at. The server runs on a private copy of the served world
with a segment model (`segmented_world`); the pages only read it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cashback.vocab import Role
from models.experiments.power import plan_experiment
from models.registry import champion_artifacts
from models.segments.model import SegmentModel
from serving.console.marketing_data import segment_counts
from tests.browser import DESKTOP, PHONE, OpenPage, PageView, Viewport
from tests.serving.console.conftest import LiveConsole, browser_sign_in
from tests.serving.console.marketing_world import segmented_world
from tests.serving.experiment_world import simulated_experiment

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("serving")]
MARKETING = "/console/marketing"


@pytest.fixture(scope="module")
def served_world(served_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """In this module, a private copy of the served world with a segments champion."""
    return segmented_world(served_world, tmp_path_factory.mktemp("segmented") / "data")


def _signed_in(open_page: OpenPage, live_console: LiveConsole, viewport: Viewport) -> PageView:
    view = open_page(live_console.url, viewport)
    browser_sign_in(view, live_console.key(Role.MARKETER))
    return view


def _go(view: PageView, live_console: LiveConsole, path: str) -> None:
    answer = view.page.goto(f"{live_console.server.base_url}{path}", wait_until="load")
    assert answer is not None
    assert answer.status == 200, path


def test_a_marketer_reads_an_experiments_results(
    open_page: OpenPage, live_console: LiveConsole
) -> None:
    key = simulated_experiment(live_console.settings.data_dir)
    view = _signed_in(open_page, live_console, DESKTOP)
    _go(view, live_console, f"{MARKETING}/experiments")
    view.screenshot("marketing-experiments")
    with view.page.expect_navigation():
        view.page.get_by_role("link", name=f"Results of {key}").click()
    report = view.page.frame_locator("iframe.report")
    verdict = report.get_by_role("heading", name="Verdict")
    verdict.wait_for(timeout=30_000)
    assert report.get_by_role("heading", name="Is the split as designed?").is_visible()
    assert report.locator("svg").count() > 0  # the report's own plots drew in the frame
    view.screenshot("marketing-results")
    assert view.console_errors == []  # the CSP let the frame and its inline styles through
    assert view.blocked == []


def test_the_calculator_updates_as_the_marketer_types(
    open_page: OpenPage, live_console: LiveConsole
) -> None:
    view = _signed_in(open_page, live_console, DESKTOP)
    _go(view, live_console, f"{MARKETING}/experiments/new")
    before = view.page.locator("#plan-days").inner_text()
    view.page.get_by_label("Minimum detectable effect, relative").fill("0.02")
    expected = plan_experiment(daily_customers=500, baseline_mean=0.2, mde=0.02)
    days = f"{expected.days:,.0f}"
    assert days != before
    view.page.wait_for_function(
        "(days) => document.querySelector('#plan-days')?.textContent.trim() === days", arg=days
    )
    view.screenshot("marketing-new-experiment")
    assert view.console_errors == []


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_segments_and_the_rate_card_fit_the_screen(
    open_page: OpenPage, live_console: LiveConsole, viewport: Viewport
) -> None:
    view = _signed_in(open_page, live_console, viewport)
    suffix = "" if viewport is DESKTOP else "-phone"
    _go(view, live_console, f"{MARKETING}/segments")
    model = SegmentModel.load(champion_artifacts(live_console.settings, "segments"))
    counts, _ = segment_counts(live_console.settings) or ({}, "")
    table = view.page.get_by_role("table", name="Segment sizes and their typical member")
    for segment in model.segments:
        row = table.get_by_role("row").filter(
            has=view.page.get_by_role("rowheader", name=segment, exact=True)
        )
        assert f"{counts.get(segment, 0):,}" in row.inner_text()
    assert view.overflow_px() == 0
    view.screenshot(f"marketing-segments{suffix}")
    _go(view, live_console, f"{MARKETING}/rates")
    assert view.page.get_by_role("table", name="Rate per segment and category").is_visible()
    frontier = [p for p in view.plots() if p.name.startswith("Budget frontier")]
    assert len(frontier) == 1
    assert frontier[0].drew
    assert view.overflow_px() == 0  # wide tables scroll inside their frame, not the page
    assert view.contrast("figure.chart figcaption") >= 4.5
    view.screenshot(f"marketing-rates{suffix}")
