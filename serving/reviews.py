"""The risk team's work on review cases: taking a case, and deciding one or a ring of them.

**Statuses.** A case opens `open`. A final decision (approve, reject, partial, clawback)
makes it `decided`: closed, with the label the decision implies (`ReviewDecision.label`).
A `hold` makes it `held`: no label yet, the payout is held (the feed says so), and the case
stays in the queue for a final decision, which any analyst may take. A held case cannot be
held again; a decided case takes no further decision (409).

**Locks.** `POST /v1/reviews/{id}/claim` locks an open or held case for the analyst (the
API key: its id, shown by its name) for `review_lock_minutes`. It is one conditional
`UPDATE ... WHERE status IN (open, held) AND (no lock OR the caller's OR expired)`: the
database applies it atomically (PostgreSQL locks the row and re-checks the condition after
a concurrent writer commits; SQLite has a single writer), so two analysts never both hold a
case. The same analyst taking it again extends the lock; an expired lock can be taken.

**Decisions.** One transaction per request:

1. the feed's lock (PostgreSQL; `serving.payouts`), then the request row, unique on its
   `client_decision_id` (on SQLite this first write takes the database's write lock);
2. for each case (in id order) the same conditional `UPDATE` moving it to `held` or
   `decided` and releasing its lock; when one matches no row (decided meanwhile, or locked
   by another analyst), the whole transaction rolls back and the caller gets 409;
3. the decisions, with the analyst, the time and the note (the audit trail);
4. the payout feed's entries.

So two analysts deciding one case concurrently store one decision: the second's `UPDATE`
finds the case decided, and gets 409. A retry with the same `client_decision_id` and the
same content gets the stored answer (also when it raced the first: the unique request row
sends it to the stored one); other content under that id gets 409. Invalid requests are
refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import Connection, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from cashback.settings import Settings
from cashback.vocab import AbuseType, Label, ReviewDecision
from serving import payouts
from serving.auth import Principal
from serving.db import Database
from serving.tables import (
    CaseDecision,
    CaseStatus,
    ClaimDecision,
    PayoutDecision,
    ReviewCase,
    ReviewRequest,
    utc_now,
)

logger = logging.getLogger(__name__)

CASES = cast(Table, ReviewCase.__table__)
CLAIMS = cast(Table, ClaimDecision.__table__)
REQUESTS = cast(Table, ReviewRequest.__table__)
DECISIONS = cast(Table, CaseDecision.__table__)
FEED = cast(Table, PayoutDecision.__table__)
PENDING: Final = (CaseStatus.OPEN.value, CaseStatus.HELD.value)
SINGLE, BULK = "single", "bulk"

_free_or_mine = or_(
    CASES.c.locked_by_key_id.is_(None),
    CASES.c.locked_by_key_id == bindparam("key_id"),
    CASES.c.locked_until <= bindparam("now"),
)
TAKE = (
    update(CASES)
    .where(
        and_(
            CASES.c.id == bindparam("case_id"),
            CASES.c.status.in_(PENDING),
            _free_or_mine,
        )
    )
    .values(
        locked_by=bindparam("analyst"),
        locked_by_key_id=bindparam("key_id"),
        locked_until=bindparam("until"),
    )
)
MOVE = (
    update(CASES)
    .where(
        and_(
            CASES.c.id == bindparam("case_id"),
            CASES.c.status.in_(bindparam("from_statuses", expanding=True)),
            _free_or_mine,
        )
    )
    .values(
        status=bindparam("new_status"),
        decided_at=bindparam("new_decided_at"),
        locked_by=None,
        locked_by_key_id=None,
        locked_until=None,
    )
)
CASE_OF = (
    select(
        CASES.c.id,
        CASES.c.status,
        CASES.c.locked_by,
        CASES.c.locked_by_key_id,
        CASES.c.locked_until,
        CLAIMS.c.claim_id,
        CLAIMS.c.cashback_amount,
    )
    .join(CLAIMS, CLAIMS.c.id == CASES.c.claim_decision_id)
    .where(CASES.c.id.in_(bindparam("case_ids", expanding=True)))
)
INSERT_REQUEST = insert(REQUESTS).returning(REQUESTS.c.id)
INSERT_DECISION = insert(DECISIONS).returning(DECISIONS.c.id)
FIND_REQUEST = select(REQUESTS).where(REQUESTS.c.client_decision_id == bindparam("client_id"))
DECISIONS_OF_REQUEST = (
    select(DECISIONS, CLAIMS.c.claim_id)
    .join(CASES, CASES.c.id == DECISIONS.c.case_id)
    .join(CLAIMS, CLAIMS.c.id == CASES.c.claim_decision_id)
    .where(DECISIONS.c.request_id == bindparam("request_id"))
    .order_by(DECISIONS.c.case_id)
)
FEED_OF_DECISIONS = (
    select(FEED.c.sequence, FEED.c.review_decision_id, FEED.c.action, FEED.c.amount)
    .where(FEED.c.review_decision_id.in_(bindparam("decision_ids", expanding=True)))
    .order_by(FEED.c.sequence)
)


class ReviewError(Exception):
    """A request the review workflow refuses; `status` is its HTTP status."""

    status: int = 409


class CaseNotFoundError(ReviewError):
    """No review case with this id."""

    status = 404


class CaseUnavailableError(ReviewError):
    """The case is decided, held already, or locked by another analyst."""


class RequestConflictError(ReviewError):
    """The client_decision_id was used before for another request."""


class InvalidDecisionError(ReviewError):
    """The decision does not fit the case (e.g. a partial amount above the cashback)."""

    status = 422


@dataclass(frozen=True)
class DecisionRequest:
    """What an analyst decided, on which cases."""

    case_ids: tuple[int, ...]
    decision: ReviewDecision
    amount: float | None
    note: str | None
    client_decision_id: str
    kind: str = SINGLE
    abuse_type: AbuseType | None = None

    @classmethod
    def ring(
        cls,
        case_ids: Sequence[int],
        decision: ReviewDecision,
        note: str | None,
        client_decision_id: str,
        abuse_type: AbuseType | None = None,
    ) -> DecisionRequest:
        """One decision for several cases (a ring): every case or none.

        Raises:
            InvalidDecisionError: for a partial decision (it approves an amount of one claim).
        """
        if decision is ReviewDecision.PARTIAL:
            msg = "a partial decision approves an amount of one claim: decide it on its case"
            raise InvalidDecisionError(msg)
        ids = tuple(sorted(set(case_ids)))
        return cls(ids, decision, None, note, client_decision_id, BULK, abuse_type)

    def digest(self) -> str:
        """A fingerprint of the content, to tell a retry from another request."""
        content: dict[str, Any] = {
            "kind": self.kind,
            "case_ids": sorted(self.case_ids),
            "decision": self.decision.value,
            "amount": self.amount,
            "note": self.note,
        }
        if self.abuse_type is not None:  # absent otherwise: digests stored before it hold
            content["abuse_type"] = self.abuse_type.value
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def lock_state(row: Mapping[str, Any], now: datetime) -> tuple[str | None, datetime | None]:
    """Who holds the case and until when, or (None, None) when nobody does now."""
    until = row["locked_until"]
    if row["locked_by_key_id"] is None or until is None or until <= now:
        return None, None
    return row["locked_by"], until


def status_after(decision: ReviewDecision) -> CaseStatus:
    """The case's status after this decision."""
    return CaseStatus.HELD if decision is ReviewDecision.HOLD else CaseStatus.DECIDED


class ReviewService:
    """Locks and decisions on review cases (stateless: one per request is fine).

    Args:
        settings: the service settings (`serving.review_lock_minutes`).
        db: the app database.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    # ------------------------------------------------------------------ locks

    def take(self, case_id: int, principal: Principal) -> dict[str, Any]:
        """Lock a case for this analyst (or extend their lock).

        Returns:
            case_id, status, locked_by, locked_until.

        Raises:
            CaseNotFoundError: no such case.
            CaseUnavailableError: the case is decided, or another analyst holds it.
        """
        now = utc_now()
        until = now + timedelta(minutes=self.settings.serving.review_lock_minutes)
        values = {
            "case_id": case_id,
            "key_id": principal.key_id,
            "analyst": principal.name,
            "now": now,
            "until": until,
        }
        with self.db.engine.begin() as connection:
            taken = connection.execute(TAKE, values).rowcount
        if taken != 1:
            raise self._unavailable(case_id, principal.key_id, now)
        logger.info("review case %d taken by key %d until %s", case_id, principal.key_id, until)
        [row] = self._cases([case_id]).values()
        return {
            "case_id": case_id,
            "status": row["status"],
            "locked_by": row["locked_by"],
            "locked_until": row["locked_until"],
        }

    def _cases(self, case_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        with self.db.engine.connect() as connection:
            rows = connection.execute(CASE_OF, {"case_ids": list(case_ids)}).mappings()
            return {row["id"]: dict(row) for row in rows}

    def _unavailable(
        self, case_id: int, key_id: int, now: datetime, decision: ReviewDecision | None = None
    ) -> ReviewError:
        """Why a conditional update matched no row, as the error to raise."""
        row = self._cases([case_id]).get(case_id)
        if row is None:
            return CaseNotFoundError(f"no review case {case_id}")
        if row["status"] == CaseStatus.DECIDED.value:
            return CaseUnavailableError(f"review case {case_id} is decided already")
        holder, until = lock_state(row, now)
        if holder is not None and until is not None and row["locked_by_key_id"] != key_id:
            return CaseUnavailableError(
                f"review case {case_id} is locked by {holder} until {until.isoformat()}"
            )
        if decision is ReviewDecision.HOLD and row["status"] == CaseStatus.HELD.value:
            return CaseUnavailableError(f"review case {case_id} is held already")
        return CaseUnavailableError(f"review case {case_id} changed meanwhile; try again")

    # ------------------------------------------------------------------ decisions

    def decide(self, request: DecisionRequest, principal: Principal) -> list[dict[str, Any]]:
        """Store a decision on one or more cases, in one transaction (see the module doc).

        Returns:
            Each case's stored decision, in case id order, with its payout entries.

        Raises:
            CaseNotFoundError: a case does not exist.
            CaseUnavailableError: a case is decided, held already (for a hold), or locked by
                another analyst.
            RequestConflictError: the client_decision_id was used for another request.
            InvalidDecisionError: a partial amount that does not fit the claim.
        """
        digest = request.digest()
        stored = self._stored(request.client_decision_id, digest)
        if stored is not None:
            return stored
        cases = self._cases(request.case_ids)
        missing = sorted(set(request.case_ids) - set(cases))
        if missing:
            raise CaseNotFoundError(f"no review case {', '.join(map(str, missing))}")
        self._check_amount(request, cases)
        self._check_abuse_type(request)
        now = utc_now()
        try:
            with self.db.engine.begin() as connection:
                self._write(connection, request, digest, cases, principal, now)
        except IntegrityError:
            stored = self._stored(request.client_decision_id, digest)
            if stored is None:  # not the client id's uniqueness: a real error
                raise
            logger.debug("review request stored first by a concurrent retry")
            return stored
        except _RefusedError as refused:
            raise self._unavailable(
                refused.case_id, principal.key_id, now, request.decision
            ) from None
        for case_id in sorted(request.case_ids):
            logger.info(
                "review case %d: %s by key %d (%s)",
                case_id,
                request.decision.value,
                principal.key_id,
                principal.name,
            )
        decided = self._stored(request.client_decision_id, digest)
        assert decided is not None
        return decided

    @staticmethod
    def _check_amount(request: DecisionRequest, cases: Mapping[int, Mapping[str, Any]]) -> None:
        if request.decision is not ReviewDecision.PARTIAL:
            if request.amount is not None:
                msg = "amount is only for a partial decision"
                raise InvalidDecisionError(msg)
            return
        if request.amount is None:
            msg = "a partial decision needs the amount approved (0 < amount <= cashback)"
            raise InvalidDecisionError(msg)
        for case_id, row in cases.items():
            cashback = float(row["cashback_amount"])
            if not 0 < request.amount <= cashback:
                msg = (
                    f"amount {request.amount} does not fit review case {case_id}: a partial "
                    f"decision approves more than 0 and at most the cashback ({cashback})"
                )
                raise InvalidDecisionError(msg)

    @staticmethod
    def _check_abuse_type(request: DecisionRequest) -> None:
        if request.abuse_type is not None and request.decision.label() is not Label.FRAUD:
            msg = (
                f"abuse_type goes with a fraud decision (reject, partial, clawback), "
                f"not with {request.decision.value}"
            )
            raise InvalidDecisionError(msg)

    def _write(
        self,
        connection: Connection,
        request: DecisionRequest,
        digest: str,
        cases: Mapping[int, Mapping[str, Any]],
        principal: Principal,
        now: datetime,
    ) -> None:
        payouts.lock_feed(connection)
        request_id = connection.execute(
            INSERT_REQUEST,
            {
                "client_decision_id": request.client_decision_id,
                "digest": digest,
                "analyst": principal.name,
                "api_key_id": principal.key_id,
                "created_at": now,
            },
        ).scalar_one()
        new_status = status_after(request.decision)
        final = new_status is CaseStatus.DECIDED
        from_statuses = list(PENDING) if final else [CaseStatus.OPEN.value]
        label = request.decision.label()
        entries: list[dict[str, Any]] = []
        for case_id in sorted(request.case_ids):
            moved = connection.execute(
                MOVE,
                {
                    "case_id": case_id,
                    "from_statuses": from_statuses,
                    "key_id": principal.key_id,
                    "now": now,
                    "new_status": new_status.value,
                    "new_decided_at": now if final else None,
                },
            ).rowcount
            if moved != 1:
                raise _RefusedError(case_id)
            decision_id = connection.execute(
                INSERT_DECISION,
                {
                    "request_id": request_id,
                    "case_id": case_id,
                    "decision": request.decision.value,
                    "amount": request.amount,
                    "label": None if label is None else label.value,
                    "abuse_type": None if request.abuse_type is None else request.abuse_type.value,
                    "note": request.note,
                    "analyst": principal.name,
                    "api_key_id": principal.key_id,
                    "decided_at": now,
                },
            ).scalar_one()
            case = cases[case_id]
            cashback = float(case["cashback_amount"])
            entries += [
                {
                    "review_decision_id": decision_id,
                    "claim_id": case["claim_id"],
                    "action": action.action,
                    "amount": action.amount,
                    "decided_at": now,
                }
                for action in payouts.actions(request.decision, cashback, request.amount)
            ]
        payouts.append(connection, entries)

    def _stored(self, client_id: str, digest: str) -> list[dict[str, Any]] | None:
        """The stored answer to this client_decision_id (None when it is new).

        Raises:
            RequestConflictError: the id was used for a request with other content.
        """
        with self.db.engine.connect() as connection:
            found = connection.execute(FIND_REQUEST, {"client_id": client_id}).mappings().first()
            if found is None:
                return None
            if found["digest"] != digest:
                msg = (
                    f"client_decision_id {client_id!r} was used before for another request: "
                    "a retry must repeat it"
                )
                raise RequestConflictError(msg)
            rows = [
                dict(row)
                for row in connection.execute(
                    DECISIONS_OF_REQUEST, {"request_id": found["id"]}
                ).mappings()
            ]
            entries = connection.execute(
                FEED_OF_DECISIONS, {"decision_ids": [row["id"] for row in rows]}
            ).mappings()
            by_decision: dict[int, list[dict[str, Any]]] = {}
            for entry in entries:
                by_decision.setdefault(entry["review_decision_id"], []).append(
                    {k: entry[k] for k in ("sequence", "action", "amount")}
                )
        return [
            row
            | {
                "client_decision_id": client_id,
                "status": status_after(ReviewDecision(row["decision"])).value,
                "payouts": by_decision.get(row["id"], []),
            }
            for row in rows
        ]


class _RefusedError(Exception):
    """A case's conditional update matched no row: roll the transaction back."""

    def __init__(self, case_id: int) -> None:
        super().__init__(case_id)
        self.case_id = case_id
