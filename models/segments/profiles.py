"""A profile per segment: who is in it, what they buy, how they age, what cashback does.

Columns (one row per segment, the clusters by size then `inactive`):
- customers, share (of every customer signed up by the close);
- spend_365d, purchases_365d: means over the segment; avg_basket: its spend over its
  purchases (365 days); recency_days: median days since the last purchase (null for
  `inactive` customers who never bought); rfm_total: mean RFM total (0 when inactive);
- lifecycle_<stage>: share of each lifecycle stage;
- main_channel, main_category: the largest mean share among members who bought in the
  share window (null when none did);
- churn_rate: share of the segment with no purchase in the `churn_days` after the close,
  null when that period is not in the data (e.g. at the latest close);
- avg_rate_365d: mean cashback rate received over 365 days, among members with claims;
- randomized_exposures, rate_response_per_point, rate_response_relative: response to the
  rate from randomized exposures (`models.segments.response`), null without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from cashback.vocab import Lifecycle
from models.segments.model import share_label
from models.segments.response import SLOPE_SCHEMA


def _main(columns: Sequence[str], window_count: str, name: str) -> pl.Expr:
    """The label of the column with the largest mean among members who bought in the window."""
    if not columns:
        return pl.lit(None, dtype=pl.String).alias(name)
    bought = pl.col(window_count).fill_null(0) > 0
    means = [pl.col(c).filter(bought).mean().fill_null(-1.0) for c in columns]
    best = pl.max_horizontal(means)
    label = pl.coalesce(
        [
            pl.when(m == best).then(pl.lit(share_label(c)))
            for c, m in zip(columns, means, strict=True)
        ]
    )
    return pl.when(best >= 0).then(label).alias(name)


def segment_profiles(
    frame: pl.DataFrame,
    order: Sequence[str],
    *,
    channels: Sequence[str],
    categories: Sequence[str],
    window_count: str,
    response: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The profile of each segment.

    Args:
        frame: one row per customer: `segment`, `lifecycle`, `purchases_365d`,
            `spend_365d`, `days_since_last_purchase`, `rfm_total`, `avg_rate_365d`,
            `churned` (bool, null when unknown), the share columns and `window_count`.
        order: the segments, in the order of the rows (segments without customers get a
            row of zeros and nulls).
        channels: channel share columns.
        categories: category share columns.
        window_count: purchases over the share window (e.g. `purchases_90d`).
        response: `rate_response`'s per-segment table (None: no randomized exposures).

    Returns:
        One row per segment of `order`.
    """
    total = max(frame.height, 1)
    stages = [s.value for s in Lifecycle]
    profiles = frame.group_by("segment").agg(
        pl.len().cast(pl.Int64).alias("customers"),
        (pl.len() / total).alias("share"),
        pl.col("spend_365d").fill_null(0.0).mean().alias("spend_365d"),
        pl.col("purchases_365d").fill_null(0).mean().alias("purchases_365d"),
        pl.when(pl.col("purchases_365d").sum() > 0)
        .then(pl.col("spend_365d").sum() / pl.col("purchases_365d").sum())
        .alias("avg_basket"),
        pl.col("days_since_last_purchase").median().alias("recency_days"),
        pl.col("rfm_total").fill_null(0).mean().alias("rfm_total"),
        *((pl.col("lifecycle") == s).mean().alias(f"lifecycle_{s}") for s in stages),
        _main(channels, window_count, "main_channel"),
        _main(categories, window_count, "main_category"),
        pl.col("churned").cast(pl.Float64).mean().alias("churn_rate"),
        pl.col("avg_rate_365d").mean().alias("avg_rate_365d"),
    )
    slopes = response if response is not None else pl.DataFrame(schema=SLOPE_SCHEMA)
    ordered = pl.DataFrame({"segment": list(order)}, schema={"segment": pl.String})
    return (
        ordered.join(profiles, on="segment", how="left", maintain_order="left")
        .join(slopes, on="segment", how="left", maintain_order="left")
        .with_columns(pl.col("customers").fill_null(0), pl.col("share").fill_null(0.0))
    )
