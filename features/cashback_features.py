"""Cashback features as of a daily close: claims, cashback received, payout mix, rates, pending.

Every feature of a row with close `c` uses only claims with `ts < c`.
"""

from __future__ import annotations

import polars as pl

from cashback.vocab import Payout, PayoutMethod
from features.asof import cents, days
from features.windows import Latest, window_aggregates

KEY = "customer_id"
CLOSE = "close_ts"
WINDOWS = (30, 90, 365)
MIX_WINDOW = 365


def deferred_periods(offers: pl.DataFrame) -> list[int]:
    """Distinct validation periods (days) of deferred offers in the catalog."""
    deferred = offers.filter(pl.col("payout") == Payout.DEFERRED.value)
    return sorted(int(v) for v in deferred["validation_days"].unique() if v and v > 0)


def _claims_with_payout(
    claims: pl.LazyFrame, exposures: pl.LazyFrame, offers: pl.LazyFrame
) -> pl.LazyFrame:
    """Claims with the payout and validation period of the offer they were made under."""
    terms = exposures.select("exposure_id", "offer_id").join(
        offers.select("offer_id", "payout", "validation_days"), on="offer_id", how="left"
    )
    return claims.join(terms, on="exposure_id", how="left", maintain_order="left")


def _values(periods: list[int]) -> dict[str, pl.Expr]:
    cashback = cents(pl.col("cashback_amount"))
    values = {
        "claims": pl.lit(1, dtype=pl.Int64),
        "cashback": cashback,
        "claimed": cents(pl.col("amount")),
    }
    for method in PayoutMethod:
        values[f"pm_{method.value}"] = cashback * (pl.col("payout_method") == method.value).cast(
            pl.Int64
        )
    deferred = pl.col("payout") == Payout.DEFERRED.value
    for period in periods:
        in_period = (deferred & (pl.col("validation_days") == period)).fill_null(value=False)
        values[f"deferred_{period}"] = cashback * in_period.cast(pl.Int64)
    return values


def cashback_features(
    claims: pl.LazyFrame,
    exposures: pl.LazyFrame,
    offers: pl.DataFrame,
    rows: pl.LazyFrame,
) -> pl.LazyFrame:
    """Cashback features for each requested (customer_id, close_ts) row.

    Args:
        claims: the contract table.
        exposures: the contract table (to find each claim's offer).
        offers: the offer catalog (payout and validation period).
        rows: requested rows with `customer_id` and `close_ts`.

    Returns:
        `rows` with claims and cashback over 30/90/365 days, the share of cashback by payout
        method and the average rate over 365 days, the rate of the last claim, and the
        deferred cashback still inside its validation period at the close.
    """
    periods = deferred_periods(offers)
    values = _values(periods)
    stream = _claims_with_payout(claims, exposures, offers.lazy())
    lengths = sorted({*WINDOWS, MIX_WINDOW, *periods})
    rate = pl.col("cashback_amount") / pl.col("amount")
    frame = window_aggregates(
        stream,
        KEY,
        rows,
        sums=values,
        windows={str(n): days(n) for n in lengths},
        latest={"last_rate": Latest(rate, where=pl.col("amount") > 0)},
    )

    def window(name: str, length: int) -> pl.Expr:
        return pl.col(f"{name}@{length}")

    exprs = []
    for w in WINDOWS:
        exprs += [
            window("claims", w).alias(f"claims_{w}d"),
            (window("cashback", w) / 100).alias(f"cashback_{w}d"),
        ]
    total = window("cashback", MIX_WINDOW)
    exprs += [
        pl.when(total > 0)
        .then(window(f"pm_{m.value}", MIX_WINDOW) / total)
        .otherwise(0.0)
        .alias(f"share_{m.value}_{MIX_WINDOW}d")
        for m in PayoutMethod
    ]
    claimed = window("claimed", MIX_WINDOW)
    exprs.append(pl.when(claimed > 0).then(total / claimed).alias(f"avg_rate_{MIX_WINDOW}d"))
    still_pending = [window(f"deferred_{p}", p) for p in periods]
    pending = pl.sum_horizontal(*still_pending) if periods else pl.lit(0.0)
    exprs.append((pending / 100).alias("deferred_pending"))
    scratch = [f"{n}@{length}" for length in lengths for n in values]
    return frame.with_columns(*exprs).drop(*scratch)
