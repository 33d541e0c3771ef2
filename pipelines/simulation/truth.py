"""Ground truth of a simulated world, for scoring models and policies against it.

    truth = load_truth(Path("data"))
    spend = expected_spend(truth.customers, truth.config, rate=0.03, start=t, days=7)

The functions compute what the simulator's generative model implies, from the per-customer
parameters in `truth/customers.parquet` and the calendar of `truth/world.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.tables import scan_parquet_path
from pipelines.simulation.purchases import FULL_RETURN_SHARE
from pipelines.simulation.world import (
    CATEGORIES,
    CATEGORY_MARGIN,
    SEGMENTS,
    FloatArray,
    WorldConfig,
    response,
    season_matrix,
    segment_arrays,
)

PARTIAL_RETURN_MEAN = 0.55  # mean share returned by a partial return (uniform 0.2-0.9)


@dataclass(frozen=True)
class Truth:
    """The truth tables of a simulated world."""

    config: WorldConfig
    customers: pl.DataFrame
    claims: pl.LazyFrame
    exposures: pl.LazyFrame


def load_config(directory: Path) -> WorldConfig:
    """The world's config from `truth/world.json`.

    Raises:
        CashbackError: when the directory holds no simulated world.
    """
    path = directory / "truth" / "world.json"
    if not path.exists():
        msg = f"{path}: not found; only simulated worlds have a truth (cashback data simulate)"
        raise CashbackError(msg)
    raw = json.loads(path.read_text())
    raw["start"] = date.fromisoformat(raw["start"])
    raw["rate_grid"] = tuple(raw["rate_grid"])
    return WorldConfig(**raw)


def load_truth(directory: Path) -> Truth:
    """The truth of the simulated world in `directory`."""
    truth = directory / "truth"
    return Truth(
        config=load_config(directory),
        customers=scan_parquet_path(truth / "customers.parquet").collect(),
        claims=scan_parquet_path(truth / "claims.parquet"),
        exposures=scan_parquet_path(truth / "exposures.parquet"),
    )


def _segment_index(customers: pl.DataFrame) -> np.ndarray:
    names = [s.name for s in SEGMENTS]
    return customers["segment"].replace_strict(names, list(range(len(names)))).to_numpy()


def _column(customers: pl.DataFrame, name: str) -> FloatArray:
    return np.asarray(customers[name].to_numpy(), dtype=np.float64)


def response_multipliers(
    customers: pl.DataFrame, config: WorldConfig, rate: float | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per customer, the multipliers of purchase frequency and basket size under `rate`.

    `rate` is the effective rate (for a flat offer, the offer's rate).
    """
    args = (_column(customers, "half_rate"), _column(customers, "threshold"))
    kw = {"hard": config.hard, "max_rate": max(config.rate_grid)}
    freq = response(rate, _column(customers, "freq_gain"), *args, **kw)  # type: ignore[arg-type]
    basket = response(rate, _column(customers, "basket_gain"), *args, **kw)  # type: ignore[arg-type]
    return freq, basket


def _days_since_start(config: WorldConfig, start: datetime | pl.Series, n: int) -> FloatArray:
    """Window starts as days since the world's start, one per customer row."""
    if isinstance(start, datetime):
        return np.full(n, (start - config.start_dt).total_seconds() / 86_400)
    micros = (start - config.start_dt).dt.total_microseconds().to_numpy()
    return np.asarray(micros / 86_400_000_000, dtype=np.float64)


def _seasonal_days(
    config: WorldConfig, segment: np.ndarray, first: FloatArray, days: float
) -> FloatArray:
    """Integral of the season multiplier over [first, first + days) per row."""
    lo = int(np.floor(first.min())) - 1
    hi = int(np.ceil(first.max() + days)) + 1
    dates = [config.start + timedelta(days=d) for d in range(lo, hi)]
    season = season_matrix(segment_arrays(config), dates)  # (segments, hi - lo)
    cumulative = np.concatenate([np.zeros((season.shape[0], 1)), np.cumsum(season, axis=1)], axis=1)

    def integral(x: FloatArray) -> FloatArray:
        offset = x - lo
        whole = np.floor(offset).astype(np.int64)
        return np.asarray(
            cumulative[segment, whole] + (offset - whole) * season[segment, whole], dtype=np.float64
        )

    return integral(first + days) - integral(first)


def expected_orders(
    customers: pl.DataFrame,
    config: WorldConfig,
    rate: float | FloatArray,
    start: datetime | pl.Series,
    days: float,
) -> FloatArray:
    """Expected number of orders per customer in [start, start + days), if active throughout.

    `start` is one time for all rows or one per row (a datetime Series).
    """
    first = _days_since_start(config, start, customers.height)
    seasonal_days = _seasonal_days(config, _segment_index(customers), first, days)
    freq, _ = response_multipliers(customers, config, rate)
    return np.asarray(_column(customers, "daily_rate") * seasonal_days * freq, dtype=np.float64)


def expected_basket(
    customers: pl.DataFrame, config: WorldConfig, rate: float | FloatArray
) -> FloatArray:
    """Expected order amount per customer under `rate`."""
    _, basket = response_multipliers(customers, config, rate)
    mu, sigma = _column(customers, "basket_mu"), _column(customers, "basket_sigma")
    return np.asarray(np.exp(mu + sigma**2 / 2) * basket, dtype=np.float64)


def expected_spend(
    customers: pl.DataFrame,
    config: WorldConfig,
    rate: float | FloatArray,
    start: datetime | pl.Series,
    days: float,
) -> FloatArray:
    """Expected spend per customer over a window under an effective cashback rate.

    Args:
        customers: rows of `truth/customers` (any subset, any order).
        config: the world (`load_config`).
        rate: the effective rate, one for all or one per customer.
        start: start of the window (UTC).
        days: length of the window.

    Returns:
        Expected spend per customer, assuming the customer stays active in the window.
    """
    return expected_orders(customers, config, rate, start, days) * expected_basket(
        customers, config, rate
    )


def expected_returned_share(customers: pl.DataFrame) -> FloatArray:
    """Expected share of spend that comes back as returns."""
    mean_share = FULL_RETURN_SHARE + (1 - FULL_RETURN_SHARE) * PARTIAL_RETURN_MEAN
    return _column(customers, "return_prob") * mean_share


def expected_paid_spend(
    customers: pl.DataFrame,
    config: WorldConfig,
    rate: float | FloatArray,
    start: datetime | pl.Series,
    days: float,
) -> FloatArray:
    """Expected spend that earns paid cashback: claimed and not returned."""
    spend = expected_spend(customers, config, rate, start, days)
    claimed = _column(customers, "claim_prob")
    return np.asarray(spend * claimed * (1 - expected_returned_share(customers)), dtype=np.float64)


def expected_margin_rate(customers: pl.DataFrame, config: WorldConfig) -> FloatArray:
    """Expected gross margin rate of a customer's spend (from the segment's category mix)."""
    segments = segment_arrays(config)
    margins = np.array([CATEGORY_MARGIN[c] for c in CATEGORIES])
    return np.asarray((segments.categories @ margins)[_segment_index(customers)], dtype=np.float64)


def rate_value(
    customers: pl.DataFrame,
    config: WorldConfig,
    rate: float | FloatArray,
    start: datetime | pl.Series,
    days: float,
) -> FloatArray:
    """DESIGN.md's value of a flat rate over a window against the default rate, per customer.

    margin_rate * E[spend | r] - r * E[paid spend | r], minus the same at the default rate
    (honest customers: no fraud loss).
    """

    def net(r: float | FloatArray) -> FloatArray:
        spend = expected_spend(customers, config, r, start, days)
        paid = expected_paid_spend(customers, config, r, start, days)
        return np.asarray(margin * spend - np.asarray(r) * paid, dtype=np.float64)

    margin = expected_margin_rate(customers, config)
    return net(rate) - net(config.default_rate)


def churned_by(customers: pl.DataFrame, as_of: datetime) -> pl.Series:
    """True where the customer had truly churned (stopped for good) by `as_of`."""
    return (
        customers["churned_ts"].is_not_null() & (customers["churned_ts"] <= as_of)
    ) | ~customers["alive_at_start"]
