"""Tests in a real headless Chromium: the system's /usr/bin/chromium, driven by Playwright.

`make test` installs the Debian `chromium` package (scripts/install_services.sh); Playwright
never downloads a browser here. Without chromium or playwright the browser tests skip with
the reason; when both are present a failure to launch is an error, not a skip.

Use the fixtures of tests/conftest.py:

```python
pytestmark = pytest.mark.browser

def test_page(open_page: OpenPage, tmp_path: Path) -> None:
    view = open_page(report_file, PHONE)
    assert "+2.13 %" in view.text()
    assert view.drawn_plots() == 2
    assert view.overflow_px() == 0
    view.screenshot("experiment-report-phone")
```

`chromium` is one browser per test process (per xdist worker); each `open_page` call gets its
own browser context (cookies, storage), closed after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Request,
        Route,
    )

PROJECT_ROOT: Final = Path(__file__).resolve().parents[1]
SCREENSHOTS: Final = PROJECT_ROOT / "screenshots"  # ignored by git; for a person to look at
CHROMIUM: Final = Path("/usr/bin/chromium")
LAUNCH_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
)
LOCAL_SCHEMES: Final = frozenset({"file", "data", "blob", "about"})
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Viewport:
    """A window size; `mobile` makes Chromium honour the page's meta viewport as a phone does."""

    width: int
    height: int
    mobile: bool = False


DESKTOP: Final = Viewport(1280, 800)
PHONE: Final = Viewport(390, 844, mobile=True)

# the outermost <svg> elements: box, accessible name, and how many of their paths have a box
_PLOTS_JS: Final = """
() => Array.from(document.querySelectorAll("svg"))
  .filter((svg) => !svg.parentElement.closest("svg"))
  .map((svg) => {
    const box = svg.getBoundingClientRect();
    const drawn = Array.from(svg.querySelectorAll("path")).filter((path) => {
      const b = path.getBoundingClientRect();
      return b.width > 0 || b.height > 0;
    }).length;
    const title = svg.querySelector("title");
    return {name: title ? title.textContent : "", width: box.width, height: box.height,
            drawn_paths: drawn};
  })
"""
_OVERFLOW_JS: Final = """
() => Math.max(
  document.documentElement.scrollWidth - document.documentElement.clientWidth,
  document.body.scrollWidth - document.body.clientWidth,
)
"""
# WCAG 2 contrast of an element's text colour against the first opaque background behind it
_CONTRAST_JS: Final = """
(element) => {
  const rgba = (text) => text.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => {
    const lin = (c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  let back = [255, 255, 255];
  for (let node = element; node; node = node.parentElement) {
    const color = rgba(getComputedStyle(node).backgroundColor);
    if (color.length < 4 || color[3] === 1) { back = color.slice(0, 3); break; }
  }
  const [a, b] = [luminance(rgba(getComputedStyle(element).color)), luminance(back)];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""


@dataclass(frozen=True)
class PlotBox:
    """An `<svg>` as laid out: its accessible name, size in CSS pixels, and drawn paths."""

    name: str
    width: float
    height: float
    drawn_paths: int

    @property
    def drew(self) -> bool:
        """Whether it has a size and at least one path with a box."""
        return self.width > 0 and self.height > 0 and self.drawn_paths > 0


@dataclass
class PageView:
    """An open page and what it asked the network for.

    Attributes:
        page: the Playwright page, for anything the helpers do not cover.
        requests: every URL the page requested (the page itself included).
        blocked: requests to anything but file:, data: or loopback, aborted.
        console_errors: console errors, such as Content-Security-Policy refusals.
    """

    page: Page
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The page's visible text (CSS-hidden text left out)."""
        return self.page.inner_text("body")

    def plots(self) -> list[PlotBox]:
        """Every outermost `<svg>` of the page, in document order."""
        return [PlotBox(**box) for box in self.page.evaluate(_PLOTS_JS)]

    def drawn_plots(self) -> int:
        """How many `<svg>` plots drew: a non-zero size and paths with a box."""
        return sum(box.drew for box in self.plots())

    def overflow_px(self) -> int:
        """How far the page is wider than the window (0: no horizontal scrolling)."""
        return int(self.page.evaluate(_OVERFLOW_JS))

    def contrast(self, selector: str) -> float:
        """WCAG contrast ratio of the first matching element's text on its background."""
        return float(self.page.locator(selector).first.evaluate(_CONTRAST_JS))

    def screenshot(self, name: str) -> Path:
        """Save a full-page PNG as screenshots/<name>.png (for a person to look at)."""
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


OpenPage = Callable[..., PageView]


def chromium_path() -> Path:
    """The system chromium, or skip the test saying how to get it."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make env)")
    found = CHROMIUM if CHROMIUM.exists() else None
    which = shutil.which("chromium")
    path = found or (Path(which) if which else None)
    if path is None:
        pytest.skip(
            "chromium is not installed: run `make services` as root (or apt-get install chromium)"
        )
    return path


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Headless Chromium for the life of the block (skips when it is not installed)."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_opener(browser: Browser) -> Iterator[OpenPage]:
    """A function that opens a file or URL in a fresh context; all are closed at the end."""
    contexts: list[BrowserContext] = []

    def open_page(target: Path | str, viewport: Viewport = DESKTOP) -> PageView:
        context = browser.new_context(
            viewport={"width": viewport.width, "height": viewport.height},
            is_mobile=viewport.mobile,
            has_touch=viewport.mobile,
            device_scale_factor=1,
        )
        contexts.append(context)
        page = context.new_page()
        view = PageView(page)
        context.route("**/*", lambda route: _local_only(route, view))
        page.on("request", lambda request: _record(request, view))
        page.on("console", lambda message: _console(message, view))
        url = target.resolve().as_uri() if isinstance(target, Path) else target
        page.goto(url, wait_until="load")
        return view

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()


def _record(request: Request, view: PageView) -> None:
    view.requests.append(request.url)


def _console(message: ConsoleMessage, view: PageView) -> None:
    if message.type == "error":
        view.console_errors.append(message.text)


def _local_only(route: Route, view: PageView) -> None:
    """Let local requests through; abort and record any other (this machine is offline)."""
    url = urlsplit(route.request.url)
    if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
        route.continue_()
    else:
        view.blocked.append(route.request.url)
        route.abort()
