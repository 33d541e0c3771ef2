"""GET /v1/customers/{customer_id}/insights: what the models say about one customer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, Field

from cashback.vocab import Role
from serving.auth import Principal
from serving.deps import StateDep, require
from serving.offers import RATE_CARD, percent, policy_version
from serving.schemas import ErrorResponse
from serving.state import AppState

router = APIRouter(prefix="/v1/customers", tags=["customers"])
InsightsKey = Annotated[Principal, Depends(require(Role.ENGINE, Role.MARKETER))]
NO_SCORES = "no customer scores online: run `cashback customers score`, then materialize"


class CustomerInsights(BaseModel):
    """The champions' view of a customer, as of the feature store's latest close."""

    customer_id: str
    segment: str | None = Field(description="the behaviour segment (or lifecycle stage)")
    lifecycle: str | None = Field(description="new, regular, at_risk or inactive")
    churn_probability: float | None = Field(description="probability of no purchase ahead")
    clv: float | None = Field(description="expected spend over the value horizon")
    next_purchase_days: float | None = Field(description="expected days to the next purchase")
    recommended_rate: float = Field(description="the policy's rate now (no exposure is made)")
    rate_reasons: list[str]
    policy_version: str
    notes: list[str] = Field(description="what is missing and why, when something is")


def _scores(state: AppState, customer_id: str) -> tuple[dict[str, Any], bool, list[str]]:
    """The customer's stored scores and lifecycle, whether the store knows them, notes."""
    readers = state.runtime.customers
    if readers is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the feature store is not loaded")
    reader = readers.scores or readers.rates
    result = reader.read([customer_id])
    row = {name: values[0] for name, values in result.features.items()}
    notes = [] if readers.scores is not None else [NO_SCORES]
    return row, not result.missing[0], notes


@router.get(
    "/{customer_id}/insights",
    summary="segment, lifecycle, churn, value and recommended rate of a customer",
    responses={
        401: {"model": ErrorResponse, "description": "no key, or an unknown or revoked one"},
        403: {"model": ErrorResponse, "description": "the key's role may not read insights"},
        404: {"model": ErrorResponse, "description": "a customer the feature store lacks"},
        503: {"model": ErrorResponse, "description": "the feature store is not loaded"},
    },
)
def insights(
    state: StateDep,
    _principal: InsightsKey,
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> CustomerInsights:
    """The customer's segment, lifecycle stage, churn probability, CLV and policy rate.

    Read from the online store (`customers_v1`: the scores `cashback customers score`
    wrote) and priced by the rates champion without making an exposure; without the model
    the rate is the segment's rate card cell, and `notes` says so.
    """
    row, known, notes = _scores(state, customer_id)
    if not known:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "the feature store has no such customer (not yet seen?)"
        )
    segment = row.get("segment") or row.get("lifecycle")
    priced = state.offers.policy_rate(customer_id)
    if priced is None:
        rate, where = state.offers.card_rate(segment, None)
        reasons, version = [f"{percent(rate)} from the {where}"], RATE_CARD
        notes.append("no rates model: the rate card's rate")
    else:
        rate, reasons, model_version = priced
        version = policy_version(model_version)
    return CustomerInsights(
        customer_id=customer_id,
        segment=segment,
        lifecycle=row.get("lifecycle"),
        churn_probability=row.get("churn_probability"),
        clv=row.get("clv"),
        next_purchase_days=row.get("next_purchase_days"),
        recommended_rate=rate,
        rate_reasons=reasons,
        policy_version=version,
        notes=notes,
    )
