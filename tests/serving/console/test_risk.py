"""The risk pages: the queue, a case, locks, decisions (one and a ring), the daily summary."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from cashback.vocab import Role
from serving.tables import ClaimDecision, ReviewCase
from tests.serving.conftest import Api, StartApi
from tests.serving.console.conftest import SignIn, console_client
from tests.serving.reviews_helpers import REVIEWS, open_case, written

pytestmark = pytest.mark.xdist_group("serving")
ROW = re.compile(r'data-case-url="/console/risk/cases/(\d+)"')
SERVER_TIME = re.compile(r"app;dur=([\d.]+)")


def _api_get(api: Api, path: str, key: str, **params: Any) -> Any:
    answer = api.client.get(path, headers={"X-API-Key": key}, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _queue_ids(html: str) -> list[int]:
    return [int(case_id) for case_id in ROW.findall(html)]


def test_the_queue_shows_the_apis_cases_in_the_apis_order_with_its_filters(
    start_api: StartApi,
) -> None:
    # given flagged cases of several sizes and audit cases
    api = start_api(serving={"audit_share": 1.0})
    flagged = [open_case(api, cashback_amount=51.0 + 7 * i) for i in range(4)]
    audits = [open_case(api, cashback_amount=0.4 + i / 10, amount=40.0) for i in range(2)]
    analyst = console_client(api, Role.RISK)

    # when the console's queue is opened in each order, and filtered by reason
    for sort in ("expected_loss", "score", "age"):
        page = analyst.get("/console/risk/queue", params={"sort": sort})
        expected = _api_get(api, REVIEWS, analyst.key, sort=sort)

        # then it lists the API's cases in the API's order
        assert page.status_code == 200
        assert _queue_ids(page.text) == [item["case_id"] for item in expected["items"]]
    audit_page = analyst.get("/console/risk/queue", params={"reason": "audit", "min_score": ""})
    assert sorted(_queue_ids(audit_page.text)) == sorted(audits)

    # and pages follow the API's cursor without repeating a case
    first = analyst.get("/console/risk/queue", params={"limit": 4})
    next_link = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = analyst.get(next_link.group(1).replace("&amp;", "&"))
    assert sorted(_queue_ids(first.text) + _queue_ids(second.text)) == sorted(flagged + audits)

    # and an invalid filter says which field is wrong
    wrong = analyst.get("/console/risk/queue", params={"min_score": "high"})
    assert wrong.status_code == 422
    assert "min_score" in wrong.text


def test_a_case_page_shows_reasons_norms_the_link_graph_and_history(
    api: Api, sign_in: SignIn
) -> None:
    # given two flagged claims of one customer, and another customer on the same device
    open_case(api, device_id="D-shared-1")
    case_id = open_case(api, device_id="D-shared-1", cashback_amount=60.0)
    open_case(api, device_id="D-shared-1", customer_id="C00000042")
    analyst = sign_in(Role.RISK)

    page = analyst.get(f"/console/risk/cases/{case_id}")

    assert page.status_code == 200
    detail = _api_get(api, f"{REVIEWS}/{case_id}", analyst.key)
    assert detail["norms"], "the served world's customer has a norm"
    for norm in detail["norms"]:
        assert norm["description"].replace("'", "&#39;") in page.text
    # the graph: the customer in the middle, the linked customer, one device edge, a text table
    assert '<svg class="graph"' in page.text
    assert page.text.count('class="edge device_id"') == 1
    assert "C00000042" in page.text
    assert "Linked accounts" in page.text
    # the history lists both of the customer's claims; the ring form offers this case and
    # the linked customer's
    for claim in detail["history"]["claims"]:
        assert claim["claim_id"] in page.text
    assert page.text.count('name="case_ids"') == 2
    assert analyst.get("/console/risk/cases/999999").status_code == 404


def test_a_decision_through_the_console_is_stored_and_visible_through_the_api(
    api: Api, sign_in: SignIn
) -> None:
    # given a flagged case and an analyst on its page
    case_id = open_case(api)
    analyst = sign_in(Role.RISK, "bea")
    page = analyst.get(f"/console/risk/cases/{case_id}")
    client_id = re.search(r'name="client_decision_id" value="([^"]+)"', page.text)
    assert client_id is not None

    # when they reject it with an abuse type and a note
    form = {
        "decision": "reject",
        "abuse_type": "receipt_reuse",
        "note": "same receipt as last week",
        "client_decision_id": client_id.group(1),
        "amount": "",
    }
    answer = analyst.post(f"/console/risk/cases/{case_id}/decision", form)

    # then the page says so, and the API shows the decision with the analyst's name
    assert answer.status_code == 303
    shown = analyst.get(answer.headers["location"])
    assert "Decision recorded." in shown.text
    stored = _api_get(api, f"{REVIEWS}/{case_id}", api.key(Role.RISK))
    assert stored["case"]["status"] == "decided"
    [decision] = stored["review_decisions"]
    assert (decision["decision"], decision["label"], decision["abuse_type"]) == (
        "reject", "fraud", "receipt_reuse"
    )  # fmt: skip
    assert (decision["analyst"], decision["note"]) == ("bea", "same receipt as last week")

    # and the same form sent again is the same decision, not a second one
    before = written(api)
    again = analyst.post(f"/console/risk/cases/{case_id}/decision", form)
    assert again.status_code == 303
    assert written(api) == before


def test_decisions_the_api_refuses_are_shown_and_nothing_is_written(
    api: Api, sign_in: SignIn
) -> None:
    case_id = open_case(api)
    analyst = sign_in(Role.RISK)
    before = written(api)
    for form, status, message in (
        ({"decision": "approve", "abuse_type": "velocity"}, 422, "abuse_type goes with a fraud"),
        ({"decision": "partial"}, 422, "needs the amount approved"),
        ({"decision": "partial", "amount": "500"}, 422, "does not fit"),
        ({"decision": "maybe"}, 422, "decision"),
    ):
        answer = analyst.post(
            f"/console/risk/cases/{case_id}/decision", form | {"client_decision_id": f"x-{form}"}
        )
        assert answer.status_code == status, form
        assert message in answer.text, form
    assert written(api) == before

    # a partial decision with its amount is stored with it
    partial = {"decision": "partial", "amount": "20.5", "client_decision_id": "partial-1"}
    assert analyst.post(f"/console/risk/cases/{case_id}/decision", partial).status_code == 303
    [stored] = _api_get(api, f"{REVIEWS}/{case_id}", analyst.key)["review_decisions"]
    assert (stored["decision"], stored["amount"]) == ("partial", 20.5)


def test_a_taken_case_is_locked_for_a_second_analyst(api: Api, sign_in: SignIn) -> None:
    # given two analysts and a case
    case_id = open_case(api)
    alice, bob = sign_in(Role.RISK, "alice"), sign_in(Role.RISK, "bob")

    # when alice takes it
    taken = alice.post(f"/console/risk/cases/{case_id}/take")
    assert taken.status_code == 303
    assert "You hold this case" in alice.get(taken.headers["location"]).text

    # then bob sees it locked, in the queue and on the case, and cannot take or decide it
    assert "locked by alice" in bob.get("/console/risk/queue").text
    page = bob.get(f"/console/risk/cases/{case_id}")
    assert "Locked by <strong>alice</strong>" in page.text
    assert "<fieldset disabled>" in page.text
    refused = bob.post(f"/console/risk/cases/{case_id}/take")
    assert refused.status_code == 409
    assert "locked by alice" in refused.text
    before = written(api)
    decided = bob.post(
        f"/console/risk/cases/{case_id}/decision",
        {"decision": "approve", "client_decision_id": "bob-1"},
    )
    assert decided.status_code == 409
    assert written(api) == before
    # and the API agrees
    [item] = _api_get(api, REVIEWS, bob.key)["items"]
    assert item["locked_by"] == "alice"


def test_one_decision_for_a_ring_decides_every_case_chosen(api: Api, sign_in: SignIn) -> None:
    # given three customers' flagged claims on one device
    cases = [
        open_case(api, device_id="D-ring-7", customer_id=customer)
        for customer in ("C00000007", "C00000011", "C00000013")
    ]
    analyst = sign_in(Role.RISK)

    # when the ring is rejected from the first case's page
    answer = analyst.post(
        f"/console/risk/cases/{cases[0]}/ring",
        {"case_ids": cases, "decision": "reject", "abuse_type": "multi_account",
         "client_decision_id": "ring-1"},
    )  # fmt: skip

    # then each case is decided by that one request
    assert answer.status_code == 303
    assert "every case of the ring" in analyst.get(answer.headers["location"]).text
    for case_id in cases:
        detail = _api_get(api, f"{REVIEWS}/{case_id}", analyst.key)
        assert detail["case"]["status"] == "decided"
        assert [d["abuse_type"] for d in detail["review_decisions"]] == ["multi_account"]

    # and a partial decision for a ring is refused
    refused = analyst.post(
        f"/console/risk/cases/{cases[0]}/ring",
        {"case_ids": cases, "decision": "partial", "client_decision_id": "ring-2"},
    )
    assert refused.status_code == 422


def test_the_daily_summary_shows_the_days_flag_rate_decisions_and_savings(
    api: Api, sign_in: SignIn
) -> None:
    # given flagged cases, one of them rejected through the console
    cases = [open_case(api, cashback_amount=51.0 + i) for i in range(3)]
    analyst = sign_in(Role.RISK)
    rejected = {"decision": "reject", "client_decision_id": "summary-1"}
    assert analyst.post(f"/console/risk/cases/{cases[0]}/decision", rejected).status_code == 303

    page = analyst.get("/console/risk/summary", params={"days": 3})

    assert page.status_code == 200
    with api.state.db.session() as session:
        scored = session.scalar(select(func.count()).select_from(ClaimDecision))
        flagged = session.scalar(
            select(func.count()).select_from(ReviewCase).where(ReviewCase.reason == "flagged")
        )
    assert scored
    assert flagged
    [today] = _api_get(api, f"{REVIEWS}/stats", analyst.key, days=1)["days"]
    assert f"{100 * flagged / scored:.2f} %" in page.text
    assert f"({flagged} flagged of {scored} claims scored)" in page.text
    assert f"{today['decided']} final, {today['held']} holds" in page.text
    assert f"{today['cashback_saved']:,.2f}" in page.text  # the rejected claim's cashback
    assert today["cashback_saved"] == 51.0
    assert page.text.count('<th scope="row">') == 3
    assert analyst.get("/console/risk/summary", params={"days": 0}).status_code == 422


def test_queue_case_and_summary_render_in_under_200_ms_server_time(
    api: Api, sign_in: SignIn
) -> None:
    # given a few dozen cases, a ring among them
    cases = [open_case(api, cashback_amount=51.0 + i % 9) for i in range(20)]
    cases += [open_case(api, device_id="D-timing", customer_id=f"C0000010{i}") for i in range(5)]
    analyst = sign_in(Role.RISK)
    pages = ["/console/risk/queue", f"/console/risk/cases/{cases[-1]}", "/console/risk/summary"]
    for path in pages:  # the first rendering compiles the templates
        assert analyst.get(path).status_code == 200

    # when each page is rendered again, then the app spends under 200 ms on it (best of 3)
    for path in pages:
        times = []
        for _ in range(3):
            answer = analyst.get(path)
            found = SERVER_TIME.search(answer.headers["server-timing"])
            assert found is not None
            times.append(float(found.group(1)))
        print(f"\n{path}: {min(times):.1f} ms in the app (best of 3)")
        assert min(times) < 200, (path, times)
