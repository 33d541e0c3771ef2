"""Attribution of outcomes to the exposure valid when they happened (windows never overlap)."""

from __future__ import annotations

import polars as pl


def attribute_to_exposures(events: pl.LazyFrame, exposures: pl.LazyFrame) -> pl.LazyFrame:
    """Attach to each event the exposure of its customer valid at the event's time.

    Args:
        events: rows with `customer_id` and `ts` (e.g. transactions or claims).
        exposures: rows with `exposure_id`, `customer_id`, `ts`, `valid_until`.

    Returns:
        `events` with `exposure_id` (null when no exposure was valid), in `events`' order
        sorted by time.
    """
    windows = exposures.select(
        "customer_id",
        pl.col("ts").alias("__exposure_ts"),
        "valid_until",
        pl.col("exposure_id").alias("__exposure_id"),
    ).sort("__exposure_ts")
    joined = events.sort("ts").join_asof(
        windows,
        left_on="ts",
        right_on="__exposure_ts",
        by="customer_id",
        strategy="backward",
        check_sortedness=False,  # both sides are sorted on the time key just above
    )
    valid = pl.col("ts") < pl.col("valid_until")
    return joined.with_columns(
        pl.when(valid).then(pl.col("__exposure_id")).alias("exposure_id")
    ).drop("__exposure_ts", "valid_until", "__exposure_id")
