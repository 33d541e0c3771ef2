"""Self-contained HTML reports: escaped, complete, self-contained, written atomically, and
drawn by a real Chromium at desktop and phone widths."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from cashback.reports import (
    KeyNumber,
    KeyNumbers,
    Note,
    Report,
    Section,
    Verdict,
    format_number,
    plot,
    render,
    styled_figure,
    table,
    write_report,
)
from tests.browser import DESKTOP, PHONE, OpenPage, Viewport

HOSTILE = '<script>window.pwned = 1</script><img src="http://example.invalid/x.png">'
EXTERNAL_ATTRIBUTES = {"src", "srcset", "action", "poster", "data", "background"}


def sample_report() -> Report:
    """A small experiment-like report: numbers, a verdict, a table, two plots, hostile text."""
    days = list(range(1, 29))
    with styled_figure() as (fig, (ax,)):
        ax.plot(days, [0.02 + 0.3 / d for d in days], label="lift")
        ax.fill_between(days, [0.3 / d for d in days], [0.04 + 0.6 / d for d in days], alpha=0.2)
        ax.set(xlabel="day", ylabel="relative lift", title="Lift $ per customer")
        ax.legend()
    lift = plot(
        fig,
        title="Cumulative lift",
        description="The lift settles near +2 % after two weeks; its bounds exclude zero.",
    )
    with styled_figure(1, 2, width=7.0, height=3.0) as (fig, (left, right)):
        left.bar(["control", "boost"], [50_210, 49_790])
        right.hist([1, 2, 2, 3, 3, 3, 4], bins=4)
    split = plot(fig, title=f"Allocation {HOSTILE}", description=HOSTILE, caption="Allocation")
    frame = pl.DataFrame(
        {
            "metric": ["spend per customer", "purchases", HOSTILE],
            "lift": [0.0213, -0.004, None],
            "customers": [12_345, 12_345, 7],
        }
    )
    return Report(
        title=f"Rate boost {HOSTILE}",
        subtitle="A sample report",
        meta=[("Data as of", "2025-12-31"), ("Key", HOSTILE)],
        sections=[
            Section(
                "Verdict",
                [
                    Verdict("Ship the rate boost", f"Margin up. {HOSTILE}", tone="positive"),
                    KeyNumbers(
                        [
                            KeyNumber("Net margin lift", "+2.13 %", "95 % CI +0.41 % to +3.85 %"),
                            KeyNumber("Customers", format_number(24_690)),
                        ]
                    ),
                ],
            ),
            Section(
                "Lift",
                [
                    lift,
                    f"Paragraph {HOSTILE}",
                    table(
                        frame,
                        caption="Lift per metric",
                        formats={"lift": "+.2%"},
                        labels={"lift": "relative lift"},
                    ),
                ],
            ),
            Section(HOSTILE, [split, Note("Sample ratio check: p = 0.62, no mismatch.")]),
        ],
    )


class _Inventory(HTMLParser):
    """Tags, attributes and text of a page, as an HTML parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attributes: list[tuple[str, str, str]] = []
        self.ids: Counter[str] = Counter()
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self._in_style = tag == "style"
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
            if name == "id":
                self.ids[value or ""] += 1
            if name == "style":
                self.styles.append(value or "")

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def _inventory(html: str) -> _Inventory:
    parser = _Inventory()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def report() -> Report:
    return sample_report()


@pytest.fixture(scope="module")
def html(report: Report) -> str:
    return render(report)


def test_user_text_is_escaped_everywhere(html: str) -> None:
    inventory = _inventory(html)
    assert "<script" not in html
    assert inventory.tags["script"] == 0
    assert inventory.tags["img"] == 0
    escaped = "&lt;script&gt;window.pwned = 1&lt;/script&gt;"
    # title, h1, meta, verdict, paragraph, table cell, section heading, plot title and desc
    assert html.count(escaped) >= 10


def test_table_numbers_headers_and_nulls(report: Report, html: str) -> None:
    block = report.sections[1].blocks[2]
    assert isinstance(block, type(table(pl.DataFrame({"a": [1]}), caption="c")))
    assert block.columns == ("metric", "relative lift", "customers")
    assert block.rows[0] == ("spend per customer", "+2.13%", "12,345")
    assert block.rows[1][1] == "-0.40%"
    assert block.rows[2][1:] == ("—", "7")
    assert block.numeric == (False, True, True)
    assert '<th scope="col" class="num">relative lift</th>' in html
    assert '<th scope="row">spend per customer</th>' in html
    assert '<td class="num">+2.13%</td>' in html
    assert "<caption" in html


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (12345, "", "12,345"),
        (1234.0, "", "1,234"),
        (3.14159, "", "3.14"),
        (0.012345, "", "0.0123"),
        (0.0213, "+.2%", "+2.13%"),
        (float("nan"), "", "n/a"),
        (float("-inf"), "", "-∞"),
    ],
)
def test_format_number(value: float, spec: str, text: str) -> None:
    assert format_number(value, spec) == text


def test_plots_are_inline_accessible_svg_with_unique_ids(html: str) -> None:
    inventory = _inventory(html)
    assert inventory.tags["svg"] == 2
    assert inventory.tags["path"] > 10
    svgs = [(name, value) for tag, name, value in inventory.attributes if tag == "svg"]
    assert svgs.count(("role", "img")) == 2
    assert ("aria-labelledby", "s2-b1-title") in svgs
    assert '<title id="s2-b1-title">Cumulative lift</title>' in html
    assert "its bounds exclude zero." in html  # the description, in <desc>
    assert "Lift $ per customer" in html  # "$" stays text, and text stays <text>
    duplicated = [name for name, count in inventory.ids.items() if count > 1]
    assert duplicated == []
    references = [v for _, n, v in inventory.attributes if n.endswith("href") and v]
    assert references
    assert {ref[1:] for ref in references} <= set(inventory.ids)


def test_nothing_is_fetched_from_the_network(html: str) -> None:
    inventory = _inventory(html)
    for tag in ("script", "link", "img", "iframe", "object", "embed", "video", "audio", "base"):
        assert inventory.tags[tag] == 0, tag
    for tag, name, value in inventory.attributes:
        assert name not in EXTERNAL_ATTRIBUTES, (tag, name, value)
        if name.endswith("href"):
            assert value.startswith("#"), (tag, name, value)
    css = "\n".join(inventory.styles)
    assert "@import" not in css
    assert css.count("url(") == css.count("url(#")
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html


def test_page_basics(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="en">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<nav aria-label="Contents">' in html  # three sections
    assert 'class="callout verdict tone-positive"' in html


def test_rendering_is_deterministic(report: Report, html: str) -> None:
    assert render(report) == html


def test_write_report_writes_the_file_atomically(
    report: Report, html: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "reports" / "experiment.html"
    assert write_report(report, out) == out
    assert out.read_text(encoding="utf-8") == html
    assert [p.name for p in out.parent.iterdir()] == ["experiment.html"]

    def fail(self: Path, target: Path) -> Path:
        raise OSError("disk full")

    out.write_text("previous report", encoding="utf-8")
    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(report, out)
    assert out.read_text(encoding="utf-8") == "previous report"
    assert [p.name for p in out.parent.iterdir()] == ["experiment.html"]  # no temp left


def test_import_does_no_work() -> None:
    code = (
        "import sys, cashback.reports; "
        "print(sorted(m for m in ('matplotlib', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.browser
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop-1280", "phone-390"])
def test_report_in_chromium(
    report: Report, tmp_path: Path, open_page: OpenPage, viewport: Viewport
) -> None:
    path = write_report(report, tmp_path / "report.html")
    started = time.perf_counter()
    view = open_page(path, viewport)

    text = view.text()
    for number in ("+2.13 %", "95 % CI +0.41 % to +3.85 %", "24,690", "+2.13%", "12,345"):
        assert number in text
    assert "Ship the rate boost" in text
    assert "<script>window.pwned = 1</script>" in text  # shown as text, never run
    assert view.page.evaluate("window.pwned") is None

    plots = view.plots()
    assert [box.name for box in plots] == ["Cumulative lift", f"Allocation {HOSTILE}"]
    assert view.drawn_plots() == 2
    assert all(box.drawn_paths > 10 for box in plots)
    assert all(100 < box.width <= viewport.width for box in plots)
    assert view.overflow_px() == 0
    table_overflow = "e => e.scrollWidth - e.clientWidth"
    assert view.page.locator(".table-wrap").evaluate(table_overflow) == 0  # numbers in view

    assert view.page.get_by_role("img", name="Cumulative lift").count() == 1
    assert view.page.get_by_role("table", name="Lift per metric").is_visible()
    assert view.page.get_by_role("heading", level=1).inner_text().startswith("Rate boost")
    for selector in ("body", "figcaption", ".verdict .headline", "thead th", ".key-numbers dt"):
        assert view.contrast(selector) >= 4.5, selector

    assert view.requests == [path.as_uri()]
    assert view.blocked == []
    assert view.console_errors == []
    assert view.screenshot(f"sample-report-{viewport.width}").stat().st_size > 0
    assert time.perf_counter() - started < 10
