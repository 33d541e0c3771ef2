"""Device and IP features as of a daily close: how many accounts share them, how busy they are.

Entities: `device_id` and `ip_hash` (IPs are only ever seen hashed). Only claims strictly
before the close count.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from features.asof import days, elapsed_days
from features.windows import window_aggregates

CLOSE = "close_ts"
SHARED_WINDOW_DAYS = 30
ENTITIES: dict[str, str] = {"device": "device_id", "ip": "ip_hash"}


def _busy(claims: pl.LazyFrame, rows: pl.LazyFrame, key: str, prefix: str) -> pl.LazyFrame:
    """Claims by the entity over the 24 hours and 7 days before the close."""
    events = claims.filter(pl.col(key).is_not_null())
    windows = {"24h": timedelta(hours=24), "7d": days(7)}
    sums = {"n": pl.lit(1, pl.Int64)}
    frame = window_aggregates(events, key, rows, sums=sums, windows=windows)
    return frame.rename({"n@24h": f"{prefix}_claims_24h", "n@7d": f"{prefix}_claims_7d"})


def _shared(
    claims: pl.LazyFrame, customers: pl.LazyFrame, keys: pl.LazyFrame, key: str, prefix: str
) -> pl.LazyFrame:
    """Distinct accounts on the entity over 30 days, and the age of the youngest of them."""
    window = claims.select(key, "customer_id", "ts").filter(pl.col(key).is_not_null())
    seen = (
        keys.join(window, on=key, how="inner")
        .filter(
            pl.col("ts") < pl.col(CLOSE), pl.col("ts") >= pl.col(CLOSE) - days(SHARED_WINDOW_DAYS)
        )
        .select(key, CLOSE, "customer_id")
        .unique()
        .join(customers.select("customer_id", "signup_ts"), on="customer_id", how="left")
    )
    youngest = f"{prefix}_youngest_account_days"
    return (
        seen.group_by(key, CLOSE)
        .agg(
            pl.len().cast(pl.Int64).alias(f"{prefix}_customers_{SHARED_WINDOW_DAYS}d"),
            pl.col("signup_ts").max().alias("__latest_signup"),
        )
        .with_columns(
            elapsed_days(pl.col(CLOSE) - pl.col("__latest_signup")).clip(0).alias(youngest)
        )
        .drop("__latest_signup")
    )


def network_features(
    claims: pl.LazyFrame, customers: pl.LazyFrame, rows: pl.LazyFrame, entity: str
) -> pl.LazyFrame:
    """Features of a device or an IP for requested (key, close_ts) rows.

    Args:
        claims: the contract table.
        customers: the contract table (sign-up times).
        rows: requested rows with the entity's key (`device_id` or `ip_hash`) and `close_ts`.
        entity: "device" or "ip".

    Returns:
        `rows` with `<entity>_customers_30d`, `<entity>_youngest_account_days` (null when the
        entity had no claim in 30 days), `<entity>_claims_24h` and `<entity>_claims_7d`.
    """
    key = ENTITIES[entity]
    keys = rows.select(key, CLOSE).unique()
    shared = _shared(claims, customers, keys, key, entity)
    busy = _busy(claims, keys, key, entity)
    features = busy.join(shared, on=[key, CLOSE], how="left").with_columns(
        pl.col(f"{entity}_customers_{SHARED_WINDOW_DAYS}d").fill_null(0)
    )
    return rows.join(features, on=[key, CLOSE], how="left", maintain_order="left")
