"""Point-in-time lookups at arbitrary instants (fresh claim features), and shared helpers.

A window aggregate "sum of x over [t - w, t)" is C(t) - C(t - w), where C(b) is the running
sum of x over the entity's events strictly before b. Running sums are computed once per
event stream; each boundary is one as-of join of the requested rows against them, exact to
the microsecond. Batch features at daily closes use `features.windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

EVENT_TS = "__event_ts"


def cents(amount: pl.Expr) -> pl.Expr:
    """Money as whole cents, so running sums are exact (and equal on every path)."""
    return (amount * 100).round(0).cast(pl.Int64)


def running_sums(
    events: pl.LazyFrame, key: str, values: dict[str, pl.Expr], *, ts: str = "ts"
) -> pl.LazyFrame:
    """Running sums of `values` per `key`, in time order, one row per event.

    Values must be integers (counts, cents): sums are then exact. The per-entity running
    sum is the global running sum minus its value where the entity's events start, which
    needs no group-by.

    Args:
        events: the event stream (must have `key` and `ts`).
        key: the entity column (e.g. customer_id).
        values: output column name to the per-event integer expression to accumulate.
        ts: the event time column.

    Returns:
        Columns `key`, `EVENT_TS` and one running sum per value, sorted by time.
    """
    per_event = events.select(
        pl.col(key), pl.col(ts).alias(EVENT_TS), *(e.alias(n) for n, e in values.items())
    ).sort(key, EVENT_TS)
    starts = (pl.col(key) != pl.col(key).shift(1)).fill_null(value=True)

    def per_entity(name: str) -> pl.Expr:
        total = pl.col(name).cum_sum()
        before_entity = pl.when(starts).then(total - pl.col(name)).forward_fill()
        return (total - before_entity).alias(name)

    return per_event.with_columns(per_entity(n) for n in values).sort(EVENT_TS)


def running_last(
    events: pl.LazyFrame, key: str, values: dict[str, pl.Expr], *, ts: str = "ts"
) -> pl.LazyFrame:
    """Per-event values for "the latest value before t" lookups (values must be non-null)."""
    return events.select(
        pl.col(key), pl.col(ts).alias(EVENT_TS), *(e.alias(n) for n, e in values.items())
    ).sort(EVENT_TS)


def values_before(
    rows: pl.LazyFrame,
    sums: pl.LazyFrame,
    key: str,
    boundary: pl.Expr,
    columns: Sequence[str],
    suffix: str,
    *,
    fill: float | None = 0,
) -> pl.LazyFrame:
    """Attach to each row the running values of its entity strictly before `boundary`.

    Args:
        rows: requested rows with `key` (any other columns are kept).
        sums: output of `running_sums` / `running_last` for the same key.
        key: the entity column.
        boundary: expression over `rows` giving the time bound (exclusive).
        columns: which running columns to attach.
        suffix: appended to each attached column's name.
        fill: value for entities with no event before the bound (None keeps nulls).

    Returns:
        `rows` with the attached columns, in the rows' original order.
    """
    bound = f"__bound{suffix}"
    right = sums.select(key, EVENT_TS, *columns).rename({c: f"{c}{suffix}" for c in columns})
    joined = (
        rows.with_row_index("__order")
        .with_columns(boundary.alias(bound))
        .sort(bound)
        .join_asof(
            right,
            left_on=bound,
            right_on=EVENT_TS,
            by=key,
            strategy="backward",
            allow_exact_matches=False,  # strictly before the bound: no leakage at the bound
            check_sortedness=False,  # both sides are sorted on their time key above
        )
        .sort("__order")
        .drop("__order", bound, EVENT_TS)
    )
    if fill is None:
        return joined
    return joined.with_columns(pl.col(f"{c}{suffix}").fill_null(fill) for c in columns)


def elapsed_days(delta: pl.Expr) -> pl.Expr:
    """A duration in (fractional) days, to the microsecond."""
    return delta.dt.total_microseconds() / 86_400_000_000


def days(n: float) -> timedelta:
    """A window length."""
    return timedelta(days=n)
