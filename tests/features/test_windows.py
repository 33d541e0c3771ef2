"""The window-aggregate engine against a brute-force computation and at its edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from cashback.errors import CashbackError
from features.windows import Latest, window_aggregates

T0 = datetime(2025, 3, 1, tzinfo=UTC)
UTC_US = pl.Datetime("us", "UTC")
WINDOWS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def _events(rows: list[tuple[str, datetime, int]]) -> pl.LazyFrame:
    customers, times, amounts = zip(*rows, strict=True)
    return pl.LazyFrame(
        {"customer_id": customers, "ts": times, "amount": amounts},
        schema={"customer_id": pl.String, "ts": UTC_US, "amount": pl.Int64},
    )


def _rows(rows: list[tuple[str, datetime]]) -> pl.LazyFrame:
    customers, closes = zip(*rows, strict=True)
    return pl.LazyFrame(
        {"customer_id": customers, "close_ts": closes},
        schema={"customer_id": pl.String, "close_ts": UTC_US},
    )


def _aggregate(events: pl.LazyFrame, rows: pl.LazyFrame) -> pl.DataFrame:
    return window_aggregates(
        events,
        "customer_id",
        rows,
        sums={"n": pl.lit(1, pl.Int64), "amount": pl.col("amount")},
        windows=WINDOWS,
        latest={
            "last_amount": Latest(pl.col("amount")),
            "last_positive_ts": Latest(pl.col("ts"), where=pl.col("amount") > 0),
        },
    ).collect()


def test_window_edges_are_inclusive_at_the_start_and_exclusive_at_the_close() -> None:
    # given events exactly at the close, exactly 7 days before it, and just after that
    close = T0 + timedelta(days=10)
    events = _events(
        [
            ("a", close, 1000),
            ("a", close - timedelta(days=7), 10),
            ("a", close - timedelta(days=7, microseconds=1), 5),
            ("a", close - timedelta(microseconds=1), -3),
        ]
    )

    # when aggregated at the close
    out = _aggregate(events, _rows([("a", close)])).row(0, named=True)

    # then the event at the close is not counted, the one at close - 7 days is
    assert out["n@1d"] == 1
    assert out["amount@1d"] == -3
    assert out["n@7d"] == 2
    assert out["amount@7d"] == 7
    assert out["n@30d"] == 3
    assert out["amount@30d"] == 12
    # and the latest values are those strictly before the close, with the condition
    assert out["last_amount"] == -3
    assert out["last_positive_ts"] == close - timedelta(days=7)


def test_rows_keep_their_order_and_unknown_entities_get_zero_sums_and_null_latest() -> None:
    # given one customer with events, and rows for it and for an unknown customer
    events = _events([("a", T0, 4), ("a", T0 + timedelta(days=2), 6)])
    rows = _rows(
        [
            ("zz", T0 + timedelta(days=3)),
            ("a", T0 + timedelta(days=3)),
            ("a", T0 + timedelta(days=1)),
            ("a", T0 + timedelta(days=3)),
        ]
    )

    # when aggregated
    out = _aggregate(events, rows)

    # then every requested row is there in order, repeated rows alike
    assert out["customer_id"].to_list() == ["zz", "a", "a", "a"]
    assert out["amount@7d"].to_list() == [0, 10, 4, 10]
    assert out["n@1d"].to_list() == [0, 1, 1, 1]
    assert out["last_amount"].to_list() == [None, 6, 4, 6]


def test_latest_values_reach_back_beyond_the_longest_window() -> None:
    # given a customer whose only event is a year before the close
    close = T0 + timedelta(days=365)
    out = _aggregate(_events([("a", T0, 9)]), _rows([("a", close)])).row(0, named=True)

    # then no window counts it, but it is the latest event
    assert out["n@30d"] == 0
    assert out["last_amount"] == 9
    assert out["last_positive_ts"] == T0


def test_random_streams_equal_a_brute_force_computation() -> None:
    # given random events for 30 customers over 60 days and random (customer, close) rows
    rng = np.random.default_rng(3)
    n_events, n_rows = 3_000, 500
    customers = [f"c{i}" for i in range(30)]
    micros = rng.choice(60 * 86_400 * 1_000_000, n_events, replace=False)  # no ties
    events = _events(
        [
            (customers[c], T0 + timedelta(microseconds=int(s)), int(a))
            for c, s, a in zip(
                rng.integers(0, 30, n_events), micros, rng.integers(-50, 200, n_events), strict=True
            )
        ]
    )
    rows = _rows(
        [
            (customers[c], T0 + timedelta(days=int(d)))
            for c, d in zip(rng.integers(0, 30, n_rows), rng.integers(0, 61, n_rows), strict=True)
        ]
    )

    # when aggregated by the engine, and by filtering every event for every row
    out = _aggregate(events, rows)
    brute = _brute_force(events.collect(), rows.collect())

    # then both agree on every row and column
    assert out.equals(brute)


def _brute_force(events: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """Each row's aggregates by a cross join of the row with its customer's events."""
    joined = rows.with_row_index("row").join(events, on="customer_id", how="left")
    before = pl.col("ts") < pl.col("close_ts")
    sums = []
    for label, length in WINDOWS.items():
        inside = before & (pl.col("ts") >= pl.col("close_ts") - length)
        sums += [
            inside.fill_null(value=False).sum().cast(pl.Int64).alias(f"n@{label}"),
            pl.col("amount").filter(inside).sum().cast(pl.Int64).alias(f"amount@{label}"),
        ]
    positive = before & (pl.col("amount") > 0)
    return (
        joined.group_by("row", "customer_id", "close_ts", maintain_order=True)
        .agg(
            *sums,
            pl.col("amount")
            .filter(before)
            .sort_by(pl.col("ts").filter(before))
            .last()
            .alias("last_amount"),
            pl.col("ts").filter(positive).max().alias("last_positive_ts"),
        )
        .sort("row")
        .drop("row")
        .select(
            "customer_id",
            "close_ts",
            *(f"{v}@{label}" for v in ("n", "amount") for label in WINDOWS),
            "last_amount",
            "last_positive_ts",
        )
    )


@pytest.mark.parametrize("windows", [{}, {"0": timedelta(0)}, {"x": timedelta(days=-1)}])
def test_windows_must_be_given_and_positive(windows: dict[str, timedelta]) -> None:
    # given no window, a zero-length one, or a negative one
    # then the engine refuses with a message naming the windows
    with pytest.raises(CashbackError, match="window"):
        window_aggregates(
            _events([("a", T0, 1)]), "customer_id", _rows([("a", T0)]), sums={}, windows=windows
        )


def test_rows_from_an_unordered_lazy_plan_get_their_own_aggregates() -> None:
    # given 3,000 customers' events and rows built lazily from an unordered unique()
    # (a plan that polars may evaluate twice, numbering the rows differently each time)
    rng = np.random.default_rng(8)
    n = 30_000
    events = pl.LazyFrame(
        {
            "customer_id": [f"c{i}" for i in rng.integers(0, 3_000, n)],
            "ts": [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 90 * 24 * 60, n)],
            "amount": rng.integers(1, 100, n),
        },
        schema={"customer_id": pl.String, "ts": UTC_US, "amount": pl.Int64},
    )
    closes = pl.LazyFrame(
        {"close_ts": [T0 + timedelta(days=d) for d in (20, 50, 80)]},
        schema={"close_ts": UTC_US},
    )
    rows = events.select("customer_id").unique().join(closes, how="cross")

    # when aggregated, filtered, and the result read twice in one lazy plan, as a job would
    seen = window_aggregates(
        events,
        "customer_id",
        rows,
        sums={"n": pl.lit(1, pl.Int64)},
        windows={"7d": timedelta(days=7)},
    ).filter(pl.col("n@7d") > 0)
    twice = seen.select("customer_id", "close_ts", pl.col("n@7d").alias("again"))
    out = (
        seen.join(twice, on=["customer_id", "close_ts"], how="left")
        .collect()
        .sort("customer_id", "close_ts")
    )
    assert out["n@7d"].equals(out["again"])
    out = out.drop("again")

    # then every row's count is its own customer's, as a brute force computes it
    collected = events.collect()
    expected = (
        rows.collect()
        .join(collected, on="customer_id")
        .filter(
            (pl.col("ts") < pl.col("close_ts"))
            & (pl.col("ts") >= pl.col("close_ts") - timedelta(days=7))
        )
        .group_by("customer_id", "close_ts")
        .agg(pl.len().cast(pl.Int64).alias("n@7d"))
        .sort("customer_id", "close_ts")
    )
    assert out.equals(expected)
