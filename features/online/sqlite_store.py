"""Feast's SQLite online table: bulk upserts and prepared lookups.

Feast keeps one row per (entity, feature) in `<project>_<view>`: `entity_key` (serialized
EntityKey), `feature_name`, `value` (serialized Value proto), `value_text` (`str()` of the
value, NULL for a null), `vector_value` (unused here), `event_ts` and `created_ts` (integer
seconds, see `codec.sqlite_epoch`). Feast writes it with one `INSERT ... ON CONFLICT DO UPDATE`
per row from Python.

`SqliteWriter` writes the same rows from SQL instead: each chunk of entities is bound as
one staging row per entity (its values side by side in one blob, its texts in another, their
lengths as fixed-width digits), and a single `INSERT ... SELECT` cross-joins the staging
rows with the feature slots in (entity_key, feature_name) order, the order of the table's
primary key, inside one transaction. Entities whose stored event time is newer than the
row's are dropped from the staging table first (the incremental rule).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from features.online.codec import (
    Segment,
    fixed_digits,
    pad_rows,
    split_fixed,
    sqlite_epoch,
)
from features.online.layout import APPLY_HINT, CREATED_TS, EK, EVENT_TS, ViewLayout

_FEAST_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")
_LOOKUP_BATCH = 5000
_WRITE_LOCK_TIMEOUT_S = 60.0  # a writer waits for another writer's transaction
_READ_LOCK_TIMEOUT_S = 5.0  # a lookup waits for a writer's commit (rollback journal)


def quote(identifier: str) -> str:
    """A quoted SQLite identifier (as Feast quotes table names)."""
    return '"' + identifier.replace('"', '""') + '"'


def connect(path: Path, timeout_s: float = _WRITE_LOCK_TIMEOUT_S) -> sqlite3.Connection:
    """Open an existing online store file (never create one: that is `feast apply`'s job).

    Args:
        path: the SQLite file.
        timeout_s: how long to wait for a lock held by another connection.

    Raises:
        CashbackError: the file does not exist.
    """
    if not path.exists():
        raise CashbackError(f"online store {path} does not exist: {APPLY_HINT}")
    uri = f"{path.absolute().as_uri()}?mode=rw"
    return sqlite3.connect(
        uri, uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False
    )


def check_table(conn: sqlite3.Connection, layout: ViewLayout) -> None:
    """Raise a clear error unless the view's table exists with Feast's columns.

    Raises:
        CashbackError: no table (apply not run) or a table of another layout.
    """
    rows = conn.execute(f"PRAGMA main.table_info({quote(layout.table)})").fetchall()
    if not rows:
        raise CashbackError(
            f"online table {layout.table!r} of feature view {layout.name!r} does not exist: "
            f"{APPLY_HINT}"
        )
    missing = set(_FEAST_COLUMNS) - {r[1] for r in rows}
    if missing:
        raise CashbackError(
            f"online table {layout.table!r} lacks Feast's columns {sorted(missing)}: "
            f"{APPLY_HINT} with this Feast version"
        )


class SqliteWriter:
    """Upserts chunks of entity rows into one view's table, all in one transaction.

    Use as a context manager: the transaction commits on a normal exit and rolls back on an
    exception, so a failed write leaves the store as it was.
    """

    def __init__(self, path: Path, layout: ViewLayout, *, cache_mib: int = 256) -> None:
        """Prepare a writer (the file is opened on enter).

        Args:
            path: the SQLite file.
            layout: the view.
            cache_mib: SQLite page cache for this connection, MiB (fewer spills to disk).
        """
        self.path, self.layout, self.cache_mib = path, layout, cache_mib
        self._conn: sqlite3.Connection | None = None
        self._empty = False  # whether the table was empty when the transaction began

    def __enter__(self) -> Self:
        """Open the file, check the table, start the transaction, create staging tables."""
        conn = connect(self.path)
        try:
            check_table(conn, self.layout)
            conn.execute(f"PRAGMA cache_size = {-1024 * self.cache_mib}")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("BEGIN IMMEDIATE")
            table = quote(self.layout.table)
            self._empty = conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None  # noqa: S608
            conn.execute(
                "CREATE TEMP TABLE cashback_stage "
                "(ek BLOB, ts INTEGER, cts INTEGER, v BLOB, t BLOB, l BLOB)"
            )
            conn.execute(
                "CREATE TEMP TABLE cashback_slots (i INTEGER PRIMARY KEY, name TEXT, "
                "voff INTEGER, vlen INTEGER, vl INTEGER, toff INTEGER, tl INTEGER, nulls INTEGER)"
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit (or roll back on an exception), drop the staging tables and close."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if exc_type is None:
                conn.execute("DROP TABLE temp.cashback_stage")
                conn.execute("DROP TABLE temp.cashback_slots")
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    def write(self, chunk: pl.DataFrame, values: list[Segment], texts: list[Segment]) -> int:
        """Upsert one chunk of entities (sorted by entity key), skipping older rows.

        Args:
            chunk: the rows: `EK` (serialized entity key), `EVENT_TS`, optionally
                `CREATED_TS`, one row per entity.
            values: the serialized values of each feature, in layout order.
            texts: their `value_text`s, in layout order.

        Returns:
            Entities written (rows older than the stored ones are not).
        """
        return self.write_staged(stage(self.layout, chunk, values, texts))

    def write_staged(self, staged: Staged) -> int:
        """Upsert a chunk prepared by `stage` (which may run in another thread).

        Args:
            staged: the chunk.

        Returns:
            Entities written (rows older than the stored ones are not).
        """
        conn = self._conn
        if conn is None:
            raise RuntimeError("SqliteWriter.write outside its `with` block")
        if not staged.rows:
            return 0
        conn.execute("DELETE FROM temp.cashback_slots")
        conn.executemany(
            "INSERT INTO temp.cashback_slots VALUES (?, ?, ?, ?, ?, ?, ?, ?)", staged.slots
        )
        conn.executemany("INSERT INTO temp.cashback_stage VALUES (?, ?, ?, ?, ?, ?)", staged.rows)
        if not self._empty:
            # The incremental rule, on one feature (a view's features share an event time):
            # one primary-key lookup per entity.
            conn.execute(
                "DELETE FROM temp.cashback_stage WHERE EXISTS (SELECT 1 FROM main."  # noqa: S608
                f"{quote(self.layout.table)} AS o WHERE o.entity_key = cashback_stage.ek "
                "AND o.feature_name = ? AND o.event_ts > cashback_stage.ts)",
                (self.layout.features[0].name,),
            )
        written = int(conn.execute("SELECT count(*) FROM temp.cashback_stage").fetchone()[0])
        if written:
            conn.execute(staged.upsert)
        conn.execute("DELETE FROM temp.cashback_stage")
        return written


@dataclass(frozen=True)
class Staged:
    """A chunk ready for SQLite: staging rows, feature slots and the statement to run.

    Attributes:
        rows: per entity (key, event_ts, created_ts, values blob, texts blob, lengths).
        slots: per feature (index, name, value offset, fixed value length or -1, position of
            its value length, text offset, position of its text length, has nulls).
        upsert: the INSERT ... SELECT for this chunk.
    """

    rows: list[tuple[Any, ...]]
    slots: list[tuple[int, str, int, int, int, int, int, int]]
    upsert: str


def stage(
    layout: ViewLayout, chunk: pl.DataFrame, values: list[Segment], texts: list[Segment]
) -> Staged:
    """Lay out one chunk for `SqliteWriter.write_staged` (no database access).

    Args:
        layout: the view.
        chunk: the rows: `EK`, `EVENT_TS`, optionally `CREATED_TS`, one row per entity.
        values: the serialized values of each feature, in layout order.
        texts: their `value_text`s, in layout order.

    Returns:
        The staged chunk.
    """
    n = chunk.height
    widest = max(*(s.width for s in values), *(s.width for s in texts), 1)
    digits = len(str(widest))
    slots = []
    voff = toff = 1
    fixed_values = True
    any_null = False
    for i, (feature, value, text) in enumerate(zip(layout.features, values, texts, strict=True)):
        lpos = 1 + 2 * digits * i
        fixed = value.width > 0 and bool((value.lengths == value.width).all())
        nulls = bool((value.lengths == 0).any())
        fixed_values &= fixed
        any_null |= nulls
        slot = (i, feature.name, voff, value.width if fixed else -1, lpos, toff, lpos + digits)
        slots.append((*slot, int(nulls)))
        voff += value.width
        toff += text.width
    rows = list(
        zip(
            chunk[EK].to_list(),
            _epochs(chunk[EVENT_TS]),
            _epochs(chunk[CREATED_TS]) if CREATED_TS in chunk.columns else [None] * n,
            _padded(values, n),
            _padded(texts, n),
            _length_digits(values, texts, digits, n),
            strict=True,
        )
    )
    upsert = _upsert_sql(quote(layout.table), digits, fixed_values=fixed_values, nulls=any_null)
    return Staged(rows=rows, slots=slots, upsert=upsert)


def _upsert_sql(table: str, digits: int, *, fixed_values: bool, nulls: bool) -> str:
    """The INSERT ... SELECT of staging x slots, upserting as Feast does.

    Each SQL function call costs about as much as a B-tree insert, so the statement is
    specialised: a slot whose values all have one length reads it from the slot, and the
    NULL test of `value_text` is only made when the chunk has nulls.
    """
    vlen = f"CAST(substr(s.l, f.vl, {digits}) AS INTEGER)"
    tlen = f"CAST(substr(s.l, f.tl, {digits}) AS INTEGER)"
    value = "substr(s.v, f.voff, f.vlen)"
    if not fixed_values:
        value = f"CASE WHEN f.vlen >= 0 THEN {value} ELSE substr(s.v, f.voff, {vlen}) END"
    text = f"CAST(substr(s.t, f.toff, {tlen}) AS TEXT)"
    if nulls:
        text = f"CASE WHEN f.nulls = 0 THEN {text} WHEN {vlen} = 0 THEN NULL ELSE {text} END"
    # The table is a quoted identifier and digits an int: nothing comes from outside.
    return (
        f"INSERT INTO main.{table} "  # noqa: S608
        "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
        f"SELECT s.ek, f.name, {value}, {text}, s.ts, s.cts "
        "FROM temp.cashback_stage AS s CROSS JOIN temp.cashback_slots AS f WHERE true "
        "ON CONFLICT (entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts"
    )


def _epochs(series: pl.Series) -> list[int | None]:
    """Feast's integer `event_ts` of each timestamp (computed once per distinct value)."""
    distinct = series.drop_nulls().unique()
    epochs = [sqlite_epoch(ts) for ts in distinct.to_list()]
    mapped = series.replace_strict(distinct, epochs, default=None, return_dtype=pl.Int64)
    return mapped.to_list()


def _padded(segments: list[Segment], n: int) -> list[bytes]:
    buffer, width = pad_rows(segments, n)
    return split_fixed(buffer, width)


def _length_digits(values: list[Segment], texts: list[Segment], digits: int, n: int) -> list[bytes]:
    """Per entity, the value and text length of each feature as fixed-width digits."""
    lengths = np.empty((n, 2 * len(values)), dtype=np.int64)
    for i, (value, text) in enumerate(zip(values, texts, strict=True)):
        lengths[:, 2 * i] = value.lengths
        lengths[:, 2 * i + 1] = text.lengths
    # ASCII digits bound as a BLOB: substr() of a blob is O(1), of a text O(offset).
    return split_fixed(
        fixed_digits(lengths.reshape(-1), digits).tobytes(), lengths.shape[1] * digits
    )


class SqliteLookup:
    """Reads a view's rows for a few entities, one connection per thread.

    Python's sqlite3 caches the prepared statements per connection, so a lookup is one
    bind and one step per returned row.
    """

    def __init__(self, path: Path) -> None:
        """Remember the file; connections open lazily, per thread.

        Args:
            path: the SQLite file.
        """
        self.path = path
        self._local = threading.local()
        self._sql: dict[tuple[str, int], str] = {}

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, _READ_LOCK_TIMEOUT_S)
            self._local.conn = conn
        return conn

    def fetch(self, table: str, keys: list[bytes]) -> list[Any]:
        """(entity_key, feature_name, value) rows of these entities.

        Args:
            table: the view's table.
            keys: serialized entity keys (distinct).

        Returns:
            The rows, in no particular order.
        """
        conn = self.connection()
        if len(keys) == 1:
            return conn.execute(self._select(table, 1), keys).fetchall()
        rows: list[Any] = []
        for start in range(0, len(keys), _LOOKUP_BATCH):
            batch = keys[start : start + _LOOKUP_BATCH]
            rows.extend(conn.execute(self._select(table, len(batch)), batch).fetchall())
        return rows

    def _select(self, table: str, n: int) -> str:
        sql = self._sql.get((table, n))
        if sql is None:
            where = "entity_key = ?" if n == 1 else f"entity_key IN ({','.join('?' * n)})"
            sql = f"SELECT entity_key, feature_name, value FROM {quote(table)} WHERE {where}"  # noqa: S608
            if n <= 64:  # keep the cache small: big batches are rare and cheap to format
                self._sql[(table, n)] = sql
        return sql

    def has_rows(self, layout: ViewLayout) -> bool:
        """Whether the view's table holds any row (raises when the table is missing)."""
        conn = self.connection()
        check_table(conn, layout)
        sql = f"SELECT 1 FROM {quote(layout.table)} LIMIT 1"  # noqa: S608 - quoted name
        return conn.execute(sql).fetchone() is not None

    def newest_event_ts(self, layout: ViewLayout) -> int | None:
        """The largest stored `event_ts` of the view (a full scan), None when empty."""
        conn = self.connection()
        check_table(conn, layout)
        sql = f"SELECT max(event_ts) FROM {quote(layout.table)}"  # noqa: S608 - quoted name
        row = conn.execute(sql).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
