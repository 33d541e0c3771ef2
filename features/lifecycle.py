"""Lifecycle stage and RFM scores, from behaviour features as of a close.

Lifecycle rules (settings `features.*`):
- new: tenure below `new_customer_days`;
- inactive: no purchase for `inactive_days` or more (or never, once no longer new);
- at_risk: silent for longer than `at_risk_gap_multiple` typical gaps between purchases
  (365 days / purchases in the last year) and at least `at_risk_min_days`;
- regular: everyone else.

RFM scores are quintile scores 1-5 (5 = most recent, most frequent, highest spend) of days
since the last purchase, purchases and spend over 365 days, among customers who bought in
that year; 0 for customers who did not. The quintile boundaries are those of the close: they
are computed, for each close, from a fixed hash sample of customers (all of them in worlds up
to `rfm_sample_customers`), so training and serving use exactly the same boundaries.
"""

from __future__ import annotations

import polars as pl

from cashback.settings import FeatureSettings
from cashback.vocab import Lifecycle
from features.asof import cents, days, elapsed_days
from features.windows import Latest, window_aggregates

KEY = "customer_id"
CLOSE = "close_ts"
QUANTILES = (0.2, 0.4, 0.6, 0.8)
RFM_INPUTS = {"r": "days_since_last_purchase", "f": "purchases_365d", "m": "spend_365d"}
RFM_COLUMNS = ("rfm_r", "rfm_f", "rfm_m", "rfm_total")


def lifecycle_stage(config: FeatureSettings) -> pl.Expr:
    """The lifecycle stage of each row.

    Needs tenure_days, days_since_last_purchase and purchases_365d.
    """
    tenure = pl.col("tenure_days")
    silent = pl.col("days_since_last_purchase")
    gap = 365 / pl.col("purchases_365d")
    at_risk = silent > pl.max_horizontal(gap * config.at_risk_gap_multiple, config.at_risk_min_days)
    return (
        pl.when(tenure < config.new_customer_days)
        .then(pl.lit(Lifecycle.NEW.value))
        .when(silent.is_null() | (silent >= config.inactive_days))
        .then(pl.lit(Lifecycle.INACTIVE.value))
        .when((pl.col("purchases_365d") > 0) & at_risk)
        .then(pl.lit(Lifecycle.AT_RISK.value))
        .otherwise(pl.lit(Lifecycle.REGULAR.value))
        .alias("lifecycle")
    )


def rfm_sample(customers: pl.LazyFrame, size: int) -> pl.LazyFrame:
    """The fixed sample of customers whose values set the RFM boundaries at each close."""
    return (
        customers.select(KEY)
        .with_columns(pl.col(KEY).hash(seed=20251).alias("__h"))
        .sort("__h", KEY)
        .head(size)
        .drop("__h")
    )


def rfm_boundaries(sample_features: pl.LazyFrame) -> pl.LazyFrame:
    """Per close, the quintile boundaries of R, F and M among customers who bought that year."""
    active = sample_features.filter(pl.col("purchases_365d") > 0)
    return active.group_by(CLOSE).agg(
        pl.col(column).quantile(q, interpolation="linear").alias(f"{name}_q{int(q * 100)}")
        for name, column in RFM_INPUTS.items()
        for q in QUANTILES
    )


def rfm_scores(features: pl.LazyFrame, boundaries: pl.LazyFrame) -> pl.LazyFrame:
    """Attach rfm_r, rfm_f, rfm_m (0-5) and rfm_total to rows that have R, F and M inputs."""
    joined = features.join(boundaries, on=CLOSE, how="left", maintain_order="left")
    bought = pl.col("purchases_365d") > 0

    def score(name: str, *, lower_is_better: bool) -> pl.Expr:
        value = pl.col(RFM_INPUTS[name])
        cuts = [pl.col(f"{name}_q{int(q * 100)}") for q in QUANTILES]
        above = [(value < c) if lower_is_better else (value > c) for c in cuts]
        points = pl.sum_horizontal(*(a.fill_null(value=False).cast(pl.Int64) for a in above))
        return pl.when(bought).then(1 + points).otherwise(0).cast(pl.Int64).alias(f"rfm_{name}")

    scored = joined.with_columns(
        score("r", lower_is_better=True),
        score("f", lower_is_better=False),
        score("m", lower_is_better=False),
    ).with_columns((pl.col("rfm_r") + pl.col("rfm_f") + pl.col("rfm_m")).alias("rfm_total"))
    cut_columns = [f"{n}_q{int(q * 100)}" for n in RFM_INPUTS for q in QUANTILES]
    return scored.drop(cut_columns)


def rfm_inputs(transactions: pl.LazyFrame, rows: pl.LazyFrame) -> pl.LazyFrame:
    """Only what RFM needs (recency, purchases and spend over 365 days) for rows."""
    purchases = transactions.filter(pl.col("amount") > 0)
    frame = window_aggregates(
        purchases,
        KEY,
        rows,
        sums={"n": pl.lit(1, dtype=pl.Int64), "s": cents(pl.col("amount"))},
        windows={"365": days(365)},
        latest={"last": Latest(pl.col("ts"))},
    )
    return frame.select(
        KEY,
        CLOSE,
        pl.col("n@365").alias("purchases_365d"),
        (pl.col("s@365") / 100).alias("spend_365d"),
        elapsed_days(pl.col(CLOSE) - pl.col("last")).alias("days_since_last_purchase"),
    )
