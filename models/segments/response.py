"""Response of each segment to the cashback rate, from randomized exposures.

An exposure is randomized when the logging policy could have shown another rate: its
logged propensity is strictly between 0 and 1 (exploration; holdout, experiment arms and
policies without exploration log 1). Outcome: the spend (purchases, not returns) attributed
to the exposure (`cashback.attribution`), over the exposures whose whole window lies in
the year before the close.

Per segment and rate, the mean spend per exposure is the self-normalized inverse propensity
(Hajek) estimate, weights `1 / propensity`: what the segment's exposures would have spent
had every one of them been shown that rate, which the raw mean by rate is not (the policy
gives different customers different rates). The response per percentage point is the
slope of the weighted least-squares line of spend per exposure on the rate (in points),
with the same weights; relative: divided by the segment's weighted mean spend.

Segments are those at the close: the exposures are earlier, so a customer who changed
behaviour during the year counts in its segment of today. The segments are defined by that
same year's purchases, so the levels of spend per exposure are selected on the outcome
(which is why `inactive`, who by definition spent nothing, gets no response); the
comparison between rates within a segment is what the randomization protects.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from cashback.attribution import attribute_to_exposures
from models.segments.model import INACTIVE

RESPONSE_SCHEMA = pl.Schema(
    {
        "segment": pl.String,
        "rate": pl.Float64,
        "exposures": pl.Int64,
        "spend_per_exposure": pl.Float64,
    }
)
SLOPE_SCHEMA = pl.Schema(
    {
        "segment": pl.String,
        "randomized_exposures": pl.Int64,
        "rate_response_per_point": pl.Float64,
        "rate_response_relative": pl.Float64,
    }
)


def randomized_exposures(
    transactions: pl.LazyFrame,
    exposures: pl.LazyFrame,
    segments: pl.DataFrame,
    close: datetime,
    days: int = 365,
) -> pl.DataFrame:
    """Randomized exposures of the year before the close with their spend and segment.

    Args:
        transactions: the contract table.
        exposures: the contract table.
        segments: `customer_id` and `segment` at the close.
        close: the close.
        days: how far back exposures are taken.

    Returns:
        One row per randomized exposure: segment, rate, propensity, spend.
    """
    start = close - timedelta(days=days)
    window = exposures.filter(pl.col("ts") >= start, pl.col("ts") < close)
    purchases = transactions.filter(
        pl.col("amount") > 0, pl.col("ts") >= start, pl.col("ts") < close
    ).select("customer_id", "ts", "amount")
    spend = (
        attribute_to_exposures(purchases, window)
        .filter(pl.col("exposure_id").is_not_null())
        .group_by("exposure_id")
        .agg(pl.col("amount").sum().alias("spend"))
    )
    randomized = window.filter(
        pl.col("valid_until") <= close,
        pl.col("propensity") > 0,
        pl.col("propensity") < 1,
        pl.col("rate").is_not_null(),
    )
    return (
        randomized.select("exposure_id", "customer_id", "rate", "propensity")
        .join(spend, on="exposure_id", how="left")
        .join(
            segments.lazy().select("customer_id", "segment").filter(pl.col("segment") != INACTIVE),
            on="customer_id",
            how="inner",
        )
        .select("segment", "rate", "propensity", pl.col("spend").fill_null(0.0))
        .collect()
    )


def rate_response(randomized: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Spend per exposure by segment and rate, and each segment's slope.

    Args:
        randomized: the output of `randomized_exposures`.

    Returns:
        (by rate: segment, rate, exposures, spend_per_exposure;
        by segment: segment, randomized_exposures, rate_response_per_point,
        rate_response_relative), both empty without randomized exposures. The slope is null
        for a segment seen at fewer than two rates.
    """
    if randomized.height == 0:
        return pl.DataFrame(schema=RESPONSE_SCHEMA), pl.DataFrame(schema=SLOPE_SCHEMA)
    weighted = randomized.with_columns(
        (1.0 / pl.col("propensity")).alias("w"), (pl.col("rate") * 100).alias("x")
    )
    by_rate = (
        weighted.group_by("segment", "rate")
        .agg(
            pl.len().cast(pl.Int64).alias("exposures"),
            ((pl.col("w") * pl.col("spend")).sum() / pl.col("w").sum()).alias("spend_per_exposure"),
        )
        .sort("segment", "rate")
    )
    w, x, y = pl.col("w"), pl.col("x"), pl.col("spend")
    x_mean = (w * x).sum() / w.sum()
    y_mean = (w * y).sum() / w.sum()
    spread = (w * (x - x_mean) ** 2).sum()
    slope = pl.when(spread > 0).then((w * (x - x_mean) * (y - y_mean)).sum() / spread)
    by_segment = (
        weighted.group_by("segment")
        .agg(
            pl.len().cast(pl.Int64).alias("randomized_exposures"),
            slope.alias("rate_response_per_point"),
            y_mean.alias("__mean"),
        )
        .with_columns(
            pl.when(pl.col("__mean") > 0)
            .then(pl.col("rate_response_per_point") / pl.col("__mean"))
            .alias("rate_response_relative")
        )
        .drop("__mean")
        .sort("segment")
    )
    return by_rate.cast(RESPONSE_SCHEMA), by_segment.cast(SLOPE_SCHEMA)
