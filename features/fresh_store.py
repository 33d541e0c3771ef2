"""The serving side of fresh claim features: a claim log that answers "exact at t" queries.

Every claim the service scores is recorded at once, so the next request sees it. The queries
implement the definitions of `features.fresh` (windows [t - 1h, t), counts including the
claim itself, strictly earlier claims only) with indexed lookups, one claim at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.fresh import FRESH_WINDOW

MICROS = 1_000_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS claim_log (
    claim_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    device_id TEXT,
    ip_hash TEXT,
    receipt_hash TEXT,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS claim_log_customer ON claim_log (customer_id, ts);
CREATE INDEX IF NOT EXISTS claim_log_device ON claim_log (device_id, ts);
CREATE INDEX IF NOT EXISTS claim_log_ip ON claim_log (ip_hash, ts);
CREATE INDEX IF NOT EXISTS claim_log_receipt ON claim_log (receipt_hash, ts);
"""
COUNT = {
    key: f"SELECT count(*) FROM claim_log WHERE {key} = ? AND ts >= ? AND ts < ?"  # noqa: S608
    for key in ("customer_id", "device_id", "ip_hash")
}
LAST = "SELECT max(ts) FROM claim_log WHERE customer_id = ? AND ts < ?"
SEEN = "SELECT 1 FROM claim_log WHERE receipt_hash = ? AND ts < ? LIMIT 1"


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        msg = f"claim time {ts.isoformat()} has no time zone: expected UTC"
        raise ValueError(msg)
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


class FreshClaimLog:
    """Claims recorded as they are scored, and the fresh features of a claim at its time.

    Args:
        path: the SQLite file (default: in memory).
        shared: the file is shared by several processes: WAL mode (readers never wait for
            the writer) with normal syncing (a commit survives the process, not the machine,
            and costs no fsync), and writers wait up to `busy_timeout_s` for each other.
        busy_timeout_s: how long a shared writer waits for another's lock.
    """

    def __init__(
        self, path: Path | str = ":memory:", *, shared: bool = False, busy_timeout_s: float = 30.0
    ) -> None:
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        if shared:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)

    def record(self, claims: Iterable[Mapping[str, Any]]) -> int:
        """Record claims (idempotent on claim_id, in one transaction); the number given."""
        rows = [
            (c["claim_id"], c["customer_id"], c.get("device_id"), c.get("ip_hash"),
             c.get("receipt_hash"), _micros(c["ts"]))
            for c in claims
        ]  # fmt: skip
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR IGNORE INTO claim_log VALUES (?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def _count(self, key: str, value: object, t: int) -> int | None:
        if value is None:
            return None
        window = int(FRESH_WINDOW.total_seconds()) * MICROS
        row = self._conn.execute(COUNT[key], (value, t - window, t)).fetchone()
        return int(row[0]) + 1

    def features(self, claim: Mapping[str, Any]) -> dict[str, Any]:
        """Fresh features of a claim at its own time (earlier claims only, this one counted)."""
        t = _micros(claim["ts"])
        last = self._conn.execute(LAST, (claim["customer_id"], t)).fetchone()[0]
        receipt = claim.get("receipt_hash")
        seen = receipt is not None and self._conn.execute(SEEN, (receipt, t)).fetchone() is not None
        return {
            "customer_claims_1h": self._count("customer_id", claim["customer_id"], t),
            "device_claims_1h": self._count("device_id", claim.get("device_id"), t),
            "ip_claims_1h": self._count("ip_hash", claim.get("ip_hash"), t),
            "minutes_since_last_claim": None if last is None else (t - last) / 60_000_000,
            "receipt_seen_before": seen,
        }

    def close(self) -> None:
        """Close the log's connection."""
        self._conn.close()
