"""Fixed vocabularies of the data contract: one enum each, used everywhere."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """Where an order was placed."""

    ONLINE = "online"
    STORE = "store"
    APP = "app"


class OfferKind(StrEnum):
    """How an offer computes its cashback."""

    FLAT = "flat"
    TIERED = "tiered"
    CATEGORY = "category"
    SEASONAL = "seasonal"
    CUMULATIVE = "cumulative"


class Payout(StrEnum):
    """When cashback is paid: at once, or after a validation period."""

    IMMEDIATE = "immediate"
    DEFERRED = "deferred"


class PayoutMethod(StrEnum):
    """Where cashback is paid."""

    BANK_TRANSFER = "bank_transfer"
    STORE_CREDIT = "store_credit"
    WALLET = "wallet"
    CARD_STATEMENT = "card_statement"
    POINTS = "points"


class Lifecycle(StrEnum):
    """Lifecycle stage of a customer."""

    NEW = "new"
    REGULAR = "regular"
    AT_RISK = "at_risk"
    INACTIVE = "inactive"


class AbuseType(StrEnum):
    """Kinds of cashback fraud and abuse."""

    MULTI_ACCOUNT = "multi_account"
    RECEIPT_REUSE = "receipt_reuse"
    CLAIM_THEN_RETURN = "claim_then_return"
    VELOCITY = "velocity"
    NEW_ACCOUNT = "new_account"
    OTHER = "other"


class Label(StrEnum):
    """Outcome of a claim once known."""

    FRAUD = "fraud"
    LEGIT = "legit"


class LabelSource(StrEnum):
    """Where a label came from (rule hits are never labels)."""

    CHARGEBACK = "chargeback"
    REVIEW = "review"
    AUDIT = "audit"


class ReviewDecision(StrEnum):
    """A risk analyst's decision on a claim."""

    APPROVE = "approve"
    REJECT = "reject"
    PARTIAL = "partial"
    CLAWBACK = "clawback"
    HOLD = "hold"

    def label(self) -> Label | None:
        """The label this decision implies (hold implies none yet)."""
        return {
            ReviewDecision.APPROVE: Label.LEGIT,
            ReviewDecision.REJECT: Label.FRAUD,
            ReviewDecision.PARTIAL: Label.FRAUD,
            ReviewDecision.CLAWBACK: Label.FRAUD,
            ReviewDecision.HOLD: None,
        }[self]


class ExperimentStatus(StrEnum):
    """Life of an experiment."""

    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"
    COMPLETED = "completed"


class ExperimentMetric(StrEnum):
    """Metrics an experiment may name as primary or guardrail (computed per customer)."""

    PARTICIPATION_RATE = "participation_rate"
    RETENTION_7D = "retention_7d"
    RETENTION_30D = "retention_30d"
    PURCHASES_PER_CUSTOMER = "purchases_per_customer"
    SPEND_PER_CUSTOMER = "spend_per_customer"
    AVERAGE_ORDER_VALUE = "average_order_value"
    CASHBACK_PAID = "cashback_paid"
    NET_INCREMENTAL_MARGIN = "net_incremental_margin"
    FRAUD_LOSS = "fraud_loss"


class Role(StrEnum):
    """Who an API key belongs to (the serving API's roles)."""

    ENGINE = "engine"  # the cashback engine: offers, claim scores
    MARKETER = "marketer"  # experiments, customer insights
    RISK = "risk"  # the review queue
    ADMIN = "admin"  # everything
