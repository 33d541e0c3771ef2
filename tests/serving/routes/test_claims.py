"""POST /v1/claims/score: decisions, idempotency, review cases, reasons, fallbacks, privacy."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from cashback.privacy import hash_ip
from cashback.settings import ModelSettings
from cashback.vocab import Role
from serving.auth import authenticate
from serving.schemas import ClaimScoreRequest
from serving.tables import ClaimDecision, ReviewCase
from tests.serving.conftest import PEPPER, Api, StartApi
from tests.serving.helpers import claim_body, eventually

pytestmark = pytest.mark.xdist_group("serving")
SCORE = "/v1/claims/score"
RACERS = 20  # retries held in scoring together (the thread pool runs 40 at once)


def _score(api: Api, body: dict[str, Any], headers: dict[str, str], **params: str) -> Any:
    response = api.client.post(SCORE, json=body, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(api: Api, claim_id: str) -> list[ClaimDecision]:
    with api.state.db.session() as session:
        return list(
            session.scalars(select(ClaimDecision).where(ClaimDecision.claim_id == claim_id))
        )


def _case(api: Api, claim_id: str) -> ReviewCase | None:
    with api.state.db.session() as session:
        return session.scalars(
            select(ReviewCase)
            .join(ClaimDecision, ClaimDecision.id == ReviewCase.claim_decision_id)
            .where(ClaimDecision.claim_id == claim_id)
        ).one_or_none()


def test_an_ordinary_claim_is_scored_allowed_and_stored_without_a_case(api: Api) -> None:
    body = claim_body()
    answer = _score(api, body, api.headers(Role.ENGINE))
    assert answer["decision"] == "allow"
    assert 0 <= answer["risk_score"] < 50
    assert answer["model_version"] == "1"
    assert answer["fallback"] is False
    assert answer["rule_hits"] == []
    assert answer["reasons"] is None
    [row] = _rows(api, body["claim_id"])
    assert row.decision_id == answer["decision_id"]
    assert row.customer_id == body["customer_id"]
    assert row.features is not None
    assert "tenure_days" in row.features
    assert _case(api, body["claim_id"]) is None


def test_a_retry_gets_the_stored_answer_and_stores_nothing_more(api: Api) -> None:
    headers, body = api.headers(Role.ENGINE), claim_body(cashback_amount=55.0, amount=2000.0)
    first = _score(api, body, headers)
    again = _score(api, body | {"ip": " 198.51.100.23 "}, headers)
    assert again == first
    assert len(_rows(api, body["claim_id"])) == 1
    conflict = api.client.post(SCORE, json=body | {"amount": 2001.0}, headers=headers)
    assert conflict.status_code == 409
    assert "amount" in conflict.json()["detail"]


def test_fifty_concurrent_retries_store_one_row_and_get_one_answer(api: Api) -> None:
    # given a claim, and the engine's retries of it
    headers, body = api.headers(Role.ENGINE), claim_body(cashback_amount=60.0, amount=1500.0)
    start = threading.Barrier(50)

    def retry(_: int) -> Any:
        start.wait()
        return _score(api, body, headers)

    # when 50 retries of one claim arrive at once
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(retry, range(50)))

    # then they all got one answer, stored once, with one review case
    assert len({json.dumps(a, sort_keys=True) for a in answers}) == 1
    assert len(_rows(api, body["claim_id"])) == 1
    with api.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ReviewCase)) == 1


def test_retries_racing_to_store_a_claim_keep_the_first_and_return_it(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given scoring held until 20 retries are scoring at once (or 10 s went by), so that
    # they all missed the stored answer and race each other to store their own. The route
    # scores inline on its worker's event loop, so in one process requests do not race:
    # the scorer is called from threads, as the workers of a server call it at once
    service = api.state.claims
    score = service._score
    all_in = threading.Event()
    arrived = iter(range(1, 51))
    arrivals = threading.Lock()

    def slow_score(*args: Any, **kwargs: Any) -> Any:
        with arrivals:
            if next(arrived) >= RACERS:
                all_in.set()
        all_in.wait(timeout=10.0)
        return score(*args, **kwargs)

    monkeypatch.setattr(service, "_score", slow_score)
    caplog.set_level(logging.DEBUG, logger="serving.claims")
    key = api.headers(Role.ENGINE)["X-API-Key"]
    with api.state.db.session() as session:
        principal = authenticate(session, key)
    assert principal is not None
    claim = ClaimScoreRequest.model_validate(claim_body(cashback_amount=60.0, amount=1500.0))
    start = threading.Barrier(50)

    def retry(_: int) -> Any:
        start.wait()
        return dict(service.score(claim, principal))

    # when 50 retries of one claim are scored at once
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(retry, range(50)))

    # then one stored, the others lost the race and returned its answer
    races = sum("stored first by a concurrent request" in r.getMessage() for r in caplog.records)
    assert races >= 10
    assert len({a["decision_id"] for a in answers}) == 1
    assert len(_rows(api, claim.claim_id)) == 1
    with api.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ReviewCase)) == 1


def test_the_raw_ip_is_hashed_and_never_stored(api: Api) -> None:
    body = claim_body(ip="203.0.113.99", cashback_amount=52.0, amount=900.0)
    _score(api, body, api.headers(Role.ENGINE))
    [row] = _rows(api, body["claim_id"])
    assert row.ip_hash == hash_ip("203.0.113.99", PEPPER.encode())
    stored = [str(getattr(row, c.key)) for c in ClaimDecision.__table__.columns]
    case = _case(api, body["claim_id"])
    assert case is not None
    stored += [str(getattr(case, c.key)) for c in ReviewCase.__table__.columns]
    assert not any("203.0.113.99" in value for value in stored)


def test_a_review_opens_a_flagged_case_whose_reasons_arrive_within_a_second(api: Api) -> None:
    body = claim_body(cashback_amount=51.0, amount=3000.0)  # the big_cashback rule
    answer = _score(api, body, api.headers(Role.ENGINE))
    assert answer["decision"] in {"review", "block"}
    assert "big_cashback" in answer["rule_hits"]
    assert answer["abuse_type"] is None  # computed off the request path
    case = _case(api, body["claim_id"])
    assert case is not None
    assert (case.reason, case.status) == ("flagged", "open")

    def explained() -> bool:
        found = _case(api, body["claim_id"])
        return found is not None and found.reasons is not None

    assert eventually(explained, seconds=1.0)
    case = _case(api, body["claim_id"])
    assert case is not None
    assert case.reasons
    assert case.abuse_type is not None
    assert case.explained_at is not None
    assert case.explained_at >= case.opened_at


def test_a_reused_receipt_is_blocked(api: Api) -> None:
    headers = api.headers(Role.ENGINE)
    first = claim_body(receipt_hash="r-shared", ts="2025-05-30T10:00:00Z")
    second = claim_body(receipt_hash="r-shared", ts="2025-05-30T11:00:00Z", customer_id="C00000011")
    _score(api, first, headers)
    answer = _score(api, second, headers)
    assert answer["decision"] == "block"
    assert "receipt_reused" in answer["rule_hits"]
    assert _case(api, second["claim_id"]) is not None


def test_explain_gives_the_reasons_and_abuse_type_inline(api: Api) -> None:
    body = claim_body(cashback_amount=51.0, amount=400.0)
    answer = _score(api, body, api.headers(Role.ENGINE), explain="true")
    assert answer["reasons"]
    assert all(isinstance(r, str) for r in answer["reasons"])
    assert answer["abuse_type"] in {
        "multi_account", "receipt_reuse", "claim_then_return", "velocity", "new_account", "other"
    }  # fmt: skip
    case = _case(api, body["claim_id"])
    assert case is not None
    assert case.reasons == answer["reasons"]


def test_a_share_of_allowed_claims_opens_audit_cases(start_api: StartApi) -> None:
    api = start_api(serving={"audit_share": 1.0})
    body = claim_body()
    answer = _score(api, body, api.headers(Role.ENGINE))
    assert answer["decision"] == "allow"
    case = _case(api, body["claim_id"])
    assert case is not None
    assert case.reason == "audit"
    assert case.reasons is None


def test_an_unknown_customer_device_and_ip_get_cold_start_features(api: Api) -> None:
    body = claim_body(customer_id="C-new-999", device_id="D-new", ip="192.0.2.200")
    answer = _score(api, body, api.headers(Role.ENGINE))
    assert answer["fallback"] is False
    [row] = _rows(api, body["claim_id"])
    assert row.features is not None
    assert row.features["tenure_days"] == 0
    assert row.features["device_customers_30d"] == 0


def test_without_a_model_the_claim_goes_to_review_flagged_as_a_fallback(
    start_api: StartApi,
) -> None:
    api = start_api(models=ModelSettings(name_prefix="nobody-"))
    body = claim_body()
    answer = _score(api, body, api.headers(Role.ENGINE))
    assert answer["decision"] == "review"
    assert answer["fallback"] is True
    assert answer["reasons"] == ["model unavailable"]
    assert answer["risk_score"] is None
    assert answer["model_version"] is None
    case = _case(api, body["claim_id"])
    assert case is not None
    assert case.reason == "flagged"
    assert case.reasons == ["model unavailable"]


def test_a_store_that_fails_at_request_time_gives_the_fallback_not_a_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("online store down")

    assert api.state.runtime.online is not None
    monkeypatch.setattr(api.state.runtime.online, "read_rows", down)
    answer = _score(api, claim_body(), api.headers(Role.ENGINE))
    assert answer["fallback"] is True
    assert answer["decision"] == "review"


def test_invalid_fields_get_a_422_naming_each_field_without_echoing_values(api: Api) -> None:
    body = claim_body(amount=-1, cashback_amount=1.234, ip="999.1.2.3", payout_method="cash")
    del body["ts"]
    response = api.client.post(SCORE, json=body, headers=api.headers(Role.ENGINE))
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}
    assert set(errors) == {
        ("body", "amount"), ("body", "cashback_amount"), ("body", "ip"),
        ("body", "payout_method"), ("body", "ts"),
    }  # fmt: skip
    assert "999.1.2.3" not in response.text
    naive = api.client.post(
        SCORE, json=claim_body(ts="2025-05-30T15:00:00"), headers=api.headers(Role.ENGINE)
    )
    assert naive.status_code == 422
    extra = api.client.post(SCORE, json=claim_body(iban="x"), headers=api.headers(Role.ENGINE))
    assert extra.status_code == 422


def test_a_body_over_the_limit_is_refused_with_413(api: Api) -> None:
    limit = api.settings.serving.max_body_bytes
    body = claim_body(device_id="x" * 100) | {"padding": "y" * limit}
    response = api.client.post(SCORE, json=body, headers=api.headers(Role.ENGINE))
    assert response.status_code == 413


def test_customer_ids_and_ips_never_reach_info_logs(
    start_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = start_api(models=ModelSettings(name_prefix="nobody-"))  # warnings logged too
    headers = api.headers(Role.ENGINE)
    body = claim_body(customer_id="C-secret-42", ip="192.0.2.77", cashback_amount=70.0)
    _score(api, body, headers)
    api.client.post(SCORE, json=body | {"ip": "nope-192.0.2.77"}, headers=headers)
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "C-secret-42" not in text
    assert "192.0.2.77" not in text
