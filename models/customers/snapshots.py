"""Snapshots for customer models: when we look, who counts, and what happened next.

A snapshot is a daily close s. Its population is every customer who bought before s and
whose last purchase is at most `inactive_limit_days` old; customers silent for longer are
outside the scored population. Its churn label is "no purchase in [s, s + H)".

Snapshots are planned backwards from the end of the data:
- validation: the latest close whose label window ends by the end of the data (held out);
- calibration: H before it, so its label window ends exactly at the validation snapshot
  (early stopping and probability calibration);
- training: monthly before that (every label window ends before the validation snapshot:
  no overlap with what the model is judged on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import CustomerModelSettings
from features.windows import Latest, window_aggregates

KEY = "customer_id"
CLOSE = "close_ts"
SNAPSHOT = "snapshot"
ROLE = "role"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class SnapshotPlan:
    """The closes a customer model learns from and is judged on.

    Attributes:
        train: training snapshots, oldest first.
        calibration: early stopping and calibration snapshot.
        validation: the held-out snapshot.
        horizon: the label window's length.
        data_start: the first event's day.
        data_end: the close after the last event.
    """

    train: tuple[datetime, ...]
    calibration: datetime
    validation: datetime
    horizon: timedelta
    data_start: datetime
    data_end: datetime

    def roles(self) -> dict[datetime, str]:
        """Each snapshot and its role."""
        out = dict.fromkeys(self.train, "train")
        out[self.calibration] = "calibration"
        out[self.validation] = "validation"
        return out


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def plan(
    data_start: datetime,
    data_end: datetime,
    horizon_days: int,
    config: CustomerModelSettings,
    validation: datetime | None = None,
) -> SnapshotPlan:
    """Plan the snapshots.

    Args:
        data_start: time of the first purchase.
        data_end: the close after the last event.
        horizon_days: the label window.
        config: number and spacing of training snapshots, history needed.
        validation: the validation snapshot (default: the latest one the data allows).

    Raises:
        CashbackError: when the snapshot is outside the data, the horizon runs past the end of
            the data, or there is no room for a training snapshot.
    """
    horizon = timedelta(days=horizon_days)
    first, end = _midnight(data_start), _midnight(data_end)
    latest = end - horizon
    chosen = _midnight(validation) if validation is not None else latest
    span = f"the data runs from {first:%Y-%m-%d} to {end:%Y-%m-%d}"
    if not first < chosen <= end:
        msg = f"snapshot {chosen:%Y-%m-%d} is outside the data: {span}"
        raise CashbackError(msg)
    if chosen > latest:
        msg = (
            f"a {horizon_days}-day horizon after the snapshot {chosen:%Y-%m-%d} runs past the "
            f"end of the data ({end:%Y-%m-%d}); the latest possible snapshot is "
            f"{latest:%Y-%m-%d}"
        )
        raise CashbackError(msg)
    calibration = chosen - horizon
    step = timedelta(days=config.snapshot_step_days)
    earliest = first + timedelta(days=config.min_history_days)
    train = tuple(
        s
        for s in (calibration - step * k for k in range(config.train_snapshots, 0, -1))
        if s >= earliest
    )
    if calibration < earliest or not train:
        msg = (
            f"no room for training snapshots: {span}; a validation snapshot at "
            f"{chosen:%Y-%m-%d} needs a calibration snapshot {horizon_days} days earlier and "
            f"monthly training snapshots before it, each after {config.min_history_days} "
            "days of history (shorten CASHBACK_CUSTOMERS__CHURN_HORIZON_DAYS or "
            "__MIN_HISTORY_DAYS, or add history)"
        )
        raise CashbackError(msg)
    return SnapshotPlan(train, calibration, chosen, horizon, first, end)


def population(
    purchases: pl.LazyFrame, snapshots: SnapshotPlan, config: CustomerModelSettings
) -> pl.LazyFrame:
    """Customers scored at each snapshot, with their churn label and later purchases.

    Args:
        purchases: transactions with amount > 0 (customer_id, ts, amount).
        snapshots: the plan.
        config: the inactivity limit.

    Returns:
        customer_id, `ts` (the snapshot), `role`, `churned` (1: no purchase in [s, s + H)),
        `future_purchases` and `future_spend` in that window.
    """
    roles = snapshots.roles()
    closes = pl.LazyFrame(
        {CLOSE: list(roles), ROLE: list(roles.values())},
        schema={CLOSE: pl.Datetime("us", "UTC"), ROLE: pl.String},
    )
    customers = purchases.select(KEY).unique()
    rows = customers.join(closes, how="cross")
    seen = window_aggregates(
        purchases,
        KEY,
        rows,
        sums={"n": pl.lit(1, pl.Int64)},
        windows={"limit": timedelta(days=config.inactive_limit_days)},
        latest={"last": Latest(pl.col("ts"))},
    ).filter(pl.col("n@limit") > 0)
    later = seen.with_columns((pl.col(CLOSE) + snapshots.horizon).alias("__end"))
    future = window_aggregates(
        purchases,
        KEY,
        later.select(KEY, "__end").rename({"__end": CLOSE}),
        sums={"p": pl.lit(1, pl.Int64), "s": (pl.col("amount") * 100).round(0).cast(pl.Int64)},
        windows={"h": snapshots.horizon},
    ).rename({CLOSE: "__end"})
    return (
        later.join(future.unique(), on=[KEY, "__end"], how="left", maintain_order="left")
        .select(
            KEY,
            pl.col(CLOSE).alias("ts"),
            ROLE,
            (pl.col("p@h") == 0).cast(pl.Int8).alias("churned"),
            pl.col("p@h").alias("future_purchases"),
            (pl.col("s@h") / 100).alias("future_spend"),
        )
        .sort("ts", KEY)
    )
