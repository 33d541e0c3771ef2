"""Orders placed in their period and group, with what was returned and claimed of each.

An order is a purchase (amount > 0). Its group is its own channel or category, or its
customer's group at the start of the period: the lifecycle stage computed as the lifecycle
features compute it at that close, or the segment of the customer scores (the current
champion's, the same for every period). Without grouping every order is in group "all".
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cashback.settings import FeatureSettings
from features.asof import days, elapsed_days
from features.lifecycle import CLOSE, KEY, lifecycle_stage
from features.windows import Latest, window_aggregates
from models.rates.outcomes import returned_amounts
from pipelines.kpis.inputs import ALL, ORDER_GROUPS, GroupKey, KpiInputs, KpiWindow

UNSCORED = "unscored"
UNATTRIBUTED = "none"  # the offer kind of cashback claimed outside any exposure


@dataclass(frozen=True)
class Grouping:
    """How orders are grouped: by a key, or all together, and why when a key was dropped.

    Attributes:
        key: the grouping asked for and possible (None: all together).
        note: why the grouping asked for could not be used (empty when it was).
    """

    key: GroupKey | None
    note: str = ""


def grouping(inputs: KpiInputs, key: GroupKey | None) -> Grouping:
    """The grouping to use: `key`, unless the data cannot support it (then all, with why)."""
    if key == "segment":
        has_segments = inputs.scores is not None and "segment" in inputs.scores.collect_schema()
        if not has_segments:
            return Grouping(
                None, "no customer scores: run `cashback customers score` to group by segment"
            )
    return Grouping(key)


def stages_at_period_start(
    inputs: KpiInputs, rows: pl.LazyFrame, config: FeatureSettings
) -> pl.LazyFrame:
    """The lifecycle stage of each (customer_id, period) row at the period's start."""
    purchases = inputs.transactions.filter(pl.col("amount") > 0)
    closes = rows.select(KEY, pl.col("period").alias(CLOSE)).unique()
    recent = window_aggregates(
        purchases,
        KEY,
        closes,
        sums={"n": pl.lit(1, dtype=pl.Int64)},
        windows={"365": days(365)},
        latest={"last": Latest(pl.col("ts"))},
    )
    signups = inputs.customers.select(KEY, "signup_ts")
    return (
        recent.join(signups, on=KEY, how="left")
        .select(
            KEY,
            pl.col(CLOSE).alias("period"),
            pl.col("n@365").alias("purchases_365d"),
            elapsed_days(pl.col(CLOSE) - pl.col("last")).alias("days_since_last_purchase"),
            elapsed_days(pl.col(CLOSE) - pl.col("signup_ts")).clip(0).alias("tenure_days"),
        )
        .select(KEY, "period", lifecycle_stage(config).alias("group"))
    )


def orders(
    inputs: KpiInputs, window: KpiWindow, group: Grouping, config: FeatureSettings
) -> pl.LazyFrame:
    """The window's orders: txn_id, customer_id, ts, period, group, channel, amount, kept.

    `kept` is the share of the order not returned (1 when nothing was).
    """
    placed = (
        inputs.transactions.filter(pl.col("amount") > 0, window.contains(pl.col("ts")))
        .select("txn_id", KEY, "ts", "amount", "channel", "category")
        .with_columns(window.period_start(pl.col("ts")).alias("period"))
        .join(returned_amounts(inputs.transactions), on="txn_id", how="left")
        .with_columns(
            (
                1
                - pl.col("returned").fill_null(0.0).clip(upper_bound=pl.col("amount"))
                / pl.col("amount")
            ).alias("kept")
        )
        .drop("returned")
    )
    return _with_group(inputs, placed, group, config).drop("category")


def _with_group(
    inputs: KpiInputs, placed: pl.LazyFrame, group: Grouping, config: FeatureSettings
) -> pl.LazyFrame:
    """`placed` with each order's `group`."""
    if group.key is None:
        return placed.with_columns(pl.lit(ALL).alias("group"))
    if group.key in ORDER_GROUPS:
        return placed.with_columns(pl.col(group.key).alias("group"))
    if group.key == "segment" and inputs.scores is not None:
        segments = inputs.scores.select(KEY, pl.col("segment").cast(pl.String).alias("group"))
        return placed.join(segments, on=KEY, how="left").with_columns(
            pl.col("group").fill_null(UNSCORED)
        )
    stages = stages_at_period_start(inputs, placed.select(KEY, "period"), config)
    return placed.join(stages, on=[KEY, "period"], how="left")
