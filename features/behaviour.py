"""Customer behaviour features as of a daily close: purchases, spend, mix, recency, returns.

Every feature of a row with close `c` uses only transactions with `ts < c`.
"""

from __future__ import annotations

import re

import polars as pl

from cashback.settings import FeatureSettings
from cashback.vocab import Channel
from features.asof import cents, days, elapsed_days
from features.windows import Latest, window_aggregates

KEY = "customer_id"
CLOSE = "close_ts"
TREND_DAYS = 30


def slug(name: str) -> str:
    """A category name as a feature-name fragment (`home & garden` -> `home_garden`)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _event_values(config: FeatureSettings) -> dict[str, pl.Expr]:
    """Per-transaction quantities whose running sums give every windowed aggregate."""
    purchase = pl.col("amount") > 0
    spend = pl.when(purchase).then(cents(pl.col("amount"))).otherwise(0)
    values = {
        "n": purchase.cast(pl.Int64),
        "spend": spend,
        "returned": pl.when(purchase).then(0).otherwise(cents(-pl.col("amount"))),
    }
    for category in config.categories:
        values[f"cat_{slug(category)}"] = spend * (pl.col("category") == category).cast(pl.Int64)
        values[f"catn_{slug(category)}"] = (purchase & (pl.col("category") == category)).cast(
            pl.Int64
        )
    values["catn_other"] = (purchase & ~pl.col("category").is_in(list(config.categories))).cast(
        pl.Int64
    )
    for channel in Channel:
        values[f"ch_{channel.value}"] = (purchase & (pl.col("channel") == channel.value)).cast(
            pl.Int64
        )
    return values


def _windows(config: FeatureSettings) -> list[int]:
    return sorted({*config.windows_days, config.share_window_days, TREND_DAYS, 2 * TREND_DAYS})


def _window(name: str, window: int) -> pl.Expr:
    return pl.col(f"{name}@{window}")


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den).otherwise(None)


def _window_features(config: FeatureSettings) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for w in config.windows_days:
        n, spend = _window("n", w), _window("spend", w)
        distinct = pl.sum_horizontal(
            *(_window(f"catn_{slug(c)}", w) > 0 for c in config.categories),
            _window("catn_other", w) > 0,
        )
        exprs += [
            n.alias(f"purchases_{w}d"),
            (spend / 100).alias(f"spend_{w}d"),
            _ratio(spend / 100, n).alias(f"avg_basket_{w}d"),
            distinct.cast(pl.Int64).alias(f"categories_{w}d"),
            _ratio(_window("returned", w), spend).alias(f"return_rate_{w}d"),
        ]
    s = config.share_window_days
    spend_s, n_s = _window("spend", s), _window("n", s)
    exprs += [
        _ratio(_window(f"cat_{slug(c)}", s), spend_s).fill_null(0.0).alias(f"share_{slug(c)}_{s}d")
        for c in config.categories
    ]
    exprs += [
        _ratio(_window(f"ch_{ch.value}", s), n_s).fill_null(0.0).alias(f"share_{ch.value}_{s}d")
        for ch in Channel
    ]
    recent = _window("spend", TREND_DAYS)
    before = _window("spend", 2 * TREND_DAYS) - _window("spend", TREND_DAYS)
    exprs.append(_ratio(recent, before).alias("spend_trend_30d"))
    return exprs


def behaviour_features(
    transactions: pl.LazyFrame,
    customers: pl.LazyFrame,
    rows: pl.LazyFrame,
    config: FeatureSettings,
) -> pl.LazyFrame:
    """Behaviour features for each requested (customer_id, close_ts) row.

    Args:
        transactions: the contract table.
        customers: the contract table (for tenure).
        rows: requested rows with `customer_id` and `close_ts` (UTC midnight).
        config: windows and categories.

    Returns:
        `rows` with purchases, spend, average basket, distinct categories and return rate
        over each window; category and channel shares; days since the last purchase;
        tenure; and the 30-day spend trend (last 30 days over the 30 before).
    """
    values = _event_values(config)
    frame = window_aggregates(
        transactions,
        KEY,
        rows,
        sums=values,
        windows={str(w): days(w) for w in _windows(config)},
        latest={"last_purchase_ts": Latest(pl.col("ts"), where=pl.col("amount") > 0)},
    )
    joined = frame.join(
        customers.select(KEY, "signup_ts"), on=KEY, how="left", maintain_order="left"
    )
    age = pl.col(CLOSE) - pl.col("last_purchase_ts")
    tenure = pl.col(CLOSE) - pl.col("signup_ts")
    scratch = [f"{v}@{w}" for w in _windows(config) for v in values]
    return joined.with_columns(
        *_window_features(config),
        elapsed_days(age).alias("days_since_last_purchase"),
        elapsed_days(tenure).clip(0).alias("tenure_days"),
    ).drop(*scratch, "last_purchase_ts", "signup_ts")
