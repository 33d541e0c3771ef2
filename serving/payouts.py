"""The payout feed: what the cashback engine must do with each reviewed claim's cashback.

Each review decision adds entries to `payout_decisions`, in the transaction that stores the
decision. The engine polls `GET /v1/payouts/decisions?after=SEQUENCE` and gets the entries
after the last one it handled, in order.

**Actions.** `release`: pay `amount`. `hold`: do not pay `amount` (now, and for a reject
ever). `clawback`: take `amount` back (it was paid). A decision maps to actions:

| decision | entries |
| --- | --- |
| approve | release of the cashback |
| reject | hold of the cashback (final: the claim is not paid) |
| partial | release of the approved amount, then hold of the rest (when above 0) |
| clawback | clawback of the cashback |
| hold | hold of the cashback (the case stays open for a final decision) |

The analyst picks `clawback` for a cashback already paid and `reject` for one not paid: the
service does not know whether the engine has paid it.

**Ordering.** Entries are numbered 1, 2, 3, ... without gaps, and an entry becomes visible
only after every entry with a smaller number: a reader never sees n + 1 before n commits, so
a cursor (the last sequence handled) never skips or repeats an entry, whoever writes
concurrently. This holds because writers of the feed are serialized and the sequence is
taken inside the serialized section:

- on PostgreSQL, a decision's transaction first takes a transaction-level advisory lock
  (`pg_advisory_xact_lock(FEED_LOCK)`), held until it commits or rolls back. Its entries get
  `max(sequence) + 1, ...` read under that lock (READ COMMITTED: each statement sees every
  transaction committed before it; the previous holder committed before releasing the
  lock). So sequences are assigned in commit order, and a snapshot that shows n + 1 also
  shows n;
- on SQLite, a transaction's first statement is a write (see `serving.reviews`), which takes
  the database's single write lock until commit: writers are serialized the same way.

A transaction that fails takes no number (the maximum is read again by the next writer), so
there are no gaps. Decisions are made by people, a few a second at most: serializing their
short transactions costs nothing that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, text

from cashback.vocab import ReviewDecision
from serving.tables import PayoutDecision

FEED = cast(Table, PayoutDecision.__table__)
# any constant: the key of the advisory lock serializing the feed's writers on PostgreSQL
FEED_LOCK: Final = 7_312_010
TAKE_FEED_LOCK = text(f"SELECT pg_advisory_xact_lock({FEED_LOCK})")
LAST_SEQUENCE = select(func.coalesce(func.max(FEED.c.sequence), 0))
INSERT_ENTRY = insert(FEED)
READ_AFTER = (
    select(FEED.c.sequence, FEED.c.claim_id, FEED.c.action, FEED.c.amount, FEED.c.decided_at)
    .where(FEED.c.sequence > bindparam("after"))
    .order_by(FEED.c.sequence)
    .limit(bindparam("limit"))
)
HOLD, RELEASE, CLAWBACK = "hold", "release", "clawback"
CENT: Final = 1e-9  # amounts closer than this are the same


@dataclass(frozen=True)
class Action:
    """One thing the engine must do with a claim's cashback."""

    action: str
    amount: float


def actions(decision: ReviewDecision, cashback: float, amount: float | None) -> list[Action]:
    """The feed's entries for a decision on a claim of this cashback (see the module doc).

    Args:
        decision: the analyst's decision.
        cashback: the claim's cashback amount.
        amount: the approved amount of a partial decision.
    """
    if decision is ReviewDecision.APPROVE:
        return [Action(RELEASE, cashback)]
    if decision is ReviewDecision.CLAWBACK:
        return [Action(CLAWBACK, cashback)]
    if decision is ReviewDecision.PARTIAL:
        paid = float(amount or 0.0)
        rest = round(cashback - paid, 9)
        return [Action(RELEASE, paid)] + ([Action(HOLD, rest)] if rest > CENT else [])
    return [Action(HOLD, cashback)]  # reject (final) and hold (for now)


def lock_feed(connection: Connection) -> None:
    """Serialize this transaction with the feed's other writers (PostgreSQL; see above).

    On SQLite the transaction's first write does it.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(TAKE_FEED_LOCK)


def append(connection: Connection, entries: Sequence[Mapping[str, Any]]) -> list[int]:
    """Add entries to the feed, numbered after the last one; their sequences.

    Must run in a transaction that called `lock_feed` (PostgreSQL) or wrote already (SQLite).

    Args:
        connection: the decision's transaction.
        entries: review_decision_id, claim_id, action, amount, decided_at of each.
    """
    if not entries:
        return []
    last = int(connection.execute(LAST_SEQUENCE).scalar_one())
    rows = [dict(entry) | {"sequence": last + i} for i, entry in enumerate(entries, start=1)]
    connection.execute(INSERT_ENTRY, rows)
    return [row["sequence"] for row in rows]


def read_feed(engine: Engine, after: int, limit: int) -> list[dict[str, Any]]:
    """The entries after sequence `after`, at most `limit`, in order.

    Args:
        engine: the app database.
        after: the last sequence the reader handled (0 at first).
        limit: how many at most.
    """
    with engine.connect() as connection:
        rows = connection.execute(READ_AFTER, {"after": after, "limit": limit}).mappings()
        return [dict(row) for row in rows]
