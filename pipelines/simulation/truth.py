"""Ground truth of a simulated world, for scoring models and policies against it.

    truth = load_truth(Path("data"))
    spend = expected_spend(truth.customers, truth.config, rate=0.03, start=t, days=7)

The functions compute what the simulator's generative model implies, from the per-customer
parameters in `truth/customers.parquet` and the calendar of `truth/world.json`.

Per logged exposure, as the data record it (what off-policy evaluation estimates):

    windows = exposure_windows(Path("data"), truth, exposures)
    money = expected_window_money(windows, truth.config, rate)  # .spend .margin .cashback .net

each window cut where its customer churned, hour by hour (seasons, the hour-of-day profile),
under the offer's effective rate, with each offer kind's cashback (tier bonuses by amount or
by earlier orders), and returns and claims counted only when they happen before the data end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from scipy import special

from cashback.errors import CashbackError
from cashback.tables import read_table, scan_parquet_path
from pipelines.simulation.behaviour import effective_rate
from pipelines.simulation.catalog import POPULARITY_EXPONENT
from pipelines.simulation.purchases import (
    CLAIM_DELAY_CAP_DAYS,
    CLAIM_DELAY_MEDIAN_DAYS,
    CLAIM_DELAY_SIGMA,
    FULL_RETURN_SHARE,
    PARTIAL_RETURN_SHARE,
    RETURN_DELAY_DAYS,
)
from pipelines.simulation.world import (
    CATEGORIES,
    CATEGORY_MARGIN,
    DEFAULT_OFFER,
    HOURLY_WEIGHTS,
    OFFERS,
    SEGMENTS,
    FloatArray,
    IntArray,
    WorldConfig,
    response,
    season_matrix,
    segment_arrays,
)

PARTIAL_RETURN_MEAN = sum(PARTIAL_RETURN_SHARE) / 2  # mean share returned by a partial return
HOURS = len(HOURLY_WEIGHTS)


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


def _season(config: WorldConfig, lo: int, hi: int) -> FloatArray:
    """The purchase multiplier per (segment, day) for days lo..hi-1 since the world's start."""
    dates = [config.start + timedelta(days=d) for d in range(lo, hi)]
    return season_matrix(segment_arrays(config), dates)


def _seasonal_days(
    config: WorldConfig, segment: np.ndarray, first: FloatArray, days: float | FloatArray
) -> FloatArray:
    """Integral of the season multiplier over [first, first + days) per row."""
    lo = int(np.floor(first.min())) - 1
    hi = int(np.ceil(np.max(first + days))) + 1
    season = _season(config, lo, hi)  # (segments, hi - lo)
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
    days: float | FloatArray,
) -> FloatArray:
    """Expected number of orders per customer in [start, start + days), if active throughout.

    `start` is one time for all rows or one per row (a datetime Series); `days` likewise.
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


# ------------------------------------------------------------------ exposure windows


def window_end(valid_until: pl.Series, churned_ts: pl.Series) -> pl.Series:
    """When each exposure window really ends: at `valid_until`, or earlier if its customer churned.

    A customer who churns still buys until the end of that day (the simulator draws the
    day's orders before the churn), so a churn cuts the window at the next midnight (UTC).
    """
    gone = churned_ts.dt.truncate("1d") + timedelta(days=1)
    return pl.select(pl.min_horizontal(valid_until, gone)).to_series().alias("window_end")


@dataclass(frozen=True)
class WindowHours:
    """Exposure windows hour by hour, over the calendar hours from the day each one starts.

    Attributes:
        orders: (windows, hours) expected orders in the part of each hour inside the window,
            at frequency multiplier 1: the customer's daily rate times the day's season, spread
            over the day by the hour-of-day profile as the simulator draws order times.
        middle: (windows, hours) the middle of that part, in days since the world's start.
    """

    orders: FloatArray
    middle: FloatArray


def _daily_orders(
    customers: pl.DataFrame, config: WorldConfig, first_day: IntArray, days: int
) -> FloatArray:
    """(rows, days) expected orders per day from each row's first day, multiplier 1."""
    lo, hi = int(first_day.min()), int(first_day.max()) + days
    season = _season(config, lo, hi)
    day = (first_day - lo)[:, None] + np.arange(days)[None, :]
    segment = _segment_index(customers)[:, None]
    return np.asarray(_column(customers, "daily_rate")[:, None] * season[segment, day])


def window_hours(
    customers: pl.DataFrame, config: WorldConfig, start: pl.Series, end: pl.Series
) -> WindowHours:
    """Expected orders of each window [start, end) hour by hour (see `WindowHours`).

    The simulator draws a day's orders in [lo, hi) as a Poisson count of mean daily rate x
    season x (hi - lo), at times spread by the hour-of-day profile within [lo, hi); the same
    holds here for the part of each day inside the window.

    Args:
        customers: the truth row of each window's customer.
        config: the world.
        start: start of each window (UTC).
        end: end of each window (UTC), at most a few days after its start.
    """
    n = customers.height
    first = _days_since_start(config, start, n)
    last = _days_since_start(config, end, n)
    first_day = np.floor(first)
    days = max(int(np.ceil(np.max(last - first_day, initial=1.0))), 1)
    begins = first_day[:, None] + np.arange(days * HOURS)[None, :] / HOURS
    lo = np.maximum(begins, first[:, None])
    hi = np.maximum(np.minimum(begins + 1 / HOURS, last[:, None]), lo)
    inside = (hi - lo).reshape(n, days, HOURS)
    mass = inside * np.asarray(HOURLY_WEIGHTS)
    total = mass.sum(axis=2, keepdims=True)
    share = np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)
    per_day = _daily_orders(customers, config, first_day.astype(np.int64), days)
    orders = per_day[:, :, None] * inside.sum(axis=2, keepdims=True) * share
    return WindowHours(orders.reshape(n, days * HOURS), (lo + hi) / 2)


def recorded_return(age: FloatArray) -> FloatArray:
    """Probability that an order's return (if it has one) is in the data.

    Args:
        age: days from the order to the end of the data.
    """
    lo, hi = RETURN_DELAY_DAYS
    return np.asarray(np.clip((age - lo) / (hi - lo), 0.0, 1.0), dtype=np.float64)


def recorded_claim(age: FloatArray) -> FloatArray:
    """Probability that an honest claim of an order is in the data (its delay is shorter).

    Args:
        age: days from the order to the end of the data.
    """
    z = (np.log(np.maximum(age, 1e-12)) - np.log(CLAIM_DELAY_MEDIAN_DAYS)) / CLAIM_DELAY_SIGMA
    return np.asarray(np.where(age > CLAIM_DELAY_CAP_DAYS, 1.0, special.ndtr(z)), dtype=np.float64)


def category_margin_rates(merchants: pl.DataFrame) -> FloatArray:
    """Each category's (`CATEGORIES`) expected margin rate of an order.

    The merchants' margin rates weighted as the simulator picks them: the k-th merchant of
    a category (in id order) in proportion to k ** -POPULARITY_EXPONENT.
    """
    weight = pl.int_range(1, pl.len() + 1).over("category").cast(pl.Float64) ** (
        -POPULARITY_EXPONENT
    )
    rates = (
        merchants.sort("merchant_id")
        .with_columns(weight.alias("weight"))
        .group_by("category")
        .agg(((pl.col("weight") * pl.col("margin_rate")).sum() / pl.col("weight").sum()).alias("m"))
    )
    ordered = pl.DataFrame({"category": list(CATEGORIES)}).join(
        rates, on="category", how="left", maintain_order="left"
    )
    return np.asarray(ordered["m"].fill_null(0.0).to_numpy(), dtype=np.float64)


def offer_index(offer_id: pl.Series) -> IntArray:
    """Each offer id's position in OFFERS (-1 for the default card)."""
    ids = [o.offer_id for o in OFFERS] + [DEFAULT_OFFER.offer_id]
    codes = [*range(len(OFFERS)), -1]
    return np.asarray(offer_id.replace_strict(ids, codes).to_numpy(), dtype=np.int64)


def offer_category_share(config: WorldConfig, offer: IntArray, segment: IntArray) -> FloatArray:
    """Per exposure, its segment's share of orders in its offer's category (else 0)."""
    column = np.array(
        [
            CATEGORIES.index(o.category) if o.kind == "category" and o.category else -1
            for o in OFFERS
        ]
        + [-1]
    )[offer]  # offer -1 (the default card) picks the trailing -1
    share = segment_arrays(config).categories[segment, np.maximum(column, 0)]
    return np.asarray(np.where(column >= 0, share, 0.0), dtype=np.float64)


@dataclass(frozen=True)
class ExposureWindows:
    """Exposure windows with what their expected money needs, whatever the rate.

    Attributes:
        customers: the truth row of each window's customer.
        offer: each window's offer (index into OFFERS, -1 for the default card).
        category_share: the customer's share of orders in the offer's category.
        margin_rate: expected gross margin rate of an order.
        orders: (windows, hours) expected orders hour by hour (`WindowHours.orders`).
        kept: (windows, hours) expected share of an order's amount not returned in the data.
        paid: (windows, hours) expected share of an order's amount that earns cashback in the
            data: claimed, claimed before the data's end, and not returned.
    """

    customers: pl.DataFrame
    offer: IntArray
    category_share: FloatArray
    margin_rate: FloatArray
    orders: FloatArray
    kept: FloatArray
    paid: FloatArray


def exposure_windows(directory: Path, truth: Truth, exposures: pl.DataFrame) -> ExposureWindows:
    """The windows of `exposures` (customer_id, ts, valid_until, offer_id), as the data see them.

    Windows end early where the customer churned (`window_end`); returns and claims count
    only if they happen before the end of the data, as in the data.
    """
    config = truth.config
    customers = exposures.select("customer_id").join(
        truth.customers, on="customer_id", how="left", maintain_order="left"
    )
    end = window_end(exposures["valid_until"], customers["churned_ts"])
    hours = window_hours(customers, config, exposures["ts"], end)
    age = config.days - hours.middle
    returned_share = FULL_RETURN_SHARE + (1 - FULL_RETURN_SHARE) * PARTIAL_RETURN_MEAN
    returned = _column(customers, "return_prob")[:, None] * returned_share * recorded_return(age)
    kept = 1.0 - returned
    claimed = _column(customers, "claim_prob")[:, None] * recorded_claim(age)
    offer = offer_index(exposures["offer_id"])
    segment = _segment_index(customers)
    margins = category_margin_rates(read_table(directory, "merchants").collect())
    return ExposureWindows(
        customers=customers,
        offer=offer,
        category_share=offer_category_share(config, offer, segment),
        margin_rate=(segment_arrays(config).categories @ margins)[segment],
        orders=hours.orders,
        kept=kept,
        paid=claimed * kept,
    )


@dataclass(frozen=True)
class WindowMoney:
    """Expected money of each exposure window under some rate, as the data would record it.

    Attributes:
        spend: gross amount of the orders.
        margin: margin on them net of the returns in the data.
        cashback: cashback paid on the claims in the data, net of clawbacks.
    """

    spend: FloatArray
    margin: FloatArray
    cashback: FloatArray

    @property
    def net(self) -> FloatArray:
        """Net margin: margin minus cashback (the reward of OPE)."""
        return np.asarray(self.margin - self.cashback, dtype=np.float64)


def _amount_bonus(
    mu: FloatArray, sigma: FloatArray, tiers: tuple[tuple[float, float], ...]
) -> FloatArray:
    """E[bonus(A) x A] for a log-normal amount A = exp(mu + sigma Z) and bonus tiers by amount."""
    thresholds = np.array([t for t, _ in tiers])
    steps = np.diff(np.array([b for _, b in tiers]), prepend=0.0)
    log_t = np.log(np.maximum(thresholds, 1e-300))
    z = (mu[:, None] + sigma[:, None] ** 2 - log_t[None, :]) / sigma[:, None]
    above = np.where(thresholds[None, :] > 0, special.ndtr(z), 1.0)  # E[A 1{A >= t}] / E[A]
    return np.asarray(np.exp(mu + sigma**2 / 2) * (above @ steps), dtype=np.float64)


def _count_bonus(earlier: FloatArray, tiers: tuple[tuple[float, float], ...]) -> FloatArray:
    """E[bonus(N)] for N ~ Poisson(earlier) earlier orders and bonus tiers by that count."""
    steps = np.diff(np.array([b for _, b in tiers]), prepend=0.0)
    bonus = np.zeros_like(earlier)
    for threshold, step in zip((t for t, _ in tiers), steps, strict=True):  # one per tier
        k = np.ceil(threshold)
        bonus += step * (special.gammainc(k, earlier) if k > 0 else 1.0)  # P(N >= k)
    return bonus


def _per_hour_bonus(
    windows: ExposureWindows,
    rows: np.ndarray,
    freq: FloatArray,
    tiers: tuple[tuple[float, float], ...],
) -> FloatArray:
    """Expected bonus rate x paid share, summed over the hours of cumulative windows `rows`.

    The k-th order of a window gets the tier of k - 1 earlier orders; orders arrive as a
    Poisson process, so an order at time t has Poisson(orders expected before t) earlier ones.
    """
    orders = freq[rows, None] * windows.orders[rows]
    earlier = np.cumsum(orders, axis=1) - orders / 2
    return np.asarray((orders * windows.paid[rows] * _count_bonus(earlier, tiers)).sum(axis=1))


def expected_window_money(
    windows: ExposureWindows, config: WorldConfig, rate: FloatArray
) -> WindowMoney:
    """Expected spend, margin and cashback of each window if its offer carried `rate`.

    The customer responds to the offer's effective rate (`behaviour.effective_rate`:
    category dilution, the expected tier bonus); cashback is paid as the simulator pays it
    (`chunk.cashback_amounts`): the rate on flat and seasonal offers, the rate on the
    offer's category and the default rate elsewhere, plus the tier bonus of each order's
    amount (tiered) or of its earlier orders in the window (cumulative).

    Args:
        windows: the exposure windows (`exposure_windows`).
        config: the world.
        rate: the base rate of each window's offer.
    """
    effective = effective_rate(rate, windows.offer, windows.category_share, config.default_rate)
    freq, basket = response_multipliers(windows.customers, config, effective)
    mu = _column(windows.customers, "basket_mu") + np.log(basket)
    sigma = _column(windows.customers, "basket_sigma")
    amount = np.exp(mu + sigma**2 / 2)
    orders = freq * windows.orders.sum(axis=1)
    paid = freq * (windows.orders * windows.paid).sum(axis=1)
    kinds = np.array([o.kind for o in OFFERS] + ["flat"])[windows.offer]
    cashback = np.where(kinds == "category", effective, rate) * amount * paid
    for i, offer in enumerate(OFFERS):  # one vectorized pass per catalog entry
        rows = np.flatnonzero(windows.offer == i)
        if offer.kind == "tiered" and offer.tiers:
            bonus = _amount_bonus(mu[rows], sigma[rows], offer.tiers) * paid[rows]
            cashback[rows] += bonus
        elif offer.kind == "cumulative" and offer.tiers:
            cashback[rows] += amount[rows] * _per_hour_bonus(windows, rows, freq, offer.tiers)
    kept = freq * (windows.orders * windows.kept).sum(axis=1)
    return WindowMoney(orders * amount, windows.margin_rate * amount * kept, cashback)


def fraud_order_exposures(directory: Path, truth: Truth) -> pl.Series:
    """Exposures that carry an order made by fraud (every claim of it is fraudulent).

    Honest customers' accounts also carry fraud (velocity bursts, claim-then-return, a
    receipt shown by someone else) at random times, whose outcomes the truth of an exposure
    leaves out; a second claim of an honest order (receipt reuse by its owner) does not make
    its order fraudulent.
    """
    claims = read_table(directory, "claims").select("claim_id", "txn_id", "exposure_id")
    return (
        claims.join(truth.claims.select("claim_id", "is_fraud"), on="claim_id", how="inner")
        .group_by("txn_id")
        .agg(pl.col("is_fraud").all(), pl.col("exposure_id").first())
        .filter(pl.col("is_fraud"), pl.col("exposure_id").is_not_null())
        .select("exposure_id")
        .unique()
        .collect()
        .to_series()
    )
