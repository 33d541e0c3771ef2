"""Reading review cases: the queue, one case in full, and the review statistics per day.

**Queue order.** By expected loss (probability x cashback amount, highest first; a claim
scored without a model counts as probability 1), by risk score (highest first; none counts
as 100) or by age (oldest first); ties by case id. The cursor is opaque to callers: the last
case's sort key and id, so a page starts strictly after it, and cases opened meanwhile never
shift a page (keyset pagination: no duplicates, no gaps).

**A case in full.** The claim, its scoring decision and rule hits, the reasons, the features
beside the customer's own norm (`norms`), the customer's history (claims and review outcomes
in the app database; purchases and returns from the contract's transactions table under
`data_dir`, when it is there) and the accounts linked by the claim's device, IP hash or
receipt hash, with their claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, cast

import polars as pl
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
)

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import read_table
from cashback.vocab import Label, ReviewDecision
from serving.review_schemas import QueueSort
from serving.reviews import lock_state
from serving.tables import (
    CaseDecision,
    CaseReason,
    CaseStatus,
    ClaimDecision,
    ReviewCase,
    utc_now,
)

logger = logging.getLogger(__name__)

CASES = cast(Table, ReviewCase.__table__)
CLAIMS = cast(Table, ClaimDecision.__table__)
DECISIONS = cast(Table, CaseDecision.__table__)
EXPECTED_LOSS = (func.coalesce(CLAIMS.c.probability, 1.0) * CLAIMS.c.cashback_amount).label(
    "expected_loss"
)
SCORE = func.coalesce(CLAIMS.c.risk_score, 100.0)
ABUSE_TYPE = func.coalesce(CASES.c.abuse_type, CLAIMS.c.abuse_type)
# sort -> (key, descending)
SORT_KEYS: Final[dict[QueueSort, tuple[ColumnElement[Any], bool]]] = {
    QueueSort.EXPECTED_LOSS: (EXPECTED_LOSS, True),
    QueueSort.SCORE: (SCORE, True),
    QueueSort.AGE: (CASES.c.opened_at, False),
}
CASE_COLUMNS = (
    CASES.c.id.label("case_id"),
    CASES.c.status,
    CASES.c.reason,
    CASES.c.opened_at,
    CASES.c.decided_at,
    CASES.c.locked_by,
    CASES.c.locked_by_key_id,
    CASES.c.locked_until,
    CASES.c.reasons.label("case_reasons"),
    ABUSE_TYPE.label("abuse_type"),
    CLAIMS.c.id.label("claim_decision_id"),
    CLAIMS.c.claim_id,
    CLAIMS.c.customer_id,
    CLAIMS.c.amount,
    CLAIMS.c.cashback_amount,
    CLAIMS.c.risk_score,
    CLAIMS.c.probability,
    CLAIMS.c.decision,
    CLAIMS.c.rule_hits,
    CLAIMS.c.reasons.label("claim_reasons"),
    EXPECTED_LOSS,
)
QUEUE = select(*CASE_COLUMNS).join(CLAIMS, CLAIMS.c.id == CASES.c.claim_decision_id)
CLAIM_WITH_CASE = select(
    CLAIMS.c.id,
    CLAIMS.c.claim_id,
    CLAIMS.c.customer_id,
    CLAIMS.c.ts,
    CLAIMS.c.amount,
    CLAIMS.c.cashback_amount,
    CLAIMS.c.risk_score,
    CLAIMS.c.decision,
    CLAIMS.c.device_id,
    CLAIMS.c.ip_hash,
    CLAIMS.c.receipt_hash,
    CASES.c.id.label("case_id"),
    CASES.c.status.label("case_status"),
).outerjoin(CASES, CASES.c.claim_decision_id == CLAIMS.c.id)
HISTORY_LIMIT: Final = 100
LINKED_LIMIT: Final = 50
LINKS: Final = ("device_id", "ip_hash", "receipt_hash")
HOURS_90D: Final = 90 * 24


class CursorError(CashbackError):
    """A cursor this API did not give, or given for another order."""


@dataclass(frozen=True)
class QueueFilters:
    """What the queue shows."""

    statuses: tuple[CaseStatus, ...] = (CaseStatus.OPEN, CaseStatus.HELD)
    min_score: float | None = None
    abuse_type: str | None = None
    reason: str | None = None
    opened_after: datetime | None = None
    max_age_hours: float | None = None


def encode_cursor(sort: QueueSort, row: Mapping[str, Any]) -> str:
    """The cursor after this row (its sort key and id, base64 of JSON)."""
    key = row["opened_at"].isoformat() if sort is QueueSort.AGE else _sort_value(sort, row)
    raw = json.dumps({"sort": sort.value, "key": key, "id": row["case_id"]})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _sort_value(sort: QueueSort, row: Mapping[str, Any]) -> float:
    if sort is QueueSort.EXPECTED_LOSS:
        return float(row["expected_loss"])
    score = row["risk_score"]
    return 100.0 if score is None else float(score)


def decode_cursor(cursor: str, sort: QueueSort) -> tuple[Any, int]:
    """The sort key and case id in a cursor.

    Raises:
        CursorError: not a cursor of this API, or made for another order.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        content = json.loads(raw)
        key, case_id = content["key"], int(content["id"])
        if content["sort"] != sort.value:
            msg = f"this cursor is for the order {content['sort']!r}, not {sort.value!r}"
            raise CursorError(msg)
        value = datetime.fromisoformat(key) if sort is QueueSort.AGE else float(key)
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        msg = "invalid cursor: pass back the next_cursor of a previous page"
        raise CursorError(msg) from error
    return value, case_id


def queue(
    engine: Engine,
    filters: QueueFilters,
    sort: QueueSort,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the queue and the cursor of the next one (None at the end).

    Raises:
        CursorError: an invalid cursor.
    """
    key, descending = SORT_KEYS[sort]
    conditions: list[ColumnElement[bool]] = [
        CASES.c.status.in_([s.value for s in filters.statuses])
    ]
    if filters.min_score is not None:
        conditions.append(bindparam("min_score", filters.min_score) <= SCORE)
    if filters.abuse_type is not None:
        conditions.append(bindparam("abuse_type", filters.abuse_type) == ABUSE_TYPE)
    if filters.reason is not None:
        conditions.append(CASES.c.reason == filters.reason)
    if filters.opened_after is not None:
        conditions.append(CASES.c.opened_at >= filters.opened_after)
    if filters.max_age_hours is not None:
        conditions.append(CASES.c.opened_at >= utc_now() - timedelta(hours=filters.max_age_hours))
    if cursor is not None:
        after, after_id = decode_cursor(cursor, sort)
        beyond = key < after if descending else key > after
        conditions.append(or_(beyond, and_(key == after, CASES.c.id > after_id)))
    order = key.desc() if descending else key.asc()
    statement = QUEUE.where(*conditions).order_by(order, CASES.c.id).limit(limit + 1)
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(statement).mappings()]
    page, more = rows[:limit], len(rows) > limit
    now = utc_now()
    items = [case_item(row, now) for row in page]
    return items, encode_cursor(sort, page[-1]) if more and page else None


def case_item(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A case as the queue shows it."""
    holder, until = lock_state(row, now)
    reasons = row["case_reasons"] if row["case_reasons"] is not None else row["claim_reasons"]
    return {
        k: row[k]
        for k in (
            "case_id", "status", "reason", "opened_at", "decided_at", "claim_id", "customer_id",
            "amount", "cashback_amount", "risk_score", "probability", "decision", "rule_hits",
            "abuse_type", "expected_loss",
        )
    } | {"reasons": reasons, "locked_by": holder, "locked_until": until}  # fmt: skip


# --------------------------------------------------------------------------- one case


def _earlier(count: float | None) -> float | None:
    """Claims in a window before this one, from a count that includes it."""
    return None if count is None else max(float(count) - 1, 0.0)


def norms(features: Mapping[str, Any] | None, claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claim beside the customer's own history, from the features it was scored with.

    Each comparison: what, the claim's value, the customer's norm and their ratio (null when
    the norm is 0). A comparison whose inputs are missing (a new customer, a fallback) is
    left out.
    """
    if not features:
        return []
    claims_90d = features.get("claims_90d")
    per_claim = None
    if claims_90d:
        cashback_90d = features.get("cashback_90d")
        per_claim = None if cashback_90d is None else cashback_90d / claims_90d
    candidates = [
        ("amount", "the amount vs the customer's average basket over 90 days",
         claim["amount"], features.get("avg_basket_90d")),
        ("cashback_amount", "the cashback vs the customer's average cashback per claim over 90d",
         claim["cashback_amount"], per_claim),
        # the feature counts the claim itself: its earlier claims in the hour are one fewer
        ("customer_claims_1h", "earlier claims in the last hour vs the hourly rate over 90d",
         _earlier(features.get("customer_claims_1h")),
         None if claims_90d is None else claims_90d / HOURS_90D),
        ("minutes_since_last_claim", "minutes since the previous claim vs the average gap",
         features.get("minutes_since_last_claim"),
         HOURS_90D * 60 / claims_90d if claims_90d else None),
        ("cashback_share", "the cashback rate vs the customer's average rate over 365 days",
         features.get("cashback_share"), features.get("avg_rate_365d")),
    ]  # fmt: skip
    found = []
    for name, description, value, norm in candidates:
        if value is None or norm is None:
            continue
        ratio = float(value) / float(norm) if norm else None
        found.append(
            {
                "feature": name,
                "description": description,
                "value": float(value),
                "norm": float(norm),
                "ratio": ratio,
            }
        )
    return found


def _claims_with_outcomes(
    connection: Connection, condition: ColumnElement[bool], limit: int
) -> list[dict[str, Any]]:
    statement = CLAIM_WITH_CASE.where(condition).order_by(CLAIMS.c.ts.desc(), CLAIMS.c.id.desc())
    rows = [dict(r) for r in connection.execute(statement.limit(limit)).mappings()]
    case_ids = [r["case_id"] for r in rows if r["case_id"] is not None]
    outcomes: dict[int, list[dict[str, Any]]] = {}
    if case_ids:
        decisions = connection.execute(
            select(
                DECISIONS.c.case_id,
                DECISIONS.c.decision,
                DECISIONS.c.amount,
                DECISIONS.c.label,
                DECISIONS.c.analyst,
                DECISIONS.c.decided_at,
            )
            .where(DECISIONS.c.case_id.in_(case_ids))
            .order_by(DECISIONS.c.id)
        ).mappings()
        for d in decisions:
            outcomes.setdefault(d["case_id"], []).append(
                {k: d[k] for k in ("decision", "amount", "label", "analyst", "decided_at")}
            )
    for row in rows:
        row["review_decisions"] = outcomes.get(row["case_id"], [])
        del row["id"]
    return rows


def _linked(connection: Connection, claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Other customers whose claims share the claim's device, IP hash or receipt hash."""
    shared = [CLAIMS.c[k] == claim[k] for k in LINKS if claim[k] is not None]
    if not shared:
        return []
    others = CLAIMS.c.customer_id != claim["customer_id"]
    matches = connection.execute(
        select(CLAIMS.c.customer_id, *(CLAIMS.c[k] for k in LINKS))
        .where(others, or_(*shared))
        .order_by(CLAIMS.c.customer_id)
        .limit(10 * LINKED_LIMIT)
    ).mappings()
    via: dict[str, set[str]] = {}
    for match in matches:
        found = via.setdefault(match["customer_id"], set())
        found.update(k for k in LINKS if claim[k] is not None and match[k] == claim[k])
    customers = sorted(via)[:LINKED_LIMIT]
    if not customers:
        return []
    claims = _claims_with_outcomes(
        connection, CLAIMS.c.customer_id.in_(customers), LINKED_LIMIT * 20
    )
    return [
        {
            "customer_id": customer,
            "linked_by": sorted(via[customer]),
            "claims": [c for c in claims if c["customer_id"] == customer],
        }
        for customer in customers
    ]


def offline_history(settings: Settings, customer_id: str) -> dict[str, Any] | None:
    """The customer's purchases and returns from the contract's transactions table.

    None when the table is not there (or not readable); at most `HISTORY_LIMIT` of each,
    newest first, with their counts and totals.
    """
    try:
        frame = (
            read_table(settings.data_dir, "transactions")
            .filter(pl.col("customer_id") == customer_id)
            .select("txn_id", "ts", "amount", "category", "channel", "original_txn_id")
            .sort("ts", descending=True)
            .collect()
        )
    except (FileNotFoundError, CashbackError, pl.exceptions.PolarsError) as error:
        # the error's text may hold the query, and so the customer id: its kind only
        logger.warning("no readable transactions table for a review (%s)", type(error).__name__)
        return None
    purchases = frame.filter(pl.col("amount") > 0)
    returns = frame.filter(pl.col("amount") < 0)
    return {
        "purchases": purchases.head(HISTORY_LIMIT).to_dicts(),
        "purchase_count": purchases.height,
        "purchase_total": float(purchases["amount"].sum()),
        "returns": returns.head(HISTORY_LIMIT).to_dicts(),
        "return_count": returns.height,
        "return_total": abs(float(returns["amount"].sum())),  # returns are negative amounts
    }


def case_detail(engine: Engine, settings: Settings, case_id: int) -> dict[str, Any] | None:
    """Everything about one case (see the module doc), or None when there is no such case."""
    with engine.connect() as connection:
        row = connection.execute(QUEUE.where(CASES.c.id == case_id)).mappings().one_or_none()
        if row is None:
            return None
        claim = dict(
            connection.execute(select(CLAIMS).where(CLAIMS.c.id == row["claim_decision_id"]))
            .mappings()
            .one()
        )
        decisions = [
            dict(d)
            for d in connection.execute(
                select(DECISIONS).where(DECISIONS.c.case_id == case_id).order_by(DECISIONS.c.id)
            ).mappings()
        ]
        history = _claims_with_outcomes(
            connection, CLAIMS.c.customer_id == claim["customer_id"], HISTORY_LIMIT
        )
        linked = _linked(connection, claim)
    inputs = (
        "claim_id", "customer_id", "txn_id", "amount", "cashback_amount", "payout_method",
        "device_id", "ip_hash", "receipt_hash", "ts",
    )  # fmt: skip
    answer = (
        "decision_id", "risk_score", "probability", "decision", "rule_hits", "model_version",
        "fallback", "created_at",
    )  # fmt: skip
    return {
        "case": case_item(dict(row), utc_now()),
        "claim": {k: claim[k] for k in inputs},
        "scoring": {k: claim[k] for k in answer},
        "features": claim["features"],
        "norms": norms(claim["features"], claim),
        "review_decisions": decisions,
        "history": {
            "claims": history,
            "transactions": offline_history(settings, claim["customer_id"]),
        },
        "linked_accounts": linked,
    }


# --------------------------------------------------------------------------- statistics


@dataclass
class _Day:
    """One day's counts, as they are added up."""

    day: date
    opened: dict[str, int] = field(default_factory=dict)
    decided: int = 0
    held: int = 0
    fraud: int = 0
    audit_decided: int = 0
    audit_fraud: int = 0
    cashback_saved: float = 0.0
    hours: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The day's statistics."""
        return {
            "day": self.day,
            "opened_flagged": self.opened.get(CaseReason.FLAGGED.value, 0),
            "opened_audit": self.opened.get(CaseReason.AUDIT.value, 0),
            "decided": self.decided,
            "held": self.held,
            "fraud_share": self.fraud / self.decided if self.decided else None,
            "audit_decided": self.audit_decided,
            "audit_fraud_rate": self.audit_fraud / self.audit_decided
            if self.audit_decided
            else None,
            "cashback_saved": round(self.cashback_saved, 6),
            "median_hours_to_decision": statistics.median(self.hours) if self.hours else None,
        }


def review_stats(engine: Engine, days: int, today: date | None = None) -> list[dict[str, Any]]:
    """The review workflow per UTC day, the last `days` days up to today (oldest first).

    Per day: cases opened (flagged, audit); final decisions that day (holds apart); the share
    of them labelled fraud; the fraud share among decided audit cases; the cashback saved
    (the whole cashback of a reject or clawback, the withheld part of a partial); the median
    hours from a case's opening to its final decision.
    """
    last = today or utc_now().date()
    first = last - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    with engine.connect() as connection:
        opened = connection.execute(
            select(CASES.c.opened_at, CASES.c.reason).where(CASES.c.opened_at >= start)
        ).all()
        decided = connection.execute(
            select(
                DECISIONS.c.decided_at,
                DECISIONS.c.decision,
                DECISIONS.c.amount,
                DECISIONS.c.label,
                CASES.c.reason,
                CASES.c.opened_at,
                CLAIMS.c.cashback_amount,
            )
            .join(CASES, CASES.c.id == DECISIONS.c.case_id)
            .join(CLAIMS, CLAIMS.c.id == CASES.c.claim_decision_id)
            .where(DECISIONS.c.decided_at >= start)
        ).all()
    stats = {first + timedelta(days=i): _Day(first + timedelta(days=i)) for i in range(days)}
    for opened_at, reason in opened:
        day_stats = stats.get(opened_at.date())
        if day_stats is not None:
            day_stats.opened[reason] = day_stats.opened.get(reason, 0) + 1
    for decided_at, decision, amount, label, reason, opened_at, cashback in decided:
        day_stats = stats.get(decided_at.date())
        if day_stats is None:
            continue
        if label is None:
            day_stats.held += 1
            continue
        fraud = label == Label.FRAUD.value
        day_stats.decided += 1
        day_stats.fraud += fraud
        if reason == CaseReason.AUDIT.value:
            day_stats.audit_decided += 1
            day_stats.audit_fraud += fraud
        day_stats.cashback_saved += saved(ReviewDecision(decision), cashback, amount)
        day_stats.hours.append((decided_at - opened_at).total_seconds() / 3600)
    return [s.to_dict() for s in stats.values()]


def saved(decision: ReviewDecision, cashback: float, amount: float | None) -> float:
    """The cashback a final decision keeps from being paid (or takes back)."""
    if decision in {ReviewDecision.REJECT, ReviewDecision.CLAWBACK}:
        return float(cashback)
    if decision is ReviewDecision.PARTIAL:
        return float(cashback) - float(amount or 0.0)
    return 0.0
