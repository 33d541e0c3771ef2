"""GET /v1/payouts/decisions: the payout feed, in order, never skipping or repeating."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cashback.vocab import ReviewDecision, Role
from serving.payouts import Action, actions
from tests.serving.conftest import Api
from tests.serving.reviews_helpers import FEED, REVIEWS, decision, open_case

pytestmark = pytest.mark.xdist_group("serving")


def _page(api: Api, key: str, after: str, limit: int) -> Any:
    response = api.client.get(
        FEED, params={"after": after, "limit": limit}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_each_decision_maps_to_its_payout_actions() -> None:
    assert actions(ReviewDecision.APPROVE, 5.0, None) == [Action("release", 5.0)]
    assert actions(ReviewDecision.REJECT, 5.0, None) == [Action("hold", 5.0)]
    assert actions(ReviewDecision.CLAWBACK, 5.0, None) == [Action("clawback", 5.0)]
    assert actions(ReviewDecision.HOLD, 5.0, None) == [Action("hold", 5.0)]
    assert actions(ReviewDecision.PARTIAL, 5.0, 2.0) == [
        Action("release", 2.0),
        Action("hold", 3.0),
    ]
    assert actions(ReviewDecision.PARTIAL, 5.0, 5.0) == [Action("release", 5.0)]


def test_the_feed_lists_the_entries_in_order_a_page_at_a_time(api: Api) -> None:
    risk, engine = api.headers(Role.RISK), api.key(Role.ENGINE)
    assert _page(api, engine, "0", 10) == {"entries": [], "next_cursor": "0"}
    first, second = open_case(api, cashback_amount=60.0), open_case(api)
    for case_id, body in ((first, decision("partial", amount=15.0)), (second, decision())):
        response = api.client.post(f"{REVIEWS}/{case_id}/decision", json=body, headers=risk)
        assert response.status_code == 200, response.text
    page = _page(api, engine, "0", 2)
    assert [(e["sequence"], e["action"], e["amount"]) for e in page["entries"]] == [
        (1, "release", 15.0),
        (2, "hold", 45.0),
    ]
    assert page["next_cursor"] == "2"
    rest = _page(api, engine, page["next_cursor"], 2)
    assert [(e["sequence"], e["action"], e["amount"]) for e in rest["entries"]] == [
        (3, "release", 51.0)
    ]
    assert _page(api, engine, rest["next_cursor"], 2) == {"entries": [], "next_cursor": "3"}
    assert (
        api.client.get(FEED, params={"after": -1}, headers={"X-API-Key": engine}).status_code == 422
    )


def test_concurrent_decisions_reach_the_feed_in_order_without_skips_or_repeats(api: Api) -> None:
    engine_headers = api.headers(Role.ENGINE)
    cases = [open_case(api, engine_headers, cashback_amount=51.0 + i) for i in range(24)]
    analysts = [api.headers(Role.RISK) for _ in range(6)]
    engine = api.key(Role.ENGINE)
    kinds = ["approve", "reject", "clawback", "hold"]
    writers_done = threading.Event()
    seen: list[int] = []
    pages: list[list[int]] = []

    def poll() -> None:
        cursor = "0"
        while True:
            done = writers_done.is_set()
            page = _page(api, engine, cursor, 3)
            sequences = [e["sequence"] for e in page["entries"]]
            pages.append(sequences)
            seen.extend(sequences)
            cursor = page["next_cursor"]
            if done and not sequences:
                return

    def write(i: int) -> int:
        body = decision(kinds[i % len(kinds)])
        response = api.client.post(
            f"{REVIEWS}/{cases[i]}/decision", json=body, headers=analysts[i % len(analysts)]
        )
        assert response.status_code == 200, response.text
        return len(response.json()["payouts"])

    reader = threading.Thread(target=poll)
    reader.start()
    with ThreadPoolExecutor(max_workers=len(analysts)) as pool:
        written = sum(pool.map(write, range(len(cases))))
    writers_done.set()
    reader.join(timeout=60)
    assert not reader.is_alive()
    # every entry once, in order: the reader never saw n + 1 before n
    assert written == len(cases)
    assert seen == list(range(1, written + 1))
    assert sum(len(p) for p in pages) == written
    whole = _page(api, engine, "0", 1000)["entries"]
    assert [e["sequence"] for e in whole] == seen
    claims = {e["claim_id"] for e in whole}
    assert len(claims) == len(cases)
