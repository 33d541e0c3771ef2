"""Window sums at daily closes by binary search over prefix sums: the batch-feature engine.

Events are sorted once by (entity, second) into one integer key, `code << 31 | seconds`;
their values get prefix sums. "Sum of x over the entity's events strictly before bound b"
is then P[i] - P[s], with i and s two binary searches: i for (entity, b), s for the
entity's first event. Bounds are whole seconds (closes at 00:00 UTC and whole-day windows),
and for those, comparing an event's second with the bound is exactly comparing its time:
an event at 23:59:59.999999 is before midnight, one at midnight is not.

Cost: one sort of the events, one pass of prefix sums per value, and two binary searches
per requested row and bound: no join, no group-by, no table of every entity for every day.
Values are integers (counts, cents), so sums are exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from cashback.errors import CashbackError

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
SECOND_BITS = 31  # seconds since 2000 fit until 2068
MAX_CODE = (1 << (63 - SECOND_BITS)) - 1
Int64Array = npt.NDArray[np.int64]


def _seconds(ts: pl.Expr) -> pl.Expr:
    """Whole seconds since ORIGIN (floor), for UTC microsecond timestamps."""
    micros = ts.dt.epoch("us") - int(ORIGIN.timestamp()) * 1_000_000
    return micros.floordiv(1_000_000)


class KeyCodes:
    """Dense integer codes for entity keys (strings), shared by events and rows."""

    def __init__(self, keys: pl.Series) -> None:
        unique = keys.drop_nulls().unique()
        if unique.len() > MAX_CODE:
            msg = f"too many entities for one index ({unique.len():,} > {MAX_CODE:,})"
            raise CashbackError(msg)
        self.table = pl.DataFrame(
            {"__key": unique, "__code": pl.int_range(unique.len(), eager=True, dtype=pl.Int64)}
        )

    def attach(self, frame: pl.LazyFrame, key: str) -> pl.LazyFrame:
        """`frame` with `__code` (-1 for a null or unknown key), in its order."""
        return frame.join(
            self.table.lazy(), left_on=key, right_on="__key", how="left", maintain_order="left"
        ).with_columns(pl.col("__code").fill_null(-1))


class PrefixIndex:
    """One entity's event stream, sorted by (entity, second), with prefix sums of values.

    Args:
        events: frame with the key column, `ts` (UTC) and integer value columns.
        key: the entity key column.
        codes: the key codes (must know every key of the events).
    """

    def __init__(self, events: pl.DataFrame, key: str, codes: KeyCodes) -> None:
        keyed = codes.attach(events.lazy().select(key, "ts"), key).select(
            "__code", _seconds(pl.col("ts")).alias("__s")
        )
        parts = keyed.collect()
        combined = (parts["__code"].to_numpy() << SECOND_BITS) | parts["__s"].to_numpy()
        self._order = np.argsort(combined, kind="stable")
        self.keys: Int64Array = combined[self._order]
        self._events = events

    def _positions(
        self, row_codes: Int64Array, bound_s: Int64Array
    ) -> tuple[Int64Array, Int64Array]:
        """Index of the first event at or after each bound, and of each entity's first event."""
        at = np.searchsorted(self.keys, (row_codes << SECOND_BITS) | bound_s, side="left")
        first = np.searchsorted(self.keys, row_codes << SECOND_BITS, side="left")
        return at.astype(np.int64), first.astype(np.int64)

    def prefix(self, column: str) -> Int64Array:
        """Prefix sums of a value column in index order (length n + 1, starting at 0)."""
        values = self._events[column].to_numpy()[self._order].astype(np.int64, copy=False)
        return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(values)])

    def sums_before(
        self, row_codes: Int64Array, bounds: Mapping[str, Int64Array], columns: Sequence[str]
    ) -> dict[str, Int64Array]:
        """For each named bound and column, the entity's sum over events strictly before it.

        Returns:
            `{f"{column}@{bound_name}": sums}`; rows with an unknown entity get 0.
        """
        known = row_codes >= 0
        safe = np.where(known, row_codes, 0)
        positions = {name: self._positions(safe, b) for name, b in bounds.items()}
        out: dict[str, Int64Array] = {}
        for column in columns:  # one prefix array alive at a time keeps memory flat
            p = self.prefix(column)
            for name, (at, first) in positions.items():
                out[f"{column}@{name}"] = np.where(known, p[at] - p[first], 0)
        return out

    def last_before(self, row_codes: Int64Array, bound_s: Int64Array, column: str) -> pl.Series:
        """The value of the entity's latest event strictly before each bound (null if none)."""
        known = row_codes >= 0
        at, first = self._positions(np.where(known, row_codes, 0), bound_s)
        has = known & (at > first)
        source = self._events[column]
        if source.len() == 0:
            return pl.Series(column, [None] * len(has), dtype=source.dtype)
        values = source.gather(self._order[np.maximum(at - 1, 0)])
        return pl.select(pl.when(pl.lit(pl.Series(has))).then(values)).to_series().alias(column)


def _row_codes(codes: KeyCodes, rows: pl.DataFrame, key: str) -> Int64Array:
    return codes.attach(rows.select(key).lazy(), key).collect()["__code"].to_numpy()


def bound_seconds(closes: pl.Series, before: timedelta) -> Int64Array:
    """Whole-second bounds `close - before` (closes and windows must be whole seconds)."""
    frame = pl.DataFrame({"c": closes}).select(_seconds(pl.col("c") - before))
    return frame.to_series().to_numpy().astype(np.int64)


def window_sums(
    events: pl.LazyFrame,
    key: str,
    values: Mapping[str, pl.Expr],
    rows: pl.DataFrame,
    bounds: Mapping[str, timedelta],
    *,
    close: str = "close_ts",
) -> pl.DataFrame:
    """Sums of integer event values before `close - bound`, for each row and named bound.

    Args:
        events: the event stream (`key`, `ts`, and what `values` need).
        key: the entity column.
        values: name to integer expression per event.
        rows: requested rows with `key` and `close` (UTC, whole seconds).
        bounds: bound name to how long before the close.
        close: the rows' close column.

    Returns:
        `rows` with one column `{value}@{bound}` per value and bound.
    """
    stream = events.select(key, "ts", *(e.alias(n) for n, e in values.items())).collect()
    codes = KeyCodes(pl.concat([stream[key], rows[key]]))
    index = PrefixIndex(stream, key, codes)
    row_codes = _row_codes(codes, rows, key)
    limits = {name: bound_seconds(rows[close], gap) for name, gap in bounds.items()}
    sums = index.sums_before(row_codes, limits, list(values))
    return rows.with_columns(pl.Series(name, array) for name, array in sums.items())


def last_before(
    events: pl.LazyFrame,
    key: str,
    column: pl.Expr,
    name: str,
    rows: pl.DataFrame,
    *,
    close: str = "close_ts",
) -> pl.DataFrame:
    """`rows` with `name`: the value of the entity's latest event strictly before the close."""
    stream = events.select(key, "ts", column.alias(name)).collect()
    codes = KeyCodes(pl.concat([stream[key], rows[key]]))
    index = PrefixIndex(stream, key, codes)
    bound = bound_seconds(rows[close], timedelta(0))
    return rows.with_columns(index.last_before(_row_codes(codes, rows, key), bound, name))
