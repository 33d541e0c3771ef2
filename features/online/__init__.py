"""Feast's online store, fast: bulk writes and serving lookups, readable by the Feast SDK.

- `write_online(store, view, frame)`: upsert a polars frame into the configured online
  store (SQLite or Redis) exactly as Feast stores it, in bulk.
- `materialize(store, end=...)`: incremental materialization of file-sourced views.
- `OnlineReader(store, service).read(ids)`: low-latency lookups of one FeatureService.
- `check_fresh(store, view, max_age)`: fail clearly when the store is empty or stale.
"""

from __future__ import annotations

from features.online.reader import OnlineReader, OnlineResult, check_fresh, newest_event_time
from features.online.writer import MaterializeReport, materialize, write_online

__all__ = [
    "MaterializeReport",
    "OnlineReader",
    "OnlineResult",
    "check_fresh",
    "materialize",
    "newest_event_time",
    "write_online",
]
