"""Per-customer experiment metrics from the contract tables (unit = customer).

Each assigned customer is followed from `start` (the assignment, or the experiment's start
if assigned earlier) to `end` (the experiment's end, or the data's end if sooner); the
pre-period is the window of the same length just before `start`. Over each window:

- participation_rate: 1 if the customer claimed any cashback, else 0;
- purchases_per_customer: purchases (transactions with a positive amount);
- spend_per_customer: the sum of the amounts, net of returns (negative amounts);
- average_order_value: a ratio metric, purchase amount (`gross_spend`) over purchases;
- cashback_paid: the cashback of the customer's claims;
- net_incremental_margin: margin_rate x amount (the merchant's margin rate, or the default
  when the merchant has none) summed over transactions, minus cashback_paid;
- fraud_loss: the cashback of claims labelled fraud (by any source, before the data's end);
- retention_7d, retention_30d: 1 if the customer bought within N days of `start`. Only
  customers whose N days have fully elapsed by the data's end have a value (null for the
  others), so that a late assignment never counts as "not retained". Their pre-period
  value is a purchase in the N days before `start`.

Events are first turned into additive components (`COMPONENTS`) and every metric but
retention is a formula over their sums (`metric_values`), so that the same formulas give
the window values, the pre-period values and the cumulative values day by day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import polars as pl

from cashback.vocab import ExperimentMetric, Label

KEY = "customer_id"
TRANSACTION_COMPONENTS = ("purchases", "gross", "spend", "margin")
CLAIM_COMPONENTS = ("claims", "cashback", "fraud")
COMPONENTS = TRANSACTION_COMPONENTS + CLAIM_COMPONENTS
GROSS_SPEND = "gross_spend"  # the numerator of average_order_value
PRE = "_pre"
RETENTION_DAYS = {ExperimentMetric.RETENTION_7D.value: 7, ExperimentMetric.RETENTION_30D.value: 30}
LIFECYCLE_DAYS = 365
LAST_PURCHASE = "last_purchase_before"
PURCHASES_YEAR = "purchases_365d_before"
MICROSECONDS_PER_DAY = 86_400_000_000
F64 = pl.Float64

Column = Callable[[str], pl.Expr]


def transaction_events(
    transactions: pl.LazyFrame, merchants: pl.LazyFrame, default_margin: float
) -> pl.LazyFrame:
    """Transactions as component events: purchases, gross, spend (net) and margin.

    Args:
        transactions: the contract transactions.
        merchants: the contract merchants (margin_rate); missing merchants get the default.
        default_margin: the margin rate of a merchant without one.

    Returns:
        customer_id, ts and every component (claim components 0).
    """
    purchase = pl.col("amount") > 0
    rate = pl.col("margin_rate").fill_null(default_margin)
    return transactions.join(
        merchants.select("merchant_id", "margin_rate"), on="merchant_id", how="left"
    ).select(
        KEY,
        "ts",
        purchase.cast(F64).alias("purchases"),
        pl.when(purchase).then(pl.col("amount")).otherwise(0.0).alias("gross"),
        pl.col("amount").alias("spend"),
        (pl.col("amount") * rate).alias("margin"),
        *(pl.lit(0.0).alias(c) for c in CLAIM_COMPONENTS),
    )


def fraud_claims(labels: pl.LazyFrame, data_end: datetime) -> pl.LazyFrame:
    """claim_id of the claims labelled fraud by any source before `data_end`."""
    known = labels.filter(
        (pl.col("label") == Label.FRAUD.value) & (pl.col("decided_ts") < data_end)
    )
    return known.select("claim_id").unique()


def claim_events(claims: pl.LazyFrame, fraud: pl.LazyFrame) -> pl.LazyFrame:
    """Claims as component events: one claim, its cashback, and the cashback lost to fraud.

    Args:
        claims: the contract claims.
        fraud: claim_id of the claims labelled fraud (`fraud_claims`).

    Returns:
        customer_id, ts and every component (transaction components 0).
    """
    flagged = fraud.with_columns(pl.lit(value=True).alias("__fraud"))
    is_fraud = pl.col("__fraud").fill_null(value=False)
    return claims.join(flagged, on="claim_id", how="left").select(
        KEY,
        "ts",
        *(pl.lit(0.0).alias(c) for c in TRANSACTION_COMPONENTS),
        pl.lit(1.0).alias("claims"),
        pl.col("cashback_amount").alias("cashback"),
        pl.when(is_fraud).then(pl.col("cashback_amount")).otherwise(0.0).alias("fraud"),
    )


def metric_values(col: Column) -> dict[str, pl.Expr]:
    """Every additive metric (and the ratio's numerator) as a formula over component sums.

    Args:
        col: how to name a component's sum (e.g. `pl.col`, or a suffixed column).

    Returns:
        Output column name to expression.
    """
    return {
        ExperimentMetric.PARTICIPATION_RATE.value: (col("claims") > 0).cast(F64),
        ExperimentMetric.PURCHASES_PER_CUSTOMER.value: col("purchases"),
        ExperimentMetric.SPEND_PER_CUSTOMER.value: col("spend"),
        GROSS_SPEND: col("gross"),
        ExperimentMetric.CASHBACK_PAID.value: col("cashback"),
        ExperimentMetric.NET_INCREMENTAL_MARGIN.value: col("margin") - col("cashback"),
        ExperimentMetric.FRAUD_LOSS.value: col("fraud"),
    }


def _in(lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    return (pl.col("ts") >= lo) & (pl.col("ts") < hi)


def _window_sums(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer: component sums in the window and the pre-period, and retention flags."""
    start, end = pl.col("start"), pl.col("end")
    pre_start = start - (end - start)
    in_window, in_pre = _in(start, end), _in(pre_start, start)
    bought = pl.col("purchases") > 0
    aggregations = [
        *(pl.col(c).filter(in_window).sum().alias(c) for c in COMPONENTS),
        *(pl.col(c).filter(in_pre).sum().alias(f"{c}{PRE}") for c in COMPONENTS),
        pl.col("ts").filter(bought & (pl.col("ts") < start)).max().alias(LAST_PURCHASE),
        (bought & _in(start - timedelta(days=LIFECYCLE_DAYS), start))
        .sum()
        .cast(F64)
        .alias(PURCHASES_YEAR),
    ]
    for name, n in RETENTION_DAYS.items():
        span = timedelta(days=n)
        aggregations.append((bought & _in(start, start + span)).any().alias(f"__{name}"))
        aggregations.append((bought & _in(start - span, start)).any().alias(f"__{name}{PRE}"))
    return events.group_by(KEY).agg(aggregations)


def customer_metrics(
    units: pl.LazyFrame, events: pl.LazyFrame, *, data_end: datetime
) -> pl.LazyFrame:
    """Every event metric per customer, in the window and the pre-period.

    Args:
        units: customer_id, variant, start and end of each customer's window (and any other
            column, kept).
        events: component events (`transaction_events`, `claim_events`, concatenated).
        data_end: the end of the data: retention counts only windows elapsed by then.

    Returns:
        The units with one column per metric (`ExperimentMetric` values, `gross_spend` for
        the ratio's numerator), the same with the suffix `_pre`, and `last_purchase_before`
        and `purchases_365d_before` (for the lifecycle stage at the start).
    """
    reach = pl.max_horizontal(
        pl.col("end") - pl.col("start"),
        pl.lit(timedelta(days=max(LIFECYCLE_DAYS, *RETENTION_DAYS.values()))),
    )
    joined = events.join(units.select(KEY, "start", "end"), on=KEY, how="inner").filter(
        (pl.col("ts") >= pl.col("start") - reach) & (pl.col("ts") < data_end)
    )
    sums = joined.pipe(_window_sums)
    filled = units.join(sums, on=KEY, how="left").with_columns(
        pl.col(f"{c}{suffix}").fill_null(0.0) for c in COMPONENTS for suffix in ("", PRE)
    )
    window = metric_values(pl.col)
    pre = metric_values(lambda c: pl.col(f"{c}{PRE}"))
    retention = []
    for name, n in RETENTION_DAYS.items():
        elapsed = pl.col("start") + timedelta(days=n) <= data_end
        flag = pl.col(f"__{name}").fill_null(value=False).cast(F64)
        retention.append(pl.when(elapsed).then(flag).alias(name))
        retention.append(
            pl.col(f"__{name}{PRE}").fill_null(value=False).cast(F64).alias(name + PRE)
        )
    drop = [f"{c}{suffix}" for c in COMPONENTS for suffix in ("", PRE)]
    drop += [f"__{name}{suffix}" for name in RETENTION_DAYS for suffix in ("", PRE)]
    return filled.with_columns(
        *(e.alias(n) for n, e in window.items()),
        *(e.alias(f"{n}{PRE}") for n, e in pre.items()),
        *retention,
    ).drop(drop)


def day_index(ts: pl.Expr, origin: datetime) -> pl.Expr:
    """Whole days from `origin` to `ts` (floored): the day on which `ts` falls."""
    micros = (ts - origin).dt.total_microseconds()
    return micros.floordiv(MICROSECONDS_PER_DAY).cast(pl.Int64)


def _entry_day(ts: pl.Expr, origin: datetime) -> pl.Expr:
    """The first day d whose cut-off, origin + (d + 1) days, is at or after `ts`."""
    micros = (ts - origin).dt.total_microseconds()
    return ((micros + MICROSECONDS_PER_DAY - 1).floordiv(MICROSECONDS_PER_DAY) - 1).cast(pl.Int64)


INCREMENTS = ("n", "m", "m2", "d", "d2", "md")


def _increment_columns(**given: pl.Expr) -> list[pl.Expr]:
    return [given.get(name, pl.lit(0.0)).cast(F64).alias(name) for name in INCREMENTS]


def additive_increments(
    units: pl.LazyFrame,
    events: pl.LazyFrame,
    metric: str,
    *,
    origin: datetime,
    denominator: str | None = None,
) -> pl.LazyFrame:
    """Day-by-day changes of the sums behind a metric's mean, per variant.

    A customer enters on the day of `start` (n + 1) with value 0; on each day with events
    in the window, the metric (a formula of `metric_values` over the cumulative component
    sums) changes, and so do its square (and, for a ratio, the denominator's and the
    cross product). Summed per day and accumulated, they give every day's n, sums and sums
    of squares without a customer x day table.

    Args:
        units: customer_id, variant, start and end.
        events: component events.
        metric: a key of `metric_values` (the ratio's numerator for a ratio).
        origin: day 0 starts here (the experiment's start).
        denominator: for a ratio metric, the key of its denominator.

    Returns:
        variant, day and the increments n, m, m2, d, d2, md.
    """
    entries = units.select(
        "variant",
        day_index(pl.col("start"), origin).alias("day"),
        *_increment_columns(n=pl.lit(1.0)),
    )
    daily = (
        events.join(units.select(KEY, "variant", "start", "end"), on=KEY, how="inner")
        .filter(_in(pl.col("start"), pl.col("end")))
        .group_by(KEY, "variant", day_index(pl.col("ts"), origin).alias("day"))
        .agg(pl.col(c).sum() for c in COMPONENTS)
        .with_columns(pl.col(c).cum_sum().over(KEY, order_by="day") for c in COMPONENTS)
    )
    values = metric_values(pl.col)
    numerator = values[metric]
    den = values[denominator] if denominator else pl.lit(0.0)

    def change(expr: pl.Expr) -> pl.Expr:
        return expr - expr.shift(1).over(KEY, order_by="day").fill_null(0.0)

    moved = daily.with_columns(numerator.alias("__m"), den.alias("__d")).select(
        "variant",
        "day",
        *_increment_columns(
            m=change(pl.col("__m")),
            m2=change(pl.col("__m") ** 2),
            d=change(pl.col("__d")),
            d2=change(pl.col("__d") ** 2),
            md=change(pl.col("__m") * pl.col("__d")),
        ),
    )
    return pl.concat([entries, moved], how="vertical")


def retention_increments(customers: pl.LazyFrame, metric: str, *, origin: datetime) -> pl.LazyFrame:
    """Day-by-day changes of a retention metric's sums: a customer counts once elapsed.

    Args:
        customers: per-customer metrics (`customer_metrics`), with start.
        metric: retention_7d or retention_30d.
        origin: day 0 starts here (the experiment's start).

    Returns:
        variant, day and the increments n, m, m2 (d, d2, md are 0).
    """
    span = timedelta(days=RETENTION_DAYS[metric])
    value = pl.col(metric)
    return customers.filter(value.is_not_null()).select(
        "variant",
        _entry_day(pl.col("start") + span, origin).alias("day"),
        *_increment_columns(n=pl.lit(1.0), m=value, m2=value**2),
    )


def cumulative_moments(increments: pl.LazyFrame, variants: list[str], days: int) -> pl.DataFrame:
    """n, sums and sums of squares per variant at the end of each day 0 .. days - 1.

    Args:
        increments: variant, day and the increments (`additive_increments`, ...).
        variants: every variant to report (even one without customers yet).
        days: how many days the series has.

    Returns:
        variant, day, n, m, m2, d, d2, md (cumulative), one row per variant and day.
    """
    grid = pl.LazyFrame({"variant": variants}).join(
        pl.LazyFrame({"day": pl.int_range(0, days, eager=True, dtype=pl.Int64)}), how="cross"
    )
    daily = (
        increments.filter(pl.col("day") < days)
        .group_by("variant", "day")
        .agg(pl.col(c).sum() for c in INCREMENTS)
    )
    return (
        grid.join(daily, on=["variant", "day"], how="left")
        .with_columns(pl.col(c).fill_null(0.0) for c in INCREMENTS)
        .sort("variant", "day")
        .with_columns(pl.col(c).cum_sum().over("variant") for c in INCREMENTS)
        .collect()
    )


def window_end(experiment_end: datetime | None, data_end: datetime) -> datetime:
    """The end of the analysis window: the experiment's end, or the data's end if sooner."""
    return data_end if experiment_end is None else min(experiment_end, data_end)
