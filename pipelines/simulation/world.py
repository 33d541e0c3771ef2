"""The definition of a simulated world: configuration, segments, seasons and response curves.

Everything the simulator draws from is defined here, and the truth functions read the same
definitions, so a model can be scored against what the world really does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CATEGORIES: tuple[str, ...] = (
    "groceries",
    "fashion",
    "electronics",
    "home",
    "beauty",
    "travel",
    "entertainment",
    "sports",
)
# Gross margin as a share of the amount, by category (merchants vary around it).
CATEGORY_MARGIN: dict[str, float] = {
    "groceries": 0.18,
    "fashion": 0.45,
    "electronics": 0.14,
    "home": 0.35,
    "beauty": 0.50,
    "travel": 0.12,
    "entertainment": 0.30,
    "sports": 0.38,
}
CHANNELS: tuple[str, ...] = ("online", "store", "app")
PAYOUT_METHODS: tuple[str, ...] = (
    "bank_transfer",
    "store_credit",
    "wallet",
    "card_statement",
    "points",
)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "capital")
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
ACQUISITION: tuple[str, ...] = ("organic", "paid_search", "social", "referral", "affiliate")
ABUSE_TYPES: tuple[str, ...] = (
    "multi_account",
    "receipt_reuse",
    "claim_then_return",
    "velocity",
    "new_account",
)
# Hour-of-day shape of purchases (relative weights for 24 hours).
HOURLY_WEIGHTS: tuple[float, ...] = (
    0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.6, 0.9, 1.1, 1.3, 1.5,
    1.8, 1.7, 1.4, 1.3, 1.4, 1.6, 1.9, 2.1, 2.0, 1.6, 1.0, 0.5,
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """A latent behaviour type: how often, how much, what, where, and how rates move it.

    Attributes:
        name: readable name.
        share_existing: share among customers signed up before the simulation starts.
        share_new: share among customers who sign up during it.
        daily_rate: mean purchases per day at the default rate, before seasonality.
        basket_median: median order amount.
        basket_sigma: log-normal spread of order amounts.
        categories: purchase probabilities over CATEGORIES.
        channels: probabilities over CHANNELS.
        weekend_lift: purchase multiplier on Saturday and Sunday.
        december_lift: extra purchases at the December peak (multiplier minus one).
        sales_lift: extra purchases in sales periods (multiplier minus one).
        responder_share: share of customers whose behaviour reacts to cashback at all.
        freq_gain: maximal relative rise of purchase frequency from cashback.
        basket_gain: maximal relative rise of basket size from cashback.
        half_rate: rate at which the response reaches 1 - 1/e of its maximum.
        return_prob: probability that a purchase is returned.
        claim_prob: probability that a purchase's cashback is claimed.
        churn_base: daily churn hazard of an active customer.
        visit_prob: daily probability of a visit that asks for an offer.
        policy_rate: rate the logging policy gives this segment.
    """

    name: str
    share_existing: float
    share_new: float
    daily_rate: float
    basket_median: float
    basket_sigma: float
    categories: tuple[float, ...]
    channels: tuple[float, ...]
    weekend_lift: float
    december_lift: float
    sales_lift: float
    responder_share: float
    freq_gain: float
    basket_gain: float
    half_rate: float
    return_prob: float
    claim_prob: float
    churn_base: float
    visit_prob: float
    policy_rate: float


SEGMENTS: tuple[Segment, ...] = (
    Segment(
        "bargain_hunter", 0.27, 0.25, 0.055, 32.0, 0.55,
        (0.22, 0.26, 0.05, 0.14, 0.16, 0.02, 0.09, 0.06), (0.50, 0.15, 0.35),
        1.25, 0.45, 1.20, 0.92, 1.10, 0.15, 0.025, 0.09, 0.92, 0.0010, 0.35, 0.05,
    ),
    Segment(
        "loyal_regular", 0.32, 0.10, 0.110, 44.0, 0.45,
        (0.48, 0.08, 0.03, 0.15, 0.10, 0.01, 0.08, 0.07), (0.20, 0.45, 0.35),
        1.10, 0.25, 0.10, 0.05, 0.30, 0.05, 0.030, 0.03, 0.70, 0.0003, 0.50, 0.01,
    ),
    Segment(
        "high_value_infrequent", 0.17, 0.10, 0.016, 210.0, 0.65,
        (0.03, 0.14, 0.34, 0.22, 0.04, 0.17, 0.04, 0.02), (0.60, 0.30, 0.10),
        0.95, 0.70, 0.40, 0.50, 0.30, 0.40, 0.040, 0.06, 0.80, 0.0004, 0.15, 0.02,
    ),
    Segment(
        "new_explorer", 0.04, 0.45, 0.045, 38.0, 0.70,
        (0.18, 0.20, 0.10, 0.14, 0.14, 0.04, 0.12, 0.08), (0.35, 0.10, 0.55),
        1.15, 0.35, 0.60, 0.75, 0.90, 0.10, 0.020, 0.05, 0.85, 0.0025, 0.30, 0.03,
    ),
    Segment(
        "lapsing", 0.20, 0.10, 0.018, 52.0, 0.60,
        (0.25, 0.18, 0.08, 0.18, 0.10, 0.05, 0.10, 0.06), (0.40, 0.40, 0.20),
        1.05, 0.30, 0.30, 0.60, 0.55, 0.05, 0.050, 0.05, 0.60, 0.0020, 0.15, 0.08,
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Offer:
    """An entry of the simulated offer catalog."""

    offer_id: str
    kind: str
    payout: str
    validation_days: int
    category: str | None = None
    tiers: tuple[tuple[float, float], ...] | None = None
    share: float = 0.0  # share of exposures that carry this offer


BASKET_TIERS = ((0.0, 0.0), (100.0, 0.01), (250.0, 0.02))  # (basket amount, bonus rate)
VISIT_TIERS = ((0.0, 0.0), (2.0, 0.005), (4.0, 0.01))  # (earlier orders in window, bonus rate)
# Tier rates are bonuses on top of the exposure's base rate: by basket amount for tiered
# offers, by the number of earlier purchases in the exposure window for cumulative ones.
OFFERS: tuple[Offer, ...] = (
    Offer("flat-immediate", "flat", "immediate", 0, share=0.35),
    Offer("flat-deferred", "flat", "deferred", 30, share=0.20),
    Offer("tiered-basket", "tiered", "deferred", 14, tiers=BASKET_TIERS, share=0.15),
    Offer("cumulative-visits", "cumulative", "immediate", 0, tiers=VISIT_TIERS, share=0.10),
    Offer("category-electronics", "category", "deferred", 30, category="electronics", share=0.05),
    Offer("category-fashion", "category", "immediate", 0, category="fashion", share=0.05),
    Offer("seasonal-winter", "seasonal", "deferred", 30, share=0.10),
)  # fmt: skip
DEFAULT_OFFER = Offer("default-card", "flat", "immediate", 0)
SEASONAL_MONTH_DAY = ((11, 20), (1, 6))  # the seasonal offer runs 20 Nov to 5 Jan
EXPLORE_POLICY = "logging_v1"
HOLDOUT_POLICY = "holdout"
EXPERIMENT_ID = "exp-rate-boost"
EXPERIMENT_BOOST_STEPS = 2  # the treatment's rate is the control's, two grid steps up


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a simulated world; the same config and seed give the same bytes.

    Attributes mirror `cashback.settings.SimulationSettings` plus the preset and the
    program's rate settings.
    """

    customers: int
    days: int
    seed: int
    start: date
    preset: Literal["default", "hard"] = "default"
    fraud_share: float = 0.02
    audit_share: float = 0.01
    exploration: float = 0.2
    rate_grid: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
    holdout_share: float = 0.05
    default_rate: float = 0.01
    exposure_days: int = 7
    chunk_customers: int = 100_000
    existing_share: float = 0.7
    experiment_share: float = 0.3
    chargeback_share: float = field(default=-1.0)  # -1: the preset's default
    audit_label_noise: float = field(default=-1.0)

    @property
    def hard(self) -> bool:
        """Whether this is the hard preset."""
        return self.preset == "hard"

    @property
    def start_dt(self) -> datetime:
        """First instant simulated, UTC."""
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_dt(self) -> datetime:
        """First instant after the simulation, UTC."""
        return self.start_dt + timedelta(days=self.days)

    @property
    def chargebacks(self) -> float:
        """Share of frauds that come back as chargebacks."""
        if self.chargeback_share >= 0:
            return self.chargeback_share
        return 0.25 if self.hard else 0.6

    @property
    def label_noise(self) -> float:
        """Share of audit labels that are wrong."""
        if self.audit_label_noise >= 0:
            return self.audit_label_noise
        return 0.10 if self.hard else 0.0

    def to_json(self) -> str:
        """The config as JSON (for truth/world.json)."""
        payload = asdict(self)
        payload["start"] = self.start.isoformat()
        return json.dumps(payload, indent=2, sort_keys=True)


@dataclass(frozen=True)
class SegmentArrays:
    """Segment parameters as arrays indexed by segment, after the preset is applied."""

    names: tuple[str, ...]
    share_existing: FloatArray
    share_new: FloatArray
    daily_rate: FloatArray
    basket_mu: FloatArray
    basket_sigma: FloatArray
    categories: FloatArray  # (segments, categories)
    channels: FloatArray  # (segments, channels)
    weekend_lift: FloatArray
    december_lift: FloatArray
    sales_lift: FloatArray
    responder_share: FloatArray
    freq_gain: FloatArray
    basket_gain: FloatArray
    half_rate: FloatArray
    return_prob: FloatArray
    claim_prob: FloatArray
    churn_base: FloatArray
    visit_prob: FloatArray
    policy_rate: FloatArray


def segment_arrays(config: WorldConfig) -> SegmentArrays:
    """Segment parameters of the world; the hard preset pulls segments halfway together."""

    def col(attr: str) -> FloatArray:
        return np.array([getattr(s, attr) for s in SEGMENTS], dtype=np.float64)

    def blend(values: FloatArray, weight: float = 0.5) -> FloatArray:
        if not config.hard:
            return values
        mean = values.mean(axis=0, keepdims=True)
        return np.asarray((1 - weight) * values + weight * mean, dtype=np.float64)

    categories = blend(np.array([s.categories for s in SEGMENTS]))
    channels = blend(np.array([s.channels for s in SEGMENTS]))
    gain_scale = 0.6 if config.hard else 1.0
    return SegmentArrays(
        names=tuple(s.name for s in SEGMENTS),
        share_existing=col("share_existing"),
        share_new=col("share_new"),
        daily_rate=blend(col("daily_rate")),
        basket_mu=blend(np.log(col("basket_median"))),
        basket_sigma=col("basket_sigma") + (0.15 if config.hard else 0.0),
        categories=categories / categories.sum(axis=1, keepdims=True),
        channels=channels / channels.sum(axis=1, keepdims=True),
        weekend_lift=blend(col("weekend_lift")),
        december_lift=blend(col("december_lift")),
        sales_lift=blend(col("sales_lift")),
        responder_share=blend(col("responder_share")),
        freq_gain=blend(col("freq_gain")) * gain_scale,
        basket_gain=blend(col("basket_gain")) * gain_scale,
        half_rate=col("half_rate"),
        return_prob=blend(col("return_prob")),
        claim_prob=blend(col("claim_prob")),
        churn_base=blend(col("churn_base")),
        visit_prob=col("visit_prob"),
        policy_rate=col("policy_rate"),
    )


# ------------------------------------------------------------------ seasons


def _in_window(days: list[date], start: tuple[int, int], end: tuple[int, int]) -> FloatArray:
    """1.0 on days whose (month, day) falls in [start, end], wrapping the new year."""
    md = [(d.month, d.day) for d in days]
    if start <= end:
        return np.array([start <= x <= end for x in md], dtype=np.float64)
    return np.array([x >= start or x <= end for x in md], dtype=np.float64)


def calendar_days(config: WorldConfig) -> list[date]:
    """The simulated dates."""
    return [config.start + timedelta(days=d) for d in range(config.days)]


def season_components(days: list[date]) -> dict[str, FloatArray]:
    """Calendar signals per day: weekend, December ramp, sales periods, seasonal offer window.

    The December ramp rises from 0 on 25 November to 1 on 23 December; 25-26 December
    are quiet (-0.6). Sales periods: Black Friday to Cyber Monday, 2-15 January, 25 June
    to 10 July.
    """
    weekend = np.array([d.weekday() >= 5 for d in days], dtype=np.float64)
    ramp = np.zeros(len(days))
    for i, d in enumerate(days):
        if d.month == 11 and d.day >= 25:
            ramp[i] = (d.day - 25) / 28
        elif d.month == 12 and d.day <= 23:
            ramp[i] = (d.day + 5) / 28
        elif d.month == 12 and d.day in (25, 26):
            ramp[i] = -0.6
    sales = np.zeros(len(days))
    for i, d in enumerate(days):
        black_friday = _fourth_friday_of_november(d.year)
        if black_friday <= d <= black_friday + timedelta(days=3):
            sales[i] = 1.0
    sales = np.maximum(sales, _in_window(days, (1, 2), (1, 15)))
    sales = np.maximum(sales, _in_window(days, (6, 25), (7, 10)))
    seasonal_offer = _in_window(days, SEASONAL_MONTH_DAY[0], (12, 31)) + _in_window(
        days, (1, 1), (SEASONAL_MONTH_DAY[1][0], SEASONAL_MONTH_DAY[1][1] - 1)
    )
    return {
        "weekend": weekend,
        "december": np.clip(ramp, -0.6, 1.0),
        "sales": sales,
        "seasonal_offer": np.minimum(seasonal_offer, 1.0),
    }


def _fourth_friday_of_november(year: int) -> date:
    first = date(year, 11, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 21)


def season_matrix(segments: SegmentArrays, days: list[date]) -> FloatArray:
    """Purchase-rate multiplier per (segment, day)."""
    c = season_components(days)
    weekend = 1 + np.outer(segments.weekend_lift - 1, c["weekend"])
    december = 1 + np.outer(segments.december_lift, c["december"])
    sales = 1 + np.outer(segments.sales_lift, c["sales"])
    return np.asarray(weekend * december * sales, dtype=np.float64)


# ------------------------------------------------------------------ response to rate


def response(
    rate: FloatArray | float,
    gain: FloatArray,
    half_rate: FloatArray,
    threshold: FloatArray,
    *,
    hard: bool,
    max_rate: float,
) -> FloatArray:
    """Multiplier of purchase frequency (or basket size) under a cashback rate.

    Default preset: diminishing returns, 1 + gain * (1 - exp(-rate / half_rate)).
    Hard preset: a threshold shape, flat below the customer's threshold and saturating
    just above it: 1 + gain * S((rate - threshold) / w) rescaled to 0 at rate 0 and 1 at
    `max_rate`, with S the logistic function and w = 0.004.

    Args:
        rate: the cashback rate(s) (a share, 0.03 = 3 %).
        gain: maximal relative rise per customer.
        half_rate: saturation scale per customer (default preset).
        threshold: rate where the response jumps, per customer (hard preset).
        hard: which shape.
        max_rate: the top of the rate grid.

    Returns:
        The multiplier, 1 at rate 0.
    """
    r = np.asarray(rate, dtype=np.float64)
    if not hard:
        return np.asarray(1 + gain * (1 - np.exp(-r / half_rate)), dtype=np.float64)
    width = 0.004

    def logistic(x: FloatArray) -> FloatArray:
        return np.asarray(1 / (1 + np.exp(-x)), dtype=np.float64)

    low = logistic(-threshold / width)
    high = logistic((max_rate - threshold) / width)
    shape = (logistic((r - threshold) / width) - low) / (high - low)
    return np.asarray(1 + gain * np.clip(shape, 0, None), dtype=np.float64)
