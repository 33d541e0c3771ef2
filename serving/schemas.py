"""Request and response bodies of the API (pydantic), with the examples /docs shows."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from cashback.vocab import AbuseType, PayoutMethod
from models.fraud.decisions import Decision

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
MAX_ROW_ID = 2**63 - 1  # a row id is a signed 64-bit integer on every app database
RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
Money = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]

CLAIM_EXAMPLE: dict[str, JsonValue] = {
    "claim_id": "CL-2026-000123",
    "customer_id": "C00000042",
    "txn_id": "T000981234",
    "amount": 129.90,
    "cashback_amount": 3.90,
    "payout_method": "wallet",
    "device_id": "D7f3a91",
    "ip": "203.0.113.7",
    "receipt_hash": "r-5be0c1",
    "ts": "2026-03-02T14:05:00Z",
}


class ClaimScoreRequest(BaseModel):
    """A cashback claim to score, as the cashback engine sends it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [CLAIM_EXAMPLE]})

    claim_id: Identifier = Field(description="the engine's id of the claim (idempotency key)")
    customer_id: Identifier
    txn_id: Identifier = Field(description="the transaction the cashback is claimed for")
    amount: Money = Field(description="the transaction amount, two decimals")
    cashback_amount: Money = Field(description="the cashback claimed, two decimals")
    payout_method: PayoutMethod
    device_id: Identifier | None = None
    ip: str | None = Field(
        default=None,
        max_length=64,
        description="the customer's IP (v4 or v6): hashed on arrival, never stored",
    )
    receipt_hash: Identifier | None = None
    ts: AwareDatetime = Field(description="when the claim was made, with its time zone")

    @field_validator("amount", "cashback_amount")
    @classmethod
    def _two_decimals(cls, value: float) -> float:
        if not math.isclose(value * 100, round(value * 100), abs_tol=1e-6):
            msg = "money has at most two decimals"
            raise ValueError(msg)
        return round(value, 2)

    @field_validator("ip")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ip_address(value.strip()))
        except ValueError:
            msg = "not an IPv4 or IPv6 address"  # the value itself is never echoed
            raise ValueError(msg) from None

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class ClaimScoreResponse(BaseModel):
    """The decision on a claim. A retry of the same claim_id gets the same answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "claim_id": "CL-2026-000123",
                    "decision_id": "6f1c3a52-8d0e-4e7b-9a43-2b1f0c9d7e15",
                    "risk_score": 71.4,
                    "decision": "review",
                    "abuse_type": None,
                    "rule_hits": ["shared_device"],
                    "reasons": None,
                    "model_version": "3",
                    "fallback": False,
                }
            ]
        }
    )

    claim_id: str
    decision_id: str = Field(description="leads back to the inputs, features and model used")
    risk_score: float | None = Field(
        description="fraud probability in percent, 0-100 (null in a fallback)", ge=0, le=100
    )
    decision: Decision
    abuse_type: AbuseType | None = Field(
        description="the kind of abuse the model sees: given with ?explain=true; otherwise "
        "it comes with the reasons on the review case, within a second"
    )
    rule_hits: list[str] = Field(description="the fraud rules the claim hit")
    reasons: list[str] | None = Field(
        description="why, in words: with ?explain=true, or 'model unavailable' in a fallback"
    )
    model_version: str | None = Field(description="the fraud model's version (null in a fallback)")
    fallback: bool = Field(
        description="true when the model or the feature store was unavailable: the claim "
        "goes to review"
    )


class FieldError(BaseModel):
    """One invalid field."""

    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """The request's invalid fields (the values sent are not echoed)."""

    detail: list[FieldError]


class ErrorResponse(BaseModel):
    """An error in words."""

    detail: str


class Health(BaseModel):
    """The process is up."""

    status: str = "ok"


class Readiness(BaseModel):
    """Whether the API can answer with its models, and what is missing when it cannot."""

    status: str = Field(description="ready or not ready")
    loaded: dict[str, str] = Field(description="component -> what is loaded")
    missing: dict[str, str] = Field(description="component -> why it is missing")
