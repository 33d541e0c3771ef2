"""Request and response bodies of the offers endpoints (pydantic), with their examples."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from cashback.vocab import Channel
from serving.schemas import Identifier

BATCH_LIMIT = 1000

OFFER_REQUEST_EXAMPLE: dict[str, JsonValue] = {
    "customer_id": "C00000042",
    "context": {"category": "electronics", "channel": "app", "ts": "2026-03-02T14:05:00Z"},
}


class OfferSource(StrEnum):
    """Which rule gave the offer (DESIGN.md's precedence, then the fallbacks)."""

    HOLDOUT = "holdout"  # the global holdout: the default rate card
    EXPERIMENT = "experiment"  # an experiment's variant
    POLICY = "policy"  # the personalized policy's rate
    EXPLORATION = "exploration"  # a rate drawn at random (exploration share)
    COLD_START = "cold_start"  # a customer the feature store does not know: the rate card
    FALLBACK = "fallback"  # no policy model or feature store: the rate card


class OfferContext(BaseModel):
    """Where and when the offer will be shown."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(
        default=None, min_length=1, max_length=64, description="the category being browsed"
    )
    channel: Channel | None = None
    ts: AwareDatetime | None = Field(
        default=None, description="when the offer is shown, with its time zone (default: now)"
    )

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)


class OfferRequest(BaseModel):
    """Which offer and rate for this customer, now?"""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [OFFER_REQUEST_EXAMPLE]}
    )

    customer_id: Identifier
    context: OfferContext = Field(default_factory=OfferContext)


class OfferBatchRequest(BaseModel):
    """Up to 1,000 offer requests answered together."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"requests": [OFFER_REQUEST_EXAMPLE]}]}
    )

    requests: list[OfferRequest] = Field(min_length=1, max_length=BATCH_LIMIT)


class Tier(BaseModel):
    """A threshold (spend or visits) and the rate from it on."""

    threshold: float
    rate: float


class OfferInfo(BaseModel):
    """The catalog offer the rate applies through."""

    offer_id: str
    kind: str = Field(description="flat, tiered, category, seasonal or cumulative")
    payout: str = Field(description="immediate or deferred")
    category: str | None = None
    tiers: list[Tier] | None = None


class OfferResponse(BaseModel):
    """The customer's offer. Asking again before `valid_until` gets the same one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "decision_id": "5f0f2f0e-8a9c-4a54-9d8e-2a7d0b6f1c11",
                    "exposure_id": "0c9d3b1e-3f55-4c3a-8d53-6a1f1d2e9b70",
                    "customer_id": "C00000042",
                    "rate": 0.03,
                    "offer": {"offer_id": "flat-immediate", "kind": "flat", "payout": "immediate"},
                    "valid_from": "2026-03-02T14:05:00Z",
                    "valid_until": "2026-03-09T14:05:00Z",
                    "reasons": [
                        (
                            "3% rather than the default 1%: expected incremental margin 2.10 for "
                            "1.40 of cashback per 7-day offer"
                        ),
                    ],
                    "policy_version": "cashback-rates v4",
                    "experiment": None,
                    "variant": None,
                    "propensity": 0.9625,
                    "source": "policy",
                    "fallback": False,
                    "cold_start": False,
                }
            ]
        }
    )

    decision_id: str = Field(description="leads to the inputs and versions: GET /v1/decisions")
    exposure_id: str
    customer_id: str
    rate: float = Field(description="the cashback rate, e.g. 0.03 for 3 %")
    offer: OfferInfo
    valid_from: datetime
    valid_until: datetime
    reasons: list[str] = Field(description="why this rate, in words")
    policy_version: str
    experiment: str | None = Field(description="the experiment's key when the customer is in one")
    variant: str | None
    propensity: float = Field(description="probability that this rate was given here")
    source: OfferSource
    fallback: bool = Field(description="true when the policy model or the store was unavailable")
    cold_start: bool = Field(description="true for a customer the feature store does not know")


class OfferBatchResponse(BaseModel):
    """The answers, in the order of the requests."""

    results: list[OfferResponse]
