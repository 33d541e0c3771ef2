"""Review cases to work on in the API tests: flagged and audit claims, decisions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from cashback.vocab import Role
from serving.tables import CaseDecision, ClaimDecision, PayoutDecision, ReviewCase, ReviewRequest
from tests.serving.helpers import claim_body

REVIEWS = "/v1/reviews"
FEED = "/v1/payouts/decisions"


def open_case(api: Any, headers: dict[str, str] | None = None, **changes: Any) -> int:
    """Score a claim big enough to be flagged (the big_cashback rule): its case's id."""
    body = claim_body(**({"cashback_amount": 51.0, "amount": 3000.0} | changes))
    response = api.client.post(
        "/v1/claims/score", json=body, headers=headers or api.headers(Role.ENGINE)
    )
    assert response.status_code == 200, response.text
    case_id = case_of(api, body["claim_id"])
    assert case_id is not None, response.json()
    return case_id


def case_of(api: Any, claim_id: str) -> int | None:
    """The id of a claim's review case (None without one)."""
    with api.state.db.session() as session:
        found: int | None = session.scalar(
            select(ReviewCase.id)
            .join(ClaimDecision, ClaimDecision.id == ReviewCase.claim_decision_id)
            .where(ClaimDecision.claim_id == claim_id)
        )
        return found


def decision(kind: str = "approve", **changes: Any) -> dict[str, Any]:
    """A decision's body with a fresh client_decision_id."""
    return {"decision": kind, "client_decision_id": f"rv-{uuid.uuid4().hex[:12]}"} | changes


def written(api: Any) -> tuple[int, int, int]:
    """How many review requests, decisions and payout entries are stored."""
    with api.state.db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (ReviewRequest, CaseDecision, PayoutDecision)
        )
