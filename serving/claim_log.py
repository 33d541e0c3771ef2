"""The claim log the API keeps for fresh claim features (`features.fresh_store`).

Fresh features (claims in the last hour by the customer, device and IP, minutes since the
customer's last claim, whether the receipt was seen) must be exact at the claim's time, so
every claim the API scores is recorded at once. The log is a SQLite file under the serving
directory, in WAL mode, shared by the API's worker processes. When it does not exist yet it
is built from the data directory's claims table (aside, then linked in place unless another
process was quicker), so the history before the API started counts too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cashback.settings import Settings
from cashback.tables import present_tables, scan_parquet_path, table_path
from features.fresh_store import FreshClaimLog

LOG_FILE = "claim_log.db"
SEED_COLUMNS = ("claim_id", "customer_id", "device_id", "ip_hash", "receipt_hash", "ts")
SEED_CHUNK = 100_000


class SharedClaimLog:
    """A `FreshClaimLog` safe to call from the request threads (one call at a time).

    Args:
        log: the log.
    """

    def __init__(self, log: FreshClaimLog) -> None:
        self._log = log
        self._lock = threading.Lock()

    def features(self, claim: Mapping[str, Any]) -> dict[str, Any]:
        """Fresh features of a claim at its time."""
        with self._lock:
            return self._log.features(claim)

    def record(self, claim: Mapping[str, Any]) -> None:
        """Record a scored claim (idempotent on claim_id)."""
        with self._lock:
            self._log.record([claim])

    def close(self) -> None:
        """Close the log."""
        with self._lock:
            self._log.close()


def _seed(path: Path, data_dir: Path) -> int:
    """Build a log file at `path` from the data directory's claims; the claims recorded."""
    log = FreshClaimLog(path)
    count = 0
    try:
        if "claims" in present_tables(data_dir):
            claims = scan_parquet_path(table_path(data_dir, "claims")).select(SEED_COLUMNS)
            for chunk in claims.collect().iter_slices(SEED_CHUNK):
                count += log.record(chunk.iter_rows(named=True))
    finally:
        log.close()
    return count


def open_claim_log(settings: Settings) -> SharedClaimLog:
    """The serving directory's claim log, built from the claims table when absent."""
    path = settings.serving_dir / LOG_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.unlink(missing_ok=True)
        _seed(tmp, settings.data_dir)
        try:  # a hard link never replaces: a process that seeded first keeps its file
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    timeout = settings.serving.db_busy_timeout_s
    return SharedClaimLog(FreshClaimLog(path, shared=True, busy_timeout_s=timeout))
