"""The app database's tables (SQLAlchemy 2 typed ORM).

- `api_keys`: API keys, stored as SHA-256 hashes (the key itself is shown once), with a role.
- `claim_decisions`: one row per scored claim (unique `claim_id`): the request without the
  raw IP (only its keyed hash), the features, the score, the decision and the model version.
  A row is never changed once written: it is what the engine was told.
- `review_cases`: a claim sent to review or blocked (`flagged`), or an allowed claim drawn
  for the random audit (`audit`); reasons are filled in off the request path.
- `offer_decisions`: the exposures (DESIGN.md): the offer and rate each customer was shown,
  from when until when, why, its propensity, the policy version, the experiment and
  variant, and the features used.
- `review_requests`, `review_decisions`: the risk team's decisions on review cases (one
  request, idempotent on its client_decision_id, decides one case or a ring of them), with
  the analyst, the time and the note: the audit trail of the review workflow.
- `payout_decisions`: the payout feed the cashback engine polls (hold, release, clawback),
  numbered without gaps in commit order (see `serving.payouts`).

Migrations live in `serving/alembic/versions/`; change both together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 128
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive times; store UTC (naive on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"naive datetime {value.isoformat()}: expected an aware UTC time"
            raise ValueError(msg)
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002
    ) -> datetime | None:
        """Aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CaseReason(StrEnum):
    """Why a review case was opened."""

    FLAGGED = "flagged"  # the claim was sent to review or blocked
    AUDIT = "audit"  # an allowed claim drawn for the random audit sample


class CaseStatus(StrEnum):
    """Where a review case stands."""

    OPEN = "open"
    HELD = "held"  # an analyst held its payout; it still awaits a final decision
    DECIDED = "decided"  # approved, rejected, partly approved or clawed back: closed


def utc_now() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base of the app database's tables."""


class ApiKey(Base):
    """An API key: its hash, a display prefix, a role; revoked keys stay for the audit trail."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ClaimDecision(Base):
    """A scored claim: inputs (no raw IP), features, score, decision, model version."""

    __tablename__ = "claim_decisions"
    __table_args__ = (  # the review workflow looks claims up by customer and shared ids
        Index("ix_claim_decisions_customer_id", "customer_id"),
        Index("ix_claim_decisions_device_id", "device_id"),
        Index("ix_claim_decisions_ip_hash", "ip_hash"),
        Index("ix_claim_decisions_receipt_hash", "receipt_hash"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(36), unique=True)
    claim_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    customer_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    txn_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    amount: Mapped[float] = mapped_column(Float())
    cashback_amount: Mapped[float] = mapped_column(Float())
    payout_method: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    ip_hash: Mapped[str | None] = mapped_column(String(32))
    receipt_hash: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    risk_score: Mapped[float | None] = mapped_column(Float())
    probability: Mapped[float | None] = mapped_column(Float())
    decision: Mapped[str] = mapped_column(String(8))
    abuse_type: Mapped[str | None] = mapped_column(String(32))
    rule_hits: Mapped[list[str]] = mapped_column(JSONType)
    reasons: Mapped[list[str] | None] = mapped_column(JSONType)
    model_version: Mapped[str | None] = mapped_column(String(32))
    fallback: Mapped[bool] = mapped_column(Boolean())
    features: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    api_key_id: Mapped[int | None] = mapped_column(BigInteger(), ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ReviewCase(Base):
    """A claim for the risk team: flagged by the model or the rules, or drawn for audit."""

    __tablename__ = "review_cases"
    __table_args__ = (Index("ix_review_cases_status_opened", "status", "opened_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    claim_decision_id: Mapped[int] = mapped_column(
        BigInteger(), ForeignKey("claim_decisions.id"), unique=True
    )
    reason: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reasons: Mapped[list[str] | None] = mapped_column(JSONType, default=None)
    abuse_type: Mapped[str | None] = mapped_column(String(32), default=None)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    explained_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # the analyst working on it (a key's name and id) until locked_until (see serving.reviews)
    locked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    locked_by_key_id: Mapped[int | None] = mapped_column(BigInteger(), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OfferDecision(Base):
    """An exposure: one offer shown to one customer from `ts` to `valid_until`.

    A customer's exposures are numbered (`sequence`, unique per customer): a new one is
    stored only when none is valid, so two concurrent requests cannot both open one.
    """

    __tablename__ = "offer_decisions"
    __table_args__ = (
        UniqueConstraint("customer_id", "sequence", name="uq_offer_decisions_customer_sequence"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(36), unique=True)
    exposure_id: Mapped[str] = mapped_column(String(36), unique=True)
    customer_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    sequence: Mapped[int] = mapped_column(Integer())
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())
    offer_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    offer_kind: Mapped[str] = mapped_column(String(16))
    payout: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(64))
    rate: Mapped[float] = mapped_column(Float())
    policy_version: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    experiment_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    variant: Mapped[str | None] = mapped_column(String(64))
    propensity: Mapped[float] = mapped_column(Float())
    source: Mapped[str] = mapped_column(String(16))
    exploration_draw: Mapped[float | None] = mapped_column(Float())
    exploration_share: Mapped[float | None] = mapped_column(Float())
    reasons: Mapped[list[str]] = mapped_column(JSONType)
    features: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType)
    fallback: Mapped[bool] = mapped_column(Boolean())
    cold_start: Mapped[bool] = mapped_column(Boolean())
    api_key_id: Mapped[int | None] = mapped_column(BigInteger(), ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ReviewRequest(Base):
    """One decision request of an analyst (one case, or a ring's cases in bulk).

    `client_decision_id` is unique: a retry finds the stored request and its answer; the
    digest of its content tells a retry from another request reusing the id.
    """

    __tablename__ = "review_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_decision_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    analyst: Mapped[str] = mapped_column(String(100))
    api_key_id: Mapped[int | None] = mapped_column(BigInteger(), ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class CaseDecision(Base):
    """An analyst's decision on one review case: what, how much, why, who and when."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        Index("ix_review_decisions_case_id", "case_id"),
        Index("ix_review_decisions_decided_at", "decided_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(BigInteger(), ForeignKey("review_requests.id"))
    case_id: Mapped[int] = mapped_column(BigInteger(), ForeignKey("review_cases.id"))
    decision: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float | None] = mapped_column(Float())
    label: Mapped[str | None] = mapped_column(String(8))
    # the kind of abuse the analyst confirms with a fraud decision (the label's abuse_type)
    abuse_type: Mapped[str | None] = mapped_column(String(32), default=None)
    note: Mapped[str | None] = mapped_column(String(2000))
    analyst: Mapped[str] = mapped_column(String(100))
    api_key_id: Mapped[int | None] = mapped_column(BigInteger(), ForeignKey("api_keys.id"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PayoutDecision(Base):
    """An entry of the payout feed: hold, release or claw back a claim's cashback.

    `sequence` is 1, 2, 3, ... in commit order (`serving.payouts`), never reused.
    """

    __tablename__ = "payout_decisions"

    sequence: Mapped[int] = mapped_column(BigInteger(), primary_key=True, autoincrement=False)
    review_decision_id: Mapped[int] = mapped_column(BigInteger(), ForeignKey("review_decisions.id"))
    claim_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    action: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float] = mapped_column(Float())
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
