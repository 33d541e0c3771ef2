"""Request and response models of the review workflow and the payout feed."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cashback.vocab import AbuseType, ReviewDecision
from serving.schemas import RowId

CLIENT_ID = Field(
    min_length=1,
    max_length=128,
    description="the caller's id for this decision: a retry with the same id and content "
    "gets the stored answer, other content under the same id gets 409",
)
NOTE = Field(default=None, max_length=2000, description="why, in the analyst's words")
ABUSE_TYPE = Field(
    default=None,
    description="fraud decisions (reject, partial, clawback) only: the kind of abuse the "
    "analyst confirms; it becomes the fraud label's abuse type",
)


class QueueSort(StrEnum):
    """Orders of the review queue."""

    EXPECTED_LOSS = "expected_loss"  # probability x cashback amount, highest first
    SCORE = "score"  # risk score, highest first
    AGE = "age"  # oldest case first


class CaseItem(BaseModel):
    """A review case in the queue."""

    case_id: int
    status: str = Field(description="open, held (payout held, awaiting a final decision), decided")
    reason: str = Field(description="flagged (review or block) or audit (random sample)")
    opened_at: datetime
    decided_at: datetime | None
    claim_id: str
    customer_id: str
    amount: float
    cashback_amount: float
    risk_score: float | None
    probability: float | None
    decision: str = Field(description="the scoring decision: allow, review or block")
    rule_hits: list[str]
    abuse_type: str | None
    reasons: list[str] | None = Field(description="null until computed (within a second)")
    expected_loss: float = Field(description="probability (1 without a model) x cashback")
    locked_by: str | None = Field(description="the analyst holding the case now, if any")
    locked_until: datetime | None


class QueuePage(BaseModel):
    """A page of the review queue."""

    items: list[CaseItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: end")


class Norm(BaseModel):
    """One of the claim's features beside the customer's own norm."""

    feature: str
    description: str
    value: float
    norm: float
    ratio: float | None = Field(description="value / norm (null when the norm is 0)")


class CaseDecisionView(BaseModel):
    """A stored decision on a case."""

    id: int
    case_id: int
    decision: str
    amount: float | None
    label: str | None = Field(description="fraud or legit; null for a hold")
    abuse_type: str | None = Field(description="the abuse the analyst confirmed, if given")
    note: str | None
    analyst: str
    decided_at: datetime


class CaseDetail(BaseModel):
    """A review case in full."""

    case: CaseItem
    claim: dict[str, Any] = Field(description="the claim as stored (IP only as a keyed hash)")
    scoring: dict[str, Any] = Field(
        description="the scoring decision: decision_id, score, probability, decision, rule "
        "hits, model version, fallback"
    )
    features: dict[str, Any] | None
    norms: list[Norm]
    review_decisions: list[CaseDecisionView]
    history: dict[str, Any] = Field(
        description="`claims`: the customer's claims in the app database with their cases "
        "and review decisions (newest first); `transactions`: purchases and returns from the "
        "contract tables (null when they are not there)"
    )
    linked_accounts: list[dict[str, Any]] = Field(
        description="other customers sharing the claim's device, IP hash or receipt hash: "
        "`customer_id`, `linked_by`, `claims`"
    )


class CaseLock(BaseModel):
    """Who holds a case, until when."""

    case_id: int
    status: str
    locked_by: str | None
    locked_until: datetime | None


class DecisionRequestBody(BaseModel):
    """An analyst's decision on one case."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "decision": "partial",
                    "amount": 2.5,
                    "abuse_type": "receipt_reuse",
                    "note": "second claim on the same receipt; first one paid",
                    "client_decision_id": "rv-2026-03-02-0041",
                }
            ]
        },
    )

    decision: ReviewDecision
    amount: float | None = Field(
        default=None,
        description="partial only: the cashback approved, 0 < amount <= the claim's cashback",
    )
    abuse_type: AbuseType | None = ABUSE_TYPE
    note: str | None = NOTE
    client_decision_id: str = CLIENT_ID


class BulkDecisionBody(BaseModel):
    """One decision on several cases (a ring's linked claims), all or nothing."""

    model_config = ConfigDict(extra="forbid")

    case_ids: list[RowId] = Field(min_length=1, max_length=200)
    decision: ReviewDecision = Field(description="any decision but partial")
    abuse_type: AbuseType | None = ABUSE_TYPE
    note: str | None = NOTE
    client_decision_id: str = CLIENT_ID


class PayoutEntryRef(BaseModel):
    """An entry a decision added to the payout feed."""

    sequence: int
    action: str = Field(description="hold, release or clawback")
    amount: float


class DecisionResponse(BaseModel):
    """A stored decision on a case, with the payout feed's entries it added."""

    client_decision_id: str
    id: int = Field(description="the decision's id")
    case_id: int
    claim_id: str
    decision: str
    amount: float | None
    label: str | None = Field(description="the label it implies: fraud, legit; null for hold")
    abuse_type: str | None = Field(description="the abuse the analyst confirmed, if given")
    note: str | None
    analyst: str
    decided_at: datetime
    status: str = Field(description="the case's status after it: held or decided")
    payouts: list[PayoutEntryRef]


class BulkDecisionResponse(BaseModel):
    """The decisions stored by a bulk request, in case id order."""

    client_decision_id: str
    decisions: list[DecisionResponse]


class DayStats(BaseModel):
    """The review workflow on one UTC day."""

    day: date
    opened_flagged: int
    opened_audit: int
    decided: int = Field(description="final decisions (approve, reject, partial, clawback)")
    held: int = Field(description="holds")
    fraud_share: float | None = Field(description="final decisions labelled fraud / decided")
    audit_decided: int
    audit_fraud_rate: float | None = Field(
        description="fraud share among the audit sample's final decisions"
    )
    cashback_saved: float = Field(
        description="cashback of rejects and clawbacks, plus the withheld part of partials"
    )
    median_hours_to_decision: float | None = Field(
        description="median hours from opening to the final decision"
    )


class ReviewStats(BaseModel):
    """The review workflow per day, oldest first."""

    days: list[DayStats]


class PayoutEntry(BaseModel):
    """An entry of the payout feed."""

    sequence: int = Field(description="1, 2, 3, ... without gaps, in commit order")
    claim_id: str
    action: str = Field(description="hold, release or clawback")
    amount: float
    decided_at: datetime


class PayoutFeed(BaseModel):
    """Entries after the cursor, in order."""

    entries: list[PayoutEntry]
    next_cursor: str = Field(
        description="the last entry's sequence (the cursor given when there is none): pass "
        "it as `after` next time"
    )
