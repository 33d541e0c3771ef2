"""GET /v1/decisions/{decision_id}: what is behind any decision the API gave.

Roles: engine, risk (and admin). The engine reads back the decisions it was given (to audit
or dispute one), risk analysts read any claim they review. Decision ids are random UUIDs
handed only to the caller that got the decision, so an engine key may read any decision
by id: a key rotated since does not hide the engine's past decisions. Marketers do not
read decisions: they hold customers' claims and features.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from serving.decisions import DecisionRecord, decision_policy, find_decision
from serving.deps import DecisionReaderKey, SessionDep, SettingsDep
from serving.schemas import ErrorResponse, ValidationErrorResponse

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])

DECISION_EXAMPLE: dict[str, Any] = {
    "kind": "claim",
    "decision_id": "6f1c3a52-8d0e-4e7b-9a43-2b1f0c9d7e15",
    "created_at": "2026-03-02T14:05:00.412000Z",
    "inputs": {
        "claim_id": "CL-2026-000123",
        "customer_id": "C00000042",
        "txn_id": "T000981234",
        "amount": 129.9,
        "cashback_amount": 3.9,
        "payout_method": "wallet",
        "device_id": "D7f3a91",
        "ip_hash": "9c1e4b7a2f0d8e63",
        "receipt_hash": "r-5be0c1",
        "ts": "2026-03-02T14:05:00Z",
    },
    "features": {"tenure_days": 412, "customer_claims_1h": 1, "device_customers_30d": 1},
    "model_version": "3",
    "policy_version": None,
    "policy": {"thresholds": {"review_expected_loss": 2.5, "block_probability": 0.93}},
    "answer": {
        "risk_score": 71.4,
        "probability": 0.714,
        "decision": "review",
        "abuse_type": None,
        "rule_hits": ["shared_device"],
        "reasons": None,
    },
    "fallback": False,
    "api_key_id": 4,
}


class DecisionResponse(BaseModel):
    """A decision as it was made: inputs, features, model and policy versions, the answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [DECISION_EXAMPLE]})

    kind: str = Field(description="claim or offer")
    decision_id: str
    created_at: datetime = Field(description="when the decision was made (UTC)")
    inputs: dict[str, Any] = Field(
        description="the request as stored: a claim's fields, its IP only as a keyed hash"
    )
    features: dict[str, Any] | None = Field(
        description="the features the decision was made with (null in a fallback)"
    )
    model_version: str | None = Field(
        description="the registered model version that decided (cashback-fraud for a claim; "
        "null in a fallback)"
    )
    policy_version: str | None = Field(description="the policy version (null for a claim)")
    policy: dict[str, Any] = Field(
        description="the policy behind it: for a claim, the model version's thresholds "
        "(null when the registry cannot be read)"
    )
    answer: dict[str, Any] = Field(description="what the caller was told")
    fallback: bool = Field(description="the safe answer, given without a model")
    api_key_id: int | None = Field(description="the id of the key that asked for it")


def response_of(record: DecisionRecord, policy: dict[str, Any]) -> DecisionResponse:
    """The API's view of a found decision and its policy."""
    return DecisionResponse.model_validate(record.to_dict() | {"policy": record.policy | policy})


@router.get(
    "/{decision_id}",
    summary="the inputs, features, model and policy behind a decision",
    responses={
        401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
        403: {"model": ErrorResponse, "description": "the key's role may not read decisions"},
        404: {"model": ErrorResponse, "description": "no decision with this id"},
        422: {"model": ValidationErrorResponse, "description": "invalid decision id"},
    },
)
def get_decision(
    decision_id: Annotated[str, Path(min_length=1, max_length=128)],
    session: SessionDep,
    settings: SettingsDep,
    _principal: DecisionReaderKey,
) -> DecisionResponse:
    """A claim or offer decision by its decision_id, as it was made.

    The inputs never hold a raw IP. `cashback decisions replay ID` recomputes the decision
    with the model version that made it (an offer: with its exploration draw too) and says
    whether it matches.
    """
    record = find_decision(session, decision_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no decision with id {decision_id!r}")
    return response_of(record, decision_policy(settings, record))
