"""Snapshot planning, the scored population and churn labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from cashback.errors import CashbackError
from cashback.settings import CustomerModelSettings
from models.customers.snapshots import plan, population

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = CustomerModelSettings(
    train_snapshots=3, snapshot_step_days=30, min_history_days=30, inactive_limit_days=100
)


def test_snapshots_keep_every_training_label_window_before_the_validation_snapshot() -> None:
    # given a year of data and a 60-day horizon
    snapshots = plan(T0, T0 + timedelta(days=365), 60, CONFIG)

    # then validation is 60 days before the end, calibration 60 days before that
    assert snapshots.validation == T0 + timedelta(days=305)
    assert snapshots.calibration == T0 + timedelta(days=245)
    assert snapshots.train == tuple(T0 + timedelta(days=d) for d in (155, 185, 215))
    for s in (*snapshots.train, snapshots.calibration):
        assert s + snapshots.horizon <= snapshots.validation


@pytest.mark.parametrize(
    ("validation", "match"),
    [
        (T0 - timedelta(days=3), "outside the data"),
        (T0 + timedelta(days=340), "runs past the end of the data"),
        (T0 + timedelta(days=80), "no room for training snapshots"),
    ],
)
def test_impossible_snapshots_are_clear_errors(validation: datetime, match: str) -> None:
    with pytest.raises(CashbackError, match=match):
        plan(T0, T0 + timedelta(days=365), 60, CONFIG, validation)


def test_population_counts_recent_buyers_and_labels_no_purchase_in_the_horizon() -> None:
    # given three customers: active then silent, active and buying on, long silent
    day = timedelta(days=1)
    purchases = pl.LazyFrame(
        {
            "customer_id": ["a", "a", "b", "b", "b", "c"],
            "ts": [T0 + d * day for d in (200, 290, 250, 300, 320, 10)],
            "amount": [10.0, 20.0, 5.0, 7.5, 2.5, 9.0],
        },
        schema={"customer_id": pl.String, "ts": pl.Datetime("us", "UTC"), "amount": pl.Float64},
    )
    snapshots = plan(T0, T0 + timedelta(days=365), 60, CONFIG)

    # when the validation snapshot's population is built (day 305)
    rows = population(purchases, snapshots, CONFIG).collect()
    at = rows.filter(pl.col("ts") == snapshots.validation).sort("customer_id")

    # then c (silent for more than 100 days) is out; a churned; b bought once more for 2.50
    assert at["customer_id"].to_list() == ["a", "b"]
    assert at["churned"].to_list() == [1, 0]
    assert at["future_purchases"].to_list() == [0, 1]
    assert at["future_spend"].to_list() == [0.0, 2.5]
