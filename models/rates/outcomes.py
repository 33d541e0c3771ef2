"""What each exposure brought: the outcomes attributed to it, as DESIGN.md defines them.

An outcome belongs to the exposure of its customer that was valid when it happened (windows
never overlap). Per exposure, over [ts, valid_until):
- purchases: orders placed; spend: their gross amount;
- margin: gross margin on those orders net of what was later returned of them (merchant
  margin_rate x (amount - returned));
- paid_spend: spend that earns paid cashback: claimed orders, net of their returns;
- cashback: cashback paid on those orders, clawed back in proportion to returns;
- fraud_cashback: the part of `cashback` on claims labelled fraud;
- net_margin: margin - cashback (what the exposure earned the program).
A return counts against the order it returns, whenever it happens, so an exposure is charged
for its own orders' returns. Exposures whose window ends after the data are left out.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from cashback.attribution import attribute_to_exposures

OUTCOMES = ("purchases", "spend", "margin", "paid_spend", "cashback", "fraud_cashback")


def returned_amounts(transactions: pl.LazyFrame) -> pl.LazyFrame:
    """How much of each purchase was returned, whenever (txn_id, returned)."""
    return (
        transactions.filter(pl.col("amount") < 0, pl.col("original_txn_id").is_not_null())
        .group_by(pl.col("original_txn_id").alias("txn_id"))
        .agg((-pl.col("amount")).sum().alias("returned"))
    )


def fraud_claim_ids(labels: pl.LazyFrame) -> pl.LazyFrame:
    """The claims labelled fraud (claim_id, fraud = True), once each."""
    return (
        labels.filter(pl.col("label") == "fraud")
        .select("claim_id")
        .unique()
        .with_columns(pl.lit(value=True).alias("fraud"))
    )


def _orders(transactions: pl.LazyFrame, merchants: pl.LazyFrame) -> pl.LazyFrame:
    """Purchases with their margin rate and the amount later returned of each."""
    returned = returned_amounts(transactions)
    return (
        transactions.filter(pl.col("amount") > 0)
        .select("txn_id", "customer_id", "merchant_id", "ts", "amount")
        .join(merchants.select("merchant_id", "margin_rate"), on="merchant_id", how="left")
        .join(returned, on="txn_id", how="left")
        .with_columns(
            pl.col("returned").fill_null(0.0).clip(upper_bound=pl.col("amount")),
            pl.col("margin_rate").fill_null(0.0),
        )
    )


def _claims(claims: pl.LazyFrame, labels: pl.LazyFrame) -> pl.LazyFrame:
    """Cashback claimed per transaction, and the part labelled fraud."""
    return (
        claims.join(fraud_claim_ids(labels), on="claim_id", how="left")
        .group_by("txn_id")
        .agg(
            pl.col("cashback_amount").sum().alias("claimed_cashback"),
            pl.col("cashback_amount")
            .filter(pl.col("fraud").fill_null(False))
            .sum()
            .alias("fraud_claimed"),
        )
    )


def exposure_outcomes(
    exposures: pl.LazyFrame,
    transactions: pl.LazyFrame,
    claims: pl.LazyFrame,
    labels: pl.LazyFrame,
    merchants: pl.LazyFrame,
    end: datetime,
) -> pl.LazyFrame:
    """Every complete exposure with the outcomes attributed to it.

    Args:
        exposures: the exposures table.
        transactions: purchases and returns.
        claims: cashback claims.
        labels: claim labels (fraud / legit).
        merchants: merchant margin rates.
        end: the end of the data; exposures whose window ends later are left out.

    Returns:
        The exposures' columns plus `OUTCOMES` and `net_margin`.
    """
    orders = attribute_to_exposures(_orders(transactions, merchants), exposures)
    kept = 1.0 - pl.col("returned") / pl.col("amount")
    per_order = orders.join(_claims(claims, labels), on="txn_id", how="left").select(
        "exposure_id",
        pl.col("amount"),
        (pl.col("margin_rate") * (pl.col("amount") - pl.col("returned"))).alias("margin"),
        pl.when(pl.col("claimed_cashback").is_not_null())
        .then(pl.col("amount") - pl.col("returned"))
        .otherwise(0.0)
        .alias("paid_spend"),
        (pl.col("claimed_cashback").fill_null(0.0) * kept).alias("cashback"),
        (pl.col("fraud_claimed").fill_null(0.0) * kept).alias("fraud_cashback"),
    )
    sums = (
        per_order.filter(pl.col("exposure_id").is_not_null())
        .group_by("exposure_id")
        .agg(
            pl.len().cast(pl.Int64).alias("purchases"),
            pl.col("amount").sum().alias("spend"),
            pl.col("margin", "paid_spend", "cashback", "fraud_cashback").sum(),
        )
    )
    zero = [pl.col("purchases").fill_null(0)] + [
        pl.col(c).fill_null(0.0) for c in OUTCOMES if c != "purchases"
    ]
    return (
        exposures.filter(pl.col("valid_until") <= end)
        .join(sums, on="exposure_id", how="left")
        .with_columns(zero)
        .with_columns((pl.col("margin") - pl.col("cashback")).alias("net_margin"))
    )
