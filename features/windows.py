"""Window aggregates at daily closes: the batch-feature engine.

A row (entity, close) asks for sums of per-event values over windows ending at the close,
`close - length <= ts < close`, for a few lengths (7, 30, 90 days, ...), and for the value
of the entity's latest event before the close (optionally among events meeting a
condition).

One lazy polars plan does it for every requested row:

1. number the distinct requested (entity, close) pairs, join them to the entity's events
   and keep the events strictly before the close (and, when no latest value is asked for,
   inside the longest window);
2. put each event in a bucket: how many window lengths it is older than (bucket k falls in
   windows k, k+1, ...; the last bucket, older than every window, only serves latest
   values);
3. group by (pair, bucket) with plain sums and arg-max lookups: a few cheap aggregates over
   the joined events, on integer keys;
4. group by pair over those few bucket rows: the window of length j sums buckets <= j.

Work grows with the events of the requested entities times their distinct closes (for the
latest close of every customer: one pass over the events). Values must be integers (counts,
cents): sums are then exact and equal on every path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from cashback.errors import CashbackError

EVENT_TS = "__event_ts"
BUCKET = "__bucket"
PAIR = "__pair"


@dataclass(frozen=True)
class Latest:
    """The value of an entity's latest event before the close.

    Attributes:
        value: per-event expression.
        where: only events meeting this condition count (every event when None).
    """

    value: pl.Expr
    where: pl.Expr | None = None


def _time_of(name: str) -> str:
    return f"__t_{name}"


def _per_event(
    events: pl.LazyFrame, key: str, sums: Mapping[str, pl.Expr], latest: Mapping[str, Latest]
) -> pl.LazyFrame:
    """One row per event: key, time, each summed value, each latest value and its time."""
    latest_columns: list[pl.Expr] = []
    for name, spec in latest.items():
        counted = pl.col("ts") if spec.where is None else pl.when(spec.where).then(pl.col("ts"))
        latest_columns += [spec.value.alias(name), counted.alias(_time_of(name))]
    return events.select(
        pl.col(key),
        pl.col("ts").alias(EVENT_TS),
        *(expr.alias(name) for name, expr in sums.items()),
        *latest_columns,
    )


def _bucket(close: str, lengths: list[timedelta]) -> pl.Expr:
    """How many of the window lengths each event is older than (0 = inside the shortest)."""
    older = [(pl.col(EVENT_TS) < pl.col(close) - length).cast(pl.Int8) for length in lengths]
    return pl.sum_horizontal(*older).alias(BUCKET)


def _check(windows: Mapping[str, timedelta]) -> list[tuple[str, timedelta]]:
    """The windows by length; each must be positive."""
    if not windows or min(windows.values()) <= timedelta(0):
        msg = f"window aggregates need at least one window longer than 0, got {dict(windows)}"
        raise CashbackError(msg)
    return sorted(windows.items(), key=lambda item: item[1])


def _joined(
    key: str,
    pairs: pl.LazyFrame,
    per_event: pl.LazyFrame,
    longest: timedelta | None,
    close: str,
) -> pl.LazyFrame:
    """Each numbered pair with its entity's events before the close (and after `longest`)."""
    before = pl.col(EVENT_TS) < pl.col(close)
    if longest is not None:
        before &= pl.col(EVENT_TS) >= pl.col(close) - longest
    return pairs.join(per_event, on=key, how="inner").filter(before)


def window_aggregates(
    events: pl.LazyFrame,
    key: str,
    rows: pl.LazyFrame,
    *,
    sums: Mapping[str, pl.Expr],
    windows: Mapping[str, timedelta],
    latest: Mapping[str, Latest] | None = None,
    close: str = "close_ts",
) -> pl.LazyFrame:
    """Window sums and latest values before each row's close.

    Args:
        events: the event stream (`key`, `ts` (UTC) and what the expressions need).
        key: the entity column.
        rows: requested rows with `key` and `close` (other columns kept, order kept).
        sums: value name to per-event integer expression.
        windows: window label to length; the window is `close - length <= ts < close`.
        latest: name to a latest value wanted before the close (any age).
        close: the rows' close column.

    Returns:
        `rows` with `{value}@{label}` per value and window (0 when the entity has no event
        in it) and one column per latest value (null without one).

    Raises:
        CashbackError: when no window is given or a length is not positive.
    """
    latest = latest or {}
    ordered = _check(windows)
    lengths = [length for _, length in ordered]
    # numbered once, eagerly: the plan reads the pairs twice, and two evaluations of a lazy
    # unique() may number them in different orders
    pairs = rows.select(key, close).unique().with_row_index(PAIR).collect().lazy()
    per_event = _per_event(events, key, sums, latest)
    joined = _joined(key, pairs, per_event, None if latest else lengths[-1], close)
    buckets = joined.group_by(PAIR, _bucket(close, lengths)).agg(
        *(pl.col(name).sum() for name in sums),
        *(
            expr
            for name in latest
            for expr in (pl.col(name).max_by(_time_of(name)), pl.col(_time_of(name)).max())
        ),
    )
    inside = [(pl.col(BUCKET) <= j).cast(pl.Int64) for j in range(len(ordered))]
    totals = buckets.group_by(PAIR).agg(
        *(
            (pl.col(name) * inside[j]).sum().alias(f"{name}@{label}")
            for name in sums
            for j, (label, _) in enumerate(ordered)
        ),
        *(pl.col(name).max_by(_time_of(name)) for name in latest),
    )
    features = pairs.join(totals, on=PAIR, how="left").drop(PAIR)
    sum_columns = [f"{name}@{label}" for name in sums for label, _ in ordered]
    return rows.join(features, on=[key, close], how="left", maintain_order="left").with_columns(
        pl.col(sum_columns).fill_null(0)
    )
