"""Fresh claim features, exact at the claim's time, and request-time (on-demand) features.

Fresh features count what happened strictly before the claim's time `t`; "in the last hour"
means in [t - 1h, t), and counts include the claim itself. Serving keeps the same state
incrementally (each scored claim is recorded at once); training computes it here in batch,
with the same definitions, so both paths agree exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import polars as pl

from features.asof import running_last, running_sums, values_before

FRESH_WINDOW = timedelta(hours=1)
FRESH_KEYS: dict[str, str] = {"customer": "customer_id", "device": "device_id", "ip": "ip_hash"}
FRESH_FEATURES: tuple[str, ...] = (
    "customer_claims_1h",
    "device_claims_1h",
    "ip_claims_1h",
    "minutes_since_last_claim",
    "receipt_seen_before",
)
ON_DEMAND_FEATURES: tuple[str, ...] = ("amount_vs_avg_basket", "cashback_share", "hour_of_day")


def _claims_in_last_hour(
    claims: pl.LazyFrame, rows: pl.LazyFrame, prefix: str, key: str
) -> pl.LazyFrame:
    sums = running_sums(claims.filter(pl.col(key).is_not_null()), key, {"n": pl.lit(1, pl.Int64)})
    frame = values_before(rows, sums, key, pl.col("ts"), ["n"], "@t")
    frame = values_before(frame, sums, key, pl.col("ts") - FRESH_WINDOW, ["n"], "@1h")
    count = pl.when(pl.col(key).is_not_null()).then(pl.col("n@t") - pl.col("n@1h") + 1)
    return frame.with_columns(count.alias(f"{prefix}_claims_1h")).drop("n@t", "n@1h")


def fresh_features(claims: pl.LazyFrame, rows: pl.LazyFrame) -> pl.LazyFrame:
    """Fresh features for claim rows (customer_id, device_id, ip_hash, receipt_hash, ts).

    Args:
        claims: every earlier claim (the contract table; the rows' own claims may be in it).
        rows: the claims being scored.

    Returns:
        `rows` with claims in the last hour by the customer, the device and the IP
        (including this one; null for a missing device or IP), minutes since the customer's
        previous claim (null for a first claim), and whether the receipt was claimed before.
    """
    frame = rows
    for prefix, key in FRESH_KEYS.items():
        frame = _claims_in_last_hour(claims, frame, prefix, key)
    last = running_last(claims, "customer_id", {"previous_claim_ts": pl.col("ts")})
    frame = values_before(
        frame, last, "customer_id", pl.col("ts"), ["previous_claim_ts"], "", fill=None
    )
    receipts = running_sums(
        claims.filter(pl.col("receipt_hash").is_not_null()),
        "receipt_hash",
        {"seen": pl.lit(1, pl.Int64)},
    )
    frame = values_before(frame, receipts, "receipt_hash", pl.col("ts"), ["seen"], "")
    minutes = (pl.col("ts") - pl.col("previous_claim_ts")).dt.total_microseconds() / 60_000_000
    return frame.with_columns(
        minutes.alias("minutes_since_last_claim"),
        (pl.col("seen") > 0).alias("receipt_seen_before"),
    ).drop("previous_claim_ts", "seen")


def on_demand_features(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Request-time features from the claim and the customer's batch features (vectorized)."""
    basket = pl.col("avg_basket_90d")
    return frame.with_columns(
        pl.when(basket > 0).then(pl.col("amount") / basket).alias("amount_vs_avg_basket"),
        pl.when(pl.col("amount") > 0)
        .then(pl.col("cashback_amount") / pl.col("amount"))
        .alias("cashback_share"),
        pl.col("ts").dt.hour().cast(pl.Int64).alias("hour_of_day"),
    )


def on_demand_row(claim: Mapping[str, object], avg_basket_90d: float | None) -> dict[str, object]:
    """The same request-time features for one claim (the serving path, no dataframe)."""
    amount = float(claim["amount"])  # type: ignore[arg-type]
    cashback = float(claim["cashback_amount"])  # type: ignore[arg-type]
    ts = claim["ts"]
    assert isinstance(ts, datetime)
    return {
        "amount_vs_avg_basket": amount / avg_basket_90d if avg_basket_90d else None,
        "cashback_share": cashback / amount if amount > 0 else None,
        "hour_of_day": ts.hour,
    }
