"""The KPI table: one row per period and group.

Definitions (a customer is active in a period when they placed an order in it; for the
channel and category groupings, an order in that channel or category):
- active_customers, orders, revenue (gross amount of the orders);
- purchase_frequency: orders per active customer;
- average_order_value: revenue per order;
- repurchase_rate: share of active customers with two orders or more in the period;
- retention_rate: share of the customers active in the previous period (in this group then)
  who are active again in this period (in any group, or in the same channel or category);
- participation_rate: share of active customers who claimed cashback on an order of the period;
- omnichannel_engagement: share of those cashback users whose claimed orders span more than
  one channel (not defined when grouping by channel);
- cashback_claimed, cashback_paid, cashback_clawed_back, fraud_loss (see `flows`), and
  cashback_cost_share: cashback paid per unit of revenue;
- deferred_outstanding: deferred cashback not yet due at the period's end.
Ratios are null, never zero, when their denominator is.
"""

from __future__ import annotations

import polars as pl

from features.lifecycle import KEY
from pipelines.kpis.flows import deferred_outstanding
from pipelines.kpis.inputs import ORDER_GROUPS, KpiWindow

COUNTS = (
    "active_customers",
    "orders",
    "repeat_customers",
    "retention_base",
    "retained",
    "participants",
    "omnichannel_users",
)
MONEY = (
    "revenue",
    "cashback_claimed",
    "cashback_paid",
    "cashback_clawed_back",
    "fraud_loss",
    "deferred_outstanding",
)
RATIOS = {
    "purchase_frequency": ("orders", "active_customers"),
    "average_order_value": ("revenue", "orders"),
    "repurchase_rate": ("repeat_customers", "active_customers"),
    "retention_rate": ("retained", "retention_base"),
    "participation_rate": ("participants", "active_customers"),
    "omnichannel_engagement": ("omnichannel_users", "participants"),
    "cashback_cost_share": ("cashback_paid", "revenue"),
}


def _per_customer(orders: pl.LazyFrame, lines: pl.LazyFrame | None) -> pl.LazyFrame:
    """Per period, group and customer: orders, revenue, claimed orders and their channels."""
    claimed = (
        lines.select("txn_id").unique().with_columns(pl.lit(value=True).alias("claimed"))
        if lines is not None
        else orders.select("txn_id").head(0).with_columns(pl.lit(value=True).alias("claimed"))
    )
    with_claims = orders.join(claimed, on="txn_id", how="left").with_columns(
        pl.col("claimed").fill_null(value=False)
    )
    return with_claims.group_by("period", "group", KEY).agg(
        pl.len().alias("orders"),
        pl.col("amount").sum().alias("revenue"),
        pl.col("claimed").any().alias("participant"),
        pl.col("channel").filter(pl.col("claimed")).n_unique().alias("claim_channels"),
    )


def _activity(customers: pl.LazyFrame) -> pl.LazyFrame:
    return customers.group_by("period", "group").agg(
        pl.len().alias("active_customers"),
        pl.col("orders").sum(),
        pl.col("revenue").sum(),
        (pl.col("orders") >= 2).sum().alias("repeat_customers"),
        pl.col("participant").sum().alias("participants"),
        (pl.col("claim_channels") > 1).sum().alias("omnichannel_users"),
    )


def _retention(customers: pl.LazyFrame, window: KpiWindow, by_order: bool) -> pl.LazyFrame:
    """Per period and group: customers active in the previous period, and those back."""
    before = customers.select(KEY, window.next_period(pl.col("period")).alias("period"), "group")
    keys = [KEY, "period", "group"] if by_order else [KEY, "period"]
    now = customers.select(keys).unique()
    back = before.join(now, on=keys, how="semi")
    return (
        before.group_by("period", "group")
        .agg(pl.len().alias("retention_base"))
        .join(
            back.group_by("period", "group").agg(pl.len().alias("retained")),
            on=["period", "group"],
            how="left",
        )
    )


def _money(lines: pl.LazyFrame, window: KpiWindow) -> pl.LazyFrame:
    paid = lines.group_by("period", "group").agg(
        pl.col("claimed").sum().alias("cashback_claimed"),
        pl.col("paid").sum().alias("cashback_paid"),
        pl.col("clawed_back").sum().alias("cashback_clawed_back"),
        pl.col("fraud_loss").sum(),
    )
    return paid.join(
        deferred_outstanding(lines, window), on=["period", "group"], how="full", coalesce=True
    )


def kpi_table(
    orders: pl.LazyFrame,
    lines: pl.LazyFrame | None,
    window: KpiWindow,
    group_key: str | None,
) -> pl.LazyFrame:
    """The KPIs of every period of `window` and every group (lazy).

    Args:
        orders: the orders of the window and of the period before it (`activity.orders`).
        lines: the claims on those orders (`flows.claim_lines`), None without claims.
        window: the periods reported.
        group_key: the grouping, None for all customers together.

    Returns:
        period, group, `COUNTS`, `MONEY` and `RATIOS`, sorted; every period of the window
        appears for every group, with zero counts and null ratios where nothing happened.
    """
    customers = _per_customer(orders, lines)
    keys = ["period", "group"]
    grid = pl.LazyFrame({"period": window.periods()}).join(
        orders.select("group").unique(), how="cross"
    )
    table = grid.join(_activity(customers), on=keys, how="left").join(
        _retention(customers, window, group_key in ORDER_GROUPS), on=keys, how="left"
    )
    if lines is not None:
        table = table.join(_money(lines, window), on=keys, how="left")
    else:
        table = table.with_columns(
            pl.lit(None, dtype=pl.Float64).alias(m) for m in MONEY if m != "revenue"
        )
    claims_known = lines is not None
    filled = table.with_columns(
        *(pl.col(c).fill_null(0).cast(pl.Int64) for c in COUNTS),
        pl.col("revenue").fill_null(0.0),
        *(pl.col(m).fill_null(0.0) if claims_known else pl.col(m) for m in MONEY if m != "revenue"),
    )
    ratios = [
        pl.when(pl.col(d) > 0).then(pl.col(n) / pl.col(d)).alias(name)
        for name, (n, d) in RATIOS.items()
    ]
    result = filled.with_columns(ratios)
    if group_key == "channel":
        result = result.with_columns(pl.lit(None, dtype=pl.Float64).alias("omnichannel_engagement"))
    if not claims_known:
        result = result.with_columns(
            *(pl.lit(None, dtype=pl.Int64).alias(c) for c in ("participants", "omnichannel_users")),
            *(
                pl.lit(None, dtype=pl.Float64).alias(c)
                for c in ("participation_rate", "omnichannel_engagement", "cashback_cost_share")
            ),
        )
    return result.sort("period", "group")
