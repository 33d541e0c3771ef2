"""The review workflow: the queue, a case in full, locks, decisions, bulk decisions, stats."""

from __future__ import annotations

import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cashback.vocab import ReviewDecision, Role
from serving import reviews
from serving.tables import CaseDecision, ClaimDecision, ReviewCase, utc_now
from tests.serving.conftest import Api, StartApi
from tests.serving.helpers import CUSTOMER
from tests.serving.reviews_helpers import FEED, REVIEWS, decision, open_case, written

pytestmark = pytest.mark.xdist_group("serving")


def _risk(api: Api, name: str) -> dict[str, str]:
    return {"X-API-Key": api.key(Role.RISK, name)}


def _get(api: Api, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = api.client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _all_pages(
    api: Api, headers: dict[str, str], cursor: str | None = None, **params: Any
) -> list[int]:
    ids: list[int] = []
    while True:
        page = _get(api, REVIEWS, headers, **params, **({"cursor": cursor} if cursor else {}))
        ids += [item["case_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_the_queue_is_ordered_filtered_and_paged_without_duplicates_or_gaps(
    start_api: StartApi,
) -> None:
    api = start_api(serving={"audit_share": 1.0})  # allowed claims open audit cases too
    engine, risk = api.headers(Role.ENGINE), _risk(api, "alice")
    flagged = [open_case(api, engine, cashback_amount=51.0 + i) for i in range(5)]
    audits = [open_case(api, engine, cashback_amount=0.5 + i / 10, amount=40.0) for i in range(3)]
    with api.state.db.session() as session:
        rows = session.execute(
            select(ReviewCase.id, ReviewCase.reason, ClaimDecision.probability,
                   ClaimDecision.cashback_amount, ClaimDecision.risk_score)
            .join(ClaimDecision, ClaimDecision.id == ReviewCase.claim_decision_id)
        ).all()  # fmt: skip
    assert {r.id for r in rows if r.reason == "flagged"} == set(flagged)
    assert {r.id for r in rows if r.reason == "audit"} == set(audits)
    by_loss = [r.id for r in sorted(rows, key=lambda r: (-r.probability * r.cashback_amount, r.id))]
    by_score = [r.id for r in sorted(rows, key=lambda r: (-r.risk_score, r.id))]

    page = _get(api, REVIEWS, risk)
    assert [item["case_id"] for item in page["items"]] == by_loss
    assert page["next_cursor"] is None
    first = page["items"][0]
    assert first["expected_loss"] == pytest.approx(first["probability"] * first["cashback_amount"])
    assert first["locked_by"] is None
    assert _get(api, REVIEWS, risk, sort="score")["items"][0]["case_id"] == by_score[0]
    assert [i["case_id"] for i in _get(api, REVIEWS, risk, sort="age")["items"]] == sorted(
        flagged + audits
    )
    # filters
    assert {i["case_id"] for i in _get(api, REVIEWS, risk, reason="audit")["items"]} == set(audits)
    high = _get(api, REVIEWS, risk, min_score=50)["items"]
    assert {i["case_id"] for i in high} == {r.id for r in rows if r.risk_score >= 50}
    assert _get(api, REVIEWS, risk, max_age_hours=1)["items"]
    later = (utc_now() + timedelta(minutes=5)).isoformat()
    assert _get(api, REVIEWS, risk, opened_after=later)["items"] == []
    assert _get(api, REVIEWS, risk, status="decided")["items"] == []
    # pages of 3 give every case once, in order
    assert _all_pages(api, risk, limit=3) == by_loss
    assert _all_pages(api, risk, limit=2, sort="age") == sorted(flagged + audits)
    # cases opened between pages neither repeat nor hide one
    page = _get(api, REVIEWS, risk, limit=3)
    seen = [i["case_id"] for i in page["items"]]
    new = [open_case(api, engine, cashback_amount=200.0), open_case(api, engine, amount=3000.0)]
    rest = _all_pages(api, risk, limit=3, cursor=page["next_cursor"])
    assert len(seen + rest) == len(set(seen + rest))
    assert set(seen + rest) >= set(by_loss)
    assert set(seen + rest) - set(by_loss) <= set(new)
    # bad cursors and limits
    bad = api.client.get(REVIEWS, headers=risk, params={"cursor": "nonsense"})
    assert bad.status_code == 422
    other = api.client.get(REVIEWS, headers=risk, params={"cursor": page["next_cursor"],
                                                          "sort": "age"})  # fmt: skip
    assert other.status_code == 422
    assert api.client.get(REVIEWS, headers=risk, params={"limit": 201}).status_code == 422


def test_a_case_in_full_shows_the_norms_history_and_linked_accounts(api: Api) -> None:
    engine, risk = api.headers(Role.ENGINE), _risk(api, "alice")
    case_id = open_case(api, engine, device_id="D-ring-1", ip="203.0.113.1")
    other = open_case(api, engine, device_id="D-ring-1", customer_id="C00000011", ip="203.0.113.2")
    open_case(api, engine, device_id="D-elsewhere", customer_id="C00000012", ip="203.0.113.3")
    detail = _get(api, f"{REVIEWS}/{case_id}", risk)
    assert detail["case"]["case_id"] == case_id
    assert detail["claim"]["customer_id"] == CUSTOMER
    assert "ip" not in detail["claim"]
    assert detail["scoring"]["decision"] in {"review", "block"}
    assert "big_cashback" in detail["scoring"]["rule_hits"]
    assert detail["features"]["avg_basket_90d"] is not None
    norms = {n["feature"]: n for n in detail["norms"]}
    amount = norms["amount"]
    assert amount["value"] == 3000.0
    assert amount["norm"] == pytest.approx(detail["features"]["avg_basket_90d"])
    assert amount["ratio"] == pytest.approx(3000.0 / amount["norm"])
    [linked] = detail["linked_accounts"]
    assert linked["customer_id"] == "C00000011"
    assert linked["linked_by"] == ["device_id"]
    [linked_claim] = linked["claims"]
    assert linked_claim["case_id"] == other
    claims = detail["history"]["claims"]
    assert [c["case_id"] for c in claims] == [case_id]
    transactions = detail["history"]["transactions"]
    assert transactions is not None
    assert transactions["purchase_count"] > 0
    assert all(p["amount"] > 0 for p in transactions["purchases"])
    assert api.client.get(f"{REVIEWS}/999999", headers=risk).status_code == 404


def test_a_case_is_locked_for_one_analyst_until_the_lock_expires(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = open_case(api)
    alice, bob = _risk(api, "alice"), _risk(api, "bob")
    taken = api.client.post(f"{REVIEWS}/{case_id}/claim", headers=alice)
    assert taken.status_code == 200, taken.text
    lock = taken.json()
    assert lock["locked_by"] == "alice"
    [item] = _get(api, REVIEWS, bob)["items"]
    assert (item["locked_by"], item["locked_until"]) == ("alice", lock["locked_until"])
    # another analyst: 409 with who and until when, for a claim and for a decision
    refused = api.client.post(f"{REVIEWS}/{case_id}/claim", headers=bob)
    assert refused.status_code == 409
    assert "alice" in refused.json()["detail"]
    assert lock["locked_until"][:19] in refused.json()["detail"]
    before = written(api)
    denied = api.client.post(f"{REVIEWS}/{case_id}/decision", json=decision(), headers=bob)
    assert denied.status_code == 409
    assert "locked by alice" in denied.json()["detail"]
    assert written(api) == before
    # the same analyst extends it
    again = api.client.post(f"{REVIEWS}/{case_id}/claim", headers=alice).json()
    assert again["locked_until"] > lock["locked_until"]
    # once it has expired, another analyst takes it
    later = utc_now() + timedelta(minutes=16)
    monkeypatch.setattr(reviews, "utc_now", lambda: later)
    taken = api.client.post(f"{REVIEWS}/{case_id}/claim", headers=bob)
    assert taken.status_code == 200, taken.text
    assert taken.json()["locked_by"] == "bob"


def test_a_zero_minute_lock_expires_at_once(start_api: StartApi) -> None:
    api = start_api(serving={"review_lock_minutes": 0})
    case_id = open_case(api)
    alice, bob = _risk(api, "alice"), _risk(api, "bob")
    assert api.client.post(f"{REVIEWS}/{case_id}/claim", headers=alice).status_code == 200
    assert api.client.post(f"{REVIEWS}/{case_id}/claim", headers=bob).status_code == 200
    response = api.client.post(f"{REVIEWS}/{case_id}/decision", json=decision(), headers=alice)
    assert response.status_code == 200, response.text


def test_a_decision_is_stored_once_and_a_retry_gets_the_stored_answer(api: Api) -> None:
    case_id = open_case(api)
    alice = _risk(api, "alice")
    assert api.client.post(f"{REVIEWS}/{case_id}/claim", headers=alice).status_code == 200
    body = decision("reject", note="receipt edited", abuse_type="receipt_reuse")
    first = api.client.post(f"{REVIEWS}/{case_id}/decision", json=body, headers=alice)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["case_id"] == case_id
    assert (answer["decision"], answer["label"], answer["status"]) == ("reject", "fraud", "decided")
    assert (answer["analyst"], answer["note"]) == ("alice", "receipt edited")
    assert answer["abuse_type"] == "receipt_reuse"
    assert [(p["action"], p["amount"]) for p in answer["payouts"]] == [("hold", 51.0)]
    again = api.client.post(f"{REVIEWS}/{case_id}/decision", json=body, headers=alice)
    assert again.status_code == 200
    assert again.json() == answer
    assert written(api) == (1, 1, 1)
    changed = api.client.post(
        f"{REVIEWS}/{case_id}/decision", json=body | {"note": "other"}, headers=alice
    )
    assert changed.status_code == 409
    assert "client_decision_id" in changed.json()["detail"]
    assert written(api) == (1, 1, 1)
    detail = _get(api, f"{REVIEWS}/{case_id}", alice)
    assert detail["case"]["status"] == "decided"
    assert detail["case"]["locked_by"] is None
    assert [d["decision"] for d in detail["review_decisions"]] == ["reject"]
    assert [d["abuse_type"] for d in detail["review_decisions"]] == ["receipt_reuse"]


def test_bad_decisions_get_clear_errors_and_write_nothing(api: Api) -> None:
    case_id = open_case(api, cashback_amount=60.0)
    alice = _risk(api, "alice")
    path = f"{REVIEWS}/{case_id}/decision"
    cases: list[tuple[dict[str, Any], int, str]] = [
        (decision("partial", amount=60.01), 422, "at most the cashback"),
        (decision("partial", amount=0.0), 422, "more than 0"),
        (decision("partial"), 422, "needs the amount"),
        (decision("approve", amount=10.0), 422, "only for a partial"),
        (decision("approve", abuse_type="velocity"), 422, "goes with a fraud decision"),
        (decision("hold", abuse_type="velocity"), 422, "not with hold"),
        (decision("reject", abuse_type="shoplifting"), 422, ""),
        (decision("maybe"), 422, ""),
        (decision("approve", client_decision_id=""), 422, ""),
    ]
    for body, status, words in cases:
        response = api.client.post(path, json=body, headers=alice)
        assert response.status_code == status, (body, response.text)
        assert words in str(response.json()["detail"])
        assert written(api) == (0, 0, 0)
    unknown = api.client.post(f"{REVIEWS}/999999/decision", json=decision(), headers=alice)
    assert unknown.status_code == 404
    assert written(api) == (0, 0, 0)
    partial = api.client.post(path, json=decision("partial", amount=60.0), headers=alice)
    assert partial.status_code == 200, partial.text
    assert [(p["action"], p["amount"]) for p in partial.json()["payouts"]] == [("release", 60.0)]
    closed = api.client.post(path, json=decision("clawback"), headers=alice)
    assert closed.status_code == 409
    assert "decided already" in closed.json()["detail"]
    assert written(api) == (1, 1, 1)


def test_a_hold_keeps_the_case_open_for_a_final_decision(api: Api) -> None:
    case_id = open_case(api)
    alice, bob = _risk(api, "alice"), _risk(api, "bob")
    path = f"{REVIEWS}/{case_id}/decision"
    held = api.client.post(path, json=decision("hold"), headers=alice).json()
    assert (held["status"], held["label"]) == ("held", None)
    assert [p["action"] for p in held["payouts"]] == ["hold"]
    [item] = _get(api, REVIEWS, bob)["items"]
    assert item["status"] == "held"
    assert api.client.post(path, json=decision("hold"), headers=bob).status_code == 409
    approved = api.client.post(path, json=decision("approve"), headers=bob)
    assert approved.status_code == 200, approved.text
    assert [p["action"] for p in approved.json()["payouts"]] == ["release"]
    assert _get(api, REVIEWS, bob)["items"] == []


def test_two_analysts_deciding_one_case_at_once_store_one_decision(api: Api) -> None:
    case_id = open_case(api)
    analysts = [_risk(api, f"analyst-{i}") for i in range(8)]
    start = threading.Barrier(len(analysts))

    def decide(i: int) -> Any:
        start.wait()
        kind = "approve" if i % 2 else "reject"
        return api.client.post(
            f"{REVIEWS}/{case_id}/decision", json=decision(kind), headers=analysts[i]
        )

    with ThreadPoolExecutor(max_workers=len(analysts)) as pool:
        responses = list(pool.map(decide, range(len(analysts))))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (len(analysts) - 1), [r.text for r in responses]
    assert all("decided already" in r.json()["detail"] for r in responses if r.status_code == 409)
    _, decisions, entries = written(api)
    assert decisions == 1
    assert entries == 1


def test_a_bulk_decision_decides_every_case_or_none(api: Api) -> None:
    engine = api.headers(Role.ENGINE)
    ring = [open_case(api, engine, device_id="D-ring-9") for _ in range(3)]
    alice, bob = _risk(api, "alice"), _risk(api, "bob")
    assert api.client.post(f"{REVIEWS}/{ring[1]}/claim", headers=bob).status_code == 200
    body = decision("reject", case_ids=ring, note="ring on D-ring-9")
    refused = api.client.post(f"{REVIEWS}/bulk-decision", json=body, headers=alice)
    assert refused.status_code == 409
    assert f"review case {ring[1]} is locked by bob" in refused.json()["detail"]
    assert written(api) == (0, 0, 0)
    assert {i["status"] for i in _get(api, REVIEWS, alice)["items"]} == {"open"}
    missing = api.client.post(
        f"{REVIEWS}/bulk-decision", json=decision("reject", case_ids=[*ring, 999999]), headers=bob
    )
    assert missing.status_code == 404
    partial = decision("partial", case_ids=ring)
    assert api.client.post(f"{REVIEWS}/bulk-decision", json=partial, headers=bob).status_code == 422
    assert written(api) == (0, 0, 0)
    # bob holds the lock he took: his bulk decision goes through, all at once
    done = api.client.post(f"{REVIEWS}/bulk-decision", json=body, headers=bob)
    assert done.status_code == 200, done.text
    decided = done.json()["decisions"]
    assert [d["case_id"] for d in decided] == sorted(ring)
    assert all(d["label"] == "fraud" and d["status"] == "decided" for d in decided)
    assert written(api) == (1, 3, 3)
    again = api.client.post(f"{REVIEWS}/bulk-decision", json=body, headers=bob)
    assert again.json() == done.json()
    assert _get(api, REVIEWS, alice)["items"] == []


def test_the_stats_match_a_direct_count(start_api: StartApi) -> None:
    api = start_api(serving={"audit_share": 1.0})
    engine, alice = api.headers(Role.ENGINE), _risk(api, "alice")
    flagged = [open_case(api, engine, cashback_amount=51.0 + i) for i in range(5)]
    audits = [open_case(api, engine, cashback_amount=1.0, amount=40.0) for _ in range(3)]
    plan = {
        flagged[0]: decision("reject"),
        flagged[1]: decision("partial", amount=20.0),
        flagged[2]: decision("approve"),
        flagged[3]: decision("hold"),
        audits[0]: decision("clawback"),
        audits[1]: decision("approve"),
    }
    for case_id, body in plan.items():
        response = api.client.post(f"{REVIEWS}/{case_id}/decision", json=body, headers=alice)
        assert response.status_code == 200, response.text
    [today] = _get(api, f"{REVIEWS}/stats", alice, days=1)["days"]
    week = _get(api, f"{REVIEWS}/stats", alice, days=7)["days"]
    assert len(week) == 7
    assert week[-1] == today
    with api.state.db.session() as session:
        cases = {c.id: c for c in session.scalars(select(ReviewCase))}
        cashback = dict(
            session.execute(select(ReviewCase.id, ClaimDecision.cashback_amount).join(
                ClaimDecision, ClaimDecision.id == ReviewCase.claim_decision_id)).all()
        )  # fmt: skip
        decisions = list(session.scalars(select(CaseDecision)))
    final = [d for d in decisions if d.label is not None]
    audit_final = [d for d in final if cases[d.case_id].reason == "audit"]
    saved = sum(
        cashback[d.case_id] - (d.amount or 0.0)
        if d.decision == "partial"
        else cashback[d.case_id] * (d.decision in {"reject", "clawback"})
        for d in final
    )
    hours = [(d.decided_at - cases[d.case_id].opened_at).total_seconds() / 3600 for d in final]
    assert today["day"] == utc_now().date().isoformat()
    assert (today["opened_flagged"], today["opened_audit"]) == (5, 3)
    assert (today["decided"], today["held"]) == (5, 1)
    fraud = [d for d in final if ReviewDecision(d.decision).label() == "fraud"]
    assert today["fraud_share"] == pytest.approx(len(fraud) / len(final))  # 3 / 5
    assert today["audit_decided"] == 2
    assert today["audit_fraud_rate"] == pytest.approx(0.5)
    assert len(audit_final) == 2
    assert today["cashback_saved"] == pytest.approx(saved)
    assert today["cashback_saved"] == pytest.approx(51.0 + (52.0 - 20.0) + 1.0)
    assert today["median_hours_to_decision"] == pytest.approx(statistics.median(hours))


def test_risk_routes_and_the_feed_tell_nothing_to_other_roles(api: Api) -> None:
    case_id = open_case(api)
    engine, marketer = api.headers(Role.ENGINE), api.headers(Role.MARKETER)
    assert api.client.get(f"{REVIEWS}/{case_id}", headers=engine).status_code == 403
    assert api.client.get(f"{REVIEWS}/{case_id}", headers=marketer).status_code == 403
    assert api.client.get(FEED, headers=_risk(api, "alice")).status_code == 403
