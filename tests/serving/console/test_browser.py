"""The console in a real headless Chromium against `cashback serve` (one server per module).

A reviewer signs in, opens the top claim from the queue with the keyboard, rejects it, and
the API shows the decision; a marketer is refused the risk pages with 403; an admin opens
the admin pages; no page scrolls sideways on a phone. Screenshots of each main page go to
screenshots/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from cashback.vocab import Role
from tests.browser import DESKTOP, OpenPage, PageView, Viewport
from tests.serving.console.conftest import LiveConsole, browser_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("serving")]
MIN_CONTRAST = 4.5  # WCAG AA for body text
PHONE = Viewport(375, 812, mobile=True)  # the narrowest common phone width


def _api(live: LiveConsole, path: str, key: str) -> Any:
    answer = httpx2.get(f"{live.server.base_url}{path}", headers={"X-API-Key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _signed_in(live: LiveConsole, open_page: OpenPage, key: str, viewport: Any) -> PageView:
    view = open_page(live.url, viewport)  # the console sends the browser to its sign-in form
    assert view.page.url.startswith(f"{live.server.base_url}/console/sign-in")
    browser_sign_in(view, key)
    return view


def _open(view: PageView, live: LiveConsole, path: str) -> int:
    response = view.page.goto(f"{live.server.base_url}{path}", wait_until="load")
    assert response is not None
    return response.status


def _clean(view: PageView) -> None:
    assert view.console_errors == []  # e.g. no Content-Security-Policy refusal
    assert view.blocked == []


def test_a_reviewer_opens_the_top_claim_and_records_a_decision_seen_by_the_api(
    live_console: LiveConsole, open_page: OpenPage
) -> None:
    # given flagged claims of two customers on one device, and a risk analyst's key
    live_console.flag_claims(2, device_id="D-browser-1")
    live_console.flag_claims(1, device_id="D-browser-1", customer_id="C00000011")
    key = live_console.key(Role.RISK, "rita")
    top = _api(live_console, "/v1/reviews", key)["items"][0]

    # when rita signs in through the form and opens the queue
    view = open_page(live_console.url)
    assert view.page.get_by_label("API key").is_visible()
    view.screenshot("console-sign-in")
    browser_sign_in(view, key)
    assert "Welcome, rita" in view.text()
    assert _open(view, live_console, "/console/risk/queue") == 200
    assert view.contrast("main h1") >= MIN_CONTRAST
    assert view.contrast(".nav a") >= MIN_CONTRAST
    view.screenshot("console-queue")

    # and opens the top claim with the keyboard (j selects it, o opens it)
    view.page.keyboard.press("j")
    with view.page.expect_navigation():
        view.page.keyboard.press("o")
    assert view.page.url.endswith(f"/console/risk/cases/{top['case_id']}")
    assert view.drawn_plots() == 1  # the linked accounts' graph
    view.screenshot("console-case")

    # and takes it: t focuses the button, Enter sends it (HTMX, CSRF token in its header)
    view.page.keyboard.press("t")
    view.page.keyboard.press("Enter")
    view.page.get_by_text("You hold this case until").wait_for()
    assert view.page.url.endswith(f"/console/risk/cases/{top['case_id']}")  # no reload
    locked = _api(live_console, "/v1/reviews", key)["items"]
    assert [item["locked_by"] for item in locked if item["case_id"] == top["case_id"]] == ["rita"]

    # and rejects it: r chooses reject, then a note and the button
    view.page.keyboard.press("r")
    assert view.page.get_by_label("Reject (r)").is_checked()
    view.page.locator("#note").fill("receipt seen twice")
    with view.page.expect_navigation():
        view.page.get_by_role("button", name="Record decision").click()

    # then the page confirms it, and the API shows rita's decision
    assert "Decision recorded." in view.text()
    detail = _api(live_console, f"/v1/reviews/{top['case_id']}", live_console.key(Role.RISK))
    assert detail["case"]["status"] == "decided"
    [decision] = detail["review_decisions"]
    assert (decision["decision"], decision["analyst"], decision["note"]) == (
        "reject", "rita", "receipt seen twice"
    )  # fmt: skip

    # and the daily summary counts it
    assert _open(view, live_console, "/console/risk/summary") == 200
    assert "1 final, 0 holds" in view.text()
    view.screenshot("console-summary")
    _clean(view)


def test_a_marketer_gets_403_on_the_risk_and_admin_pages(
    live_console: LiveConsole, open_page: OpenPage
) -> None:
    view = _signed_in(live_console, open_page, live_console.key(Role.MARKETER), DESKTOP)

    for path in ("/console/risk/queue", "/console/admin/keys"):
        assert _open(view, live_console, path) == 403
        assert "Not allowed" in view.text()
    assert "Review queue" not in view.page.inner_text("header")
    view.screenshot("console-403")


def test_the_admin_pages_open_and_no_page_scrolls_sideways_on_a_phone(
    live_console: LiveConsole, open_page: OpenPage
) -> None:
    # given an open case, and an admin (who sees every area) on a desktop and on a phone
    live_console.flag_claims(2, device_id="D-browser-2")
    key = live_console.key(Role.ADMIN, "ada")
    case_id = _api(live_console, "/v1/reviews", key)["items"][0]["case_id"]
    desktop = _signed_in(live_console, open_page, key, DESKTOP)
    assert _open(desktop, live_console, "/console/admin/models") == 200
    assert "Champion: v" in desktop.text()
    desktop.screenshot("console-admin-models")
    assert _open(desktop, live_console, "/console/admin/keys") == 200
    desktop.screenshot("console-admin-keys")
    _clean(desktop)

    # when each page is opened at phone width, then none is wider than the screen
    phone = _signed_in(live_console, open_page, key, PHONE)
    pages = {
        "queue": "/console/risk/queue",
        "case": f"/console/risk/cases/{case_id}",
        "summary": "/console/risk/summary",
        "admin-models": "/console/admin/models",
        "admin-keys": "/console/admin/keys",
    }
    for name, path in pages.items():
        assert _open(phone, live_console, path) == 200, name
        assert phone.overflow_px() == 0, name
        phone.screenshot(f"console-{name}-phone")
    _clean(phone)
