"""The cashback money of the window's orders: claimed, paid, clawed back, fraud, outstanding.

Per claim on an order of the window (DESIGN.md's money, as the rates outcomes count it):
- claimed: the claim's cashback_amount;
- paid: claimed x the share of the order that was not returned (cashback follows returns);
- clawed_back: claimed x the share returned (reversed when the order came back);
- fraud_loss: the paid cashback of claims labelled fraud (labels arrive late: recent periods
  understate it until their labels mature);
- deferred outstanding at a period's end: cashback claimed before that end on a deferred
  offer whose validation period (from the order) had not ended by then.
A claim's offer is its exposure's; claims outside any exposure have offer kind "none".
"""

from __future__ import annotations

import polars as pl

from features.lifecycle import KEY
from models.rates.outcomes import fraud_claim_ids
from pipelines.kpis.activity import UNATTRIBUTED
from pipelines.kpis.inputs import KpiInputs, KpiWindow

MONEY = ("claimed", "paid", "clawed_back", "fraud_loss")


def _offers_of_claims(inputs: KpiInputs) -> pl.LazyFrame | None:
    """Each exposure's offer kind, payout and validation days (None without both tables)."""
    exposures, offers = inputs.table("exposures"), inputs.table("offers")
    if exposures is None or offers is None:
        return None
    return exposures.select("exposure_id", "offer_id").join(
        offers.select(
            "offer_id",
            pl.col("kind").alias("offer_kind"),
            "payout",
            pl.col("validation_days").fill_null(0),
        ),
        on="offer_id",
        how="left",
    )


def claim_lines(inputs: KpiInputs, orders: pl.LazyFrame) -> pl.LazyFrame | None:
    """One row per claim on an order of `orders`, with its money (None without claims).

    Columns: claim_id, txn_id, customer_id, period, group, channel, claim_ts, order_ts,
    payout_method, offer_kind, payout, validation_days, claimed, paid, clawed_back, fraud_loss.
    """
    claims = inputs.table("claims")
    if claims is None:
        return None
    lines = claims.select(
        "claim_id",
        "txn_id",
        "exposure_id",
        pl.col("ts").alias("claim_ts"),
        "payout_method",
        pl.col("cashback_amount").alias("claimed"),
    ).join(
        orders.select(
            "txn_id", KEY, "period", "group", "channel", pl.col("ts").alias("order_ts"), "kept"
        ),
        on="txn_id",
        how="inner",
    )
    offers = _offers_of_claims(inputs)
    if offers is None:
        lines = lines.with_columns(
            pl.lit(None, dtype=pl.String).alias("offer_kind"),
            pl.lit(None, dtype=pl.String).alias("payout"),
            pl.lit(0, dtype=pl.Int32).alias("validation_days"),
        )
    else:
        lines = lines.join(offers.drop("offer_id"), on="exposure_id", how="left")
    labels = inputs.table("claim_labels")
    fraud = (
        lines.join(fraud_claim_ids(labels), on="claim_id", how="left")
        if labels is not None
        else lines.with_columns(pl.lit(None, dtype=pl.Boolean).alias("fraud"))
    )
    return fraud.select(
        "claim_id",
        "txn_id",
        KEY,
        "period",
        "group",
        "channel",
        "claim_ts",
        "order_ts",
        "payout_method",
        pl.col("offer_kind").fill_null(UNATTRIBUTED),
        "payout",
        "validation_days",
        "claimed",
        (pl.col("claimed") * pl.col("kept")).alias("paid"),
        (pl.col("claimed") * (1 - pl.col("kept"))).alias("clawed_back"),
        pl.when(pl.col("fraud").fill_null(value=False))
        .then(pl.col("claimed") * pl.col("kept"))
        .otherwise(0.0)
        .alias("fraud_loss"),
    )


def cashback_by_kind(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Cashback money per period, group, payout method and offer kind."""
    return (
        lines.group_by("period", "group", "payout_method", "offer_kind", "payout")
        .agg(pl.len().alias("claims"), *(pl.col(m).sum() for m in MONEY))
        .sort("period", "group", "payout_method", "offer_kind", nulls_last=True)
    )


def deferred_outstanding(lines: pl.LazyFrame, window: KpiWindow) -> pl.LazyFrame:
    """Deferred cashback outstanding at each period's end, per period and group.

    A claim is outstanding at every period end after the claim and before the end of its
    validation period (the order's time plus the offer's validation days).
    """
    due = pl.col("order_ts") + pl.duration(days=pl.col("validation_days"))
    first_end = window.next_period(window.period_start(pl.col("claim_ts")))
    return (
        lines.filter(pl.col("payout") == "deferred")
        .with_columns(due.alias("due"), first_end.alias("first_end"))
        .filter(pl.col("first_end") < pl.col("due"))
        .with_columns(
            pl.datetime_ranges("first_end", "due", window.every, closed="left").alias("end")
        )
        .explode("end")
        .with_columns(pl.col("end").dt.offset_by("-" + window.every).alias("period"))
        .group_by("period", "group")
        .agg(pl.col("claimed").sum().alias("deferred_outstanding"))
    )
