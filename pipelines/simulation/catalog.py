"""World-wide tables: merchants, the offer catalog and the experiment definition."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from pipelines.simulation.behaviour import EXPERIMENT_WINDOW
from pipelines.simulation.world import (
    CATEGORIES,
    CATEGORY_MARGIN,
    DEFAULT_OFFER,
    EXPERIMENT_BOOST_STEPS,
    EXPERIMENT_ID,
    EXPLORE_POLICY,
    OFFERS,
    SEASONAL_MONTH_DAY,
    FloatArray,
    Offer,
    SegmentArrays,
    WorldConfig,
)

MERCHANTS_PER_CUSTOMERS = 200  # one merchant per this many customers
MIN_MERCHANTS, MAX_MERCHANTS = 40, 5000
POPULARITY_EXPONENT = 0.8  # the k-th merchant of a category is chosen in proportion to k ** -0.8


def merchant_count(config: WorldConfig) -> int:
    """Number of merchants in the world."""
    return int(np.clip(config.customers // MERCHANTS_PER_CUSTOMERS, MIN_MERCHANTS, MAX_MERCHANTS))


def build_merchants(
    config: WorldConfig, segments: SegmentArrays, rng: np.random.Generator
) -> tuple[pl.DataFrame, list[FloatArray]]:
    """Merchants by category (more where people buy more) and their popularity.

    Returns:
        The merchants table and, per category, the cumulative popularity (Zipf-like) of
        its merchants, in the table's order.
    """
    demand = segments.categories.mean(axis=0)
    total = merchant_count(config)
    per_cat = np.maximum(2, np.round(demand / demand.sum() * total)).astype(int)
    ids: list[str] = []
    cats: list[str] = []
    margins: list[float] = []
    cdfs: list[FloatArray] = []
    for c, n in enumerate(per_cat):  # one pass per category
        cat = CATEGORIES[c]
        start = len(ids)
        ids.extend(f"m{start + j:05d}" for j in range(n))
        cats.extend([cat] * n)
        margin = CATEGORY_MARGIN[cat] * rng.uniform(0.8, 1.2, n)
        margins.extend(np.round(np.clip(margin, 0.02, 0.9), 3).tolist())
        popularity = 1 / np.arange(1, n + 1) ** POPULARITY_EXPONENT
        cdfs.append(np.cumsum(popularity) / popularity.sum())
    frame = pl.DataFrame({"merchant_id": ids, "category": cats, "margin_rate": margins})
    return frame, cdfs


def _offer_row(
    offer: Offer, rate: float | None, start: datetime | None, end: datetime | None
) -> dict[str, object]:
    return {
        "offer_id": offer.offer_id,
        "kind": offer.kind,
        "rate": rate,
        "tiers": (
            [{"threshold": float(t), "rate": float(r)} for t, r in offer.tiers]
            if offer.tiers
            else None
        ),
        "category": offer.category,
        "start_ts": start,
        "end_ts": end,
        "payout": offer.payout,
        "validation_days": offer.validation_days,
    }


def build_offers(config: WorldConfig) -> pl.DataFrame:
    """The offer catalog: every kind, both payouts; rates are the catalog's headline.

    The rate an exposure carries is personal; tier rates are bonuses on top of it (by basket
    amount for tiered offers, by earlier purchases in the window for cumulative ones).
    """
    start = config.start_dt
    rows = [_offer_row(DEFAULT_OFFER, config.default_rate, None, None)]
    for offer in OFFERS:
        if offer.kind == "seasonal":
            first, last = _season_bounds(config)
            rows.append(_offer_row(offer, 0.03, first, last))
        else:
            needs_rate = offer.kind not in ("tiered", "cumulative")
            rows.append(_offer_row(offer, 0.02 if needs_rate else None, start, None))
    return pl.DataFrame(rows)


def _season_bounds(config: WorldConfig) -> tuple[datetime, datetime]:
    """The seasonal offer's first start and last end within the simulated years."""
    (m0, d0), (m1, d1) = SEASONAL_MONTH_DAY
    first = datetime(config.start.year - 1, m0, d0, tzinfo=config.start_dt.tzinfo)
    last_year = (config.start + timedelta(days=config.days)).year + 1
    last = datetime(last_year, m1, d1, tzinfo=config.start_dt.tzinfo)
    return first, last


def experiment_bounds(config: WorldConfig) -> tuple[datetime, datetime]:
    """When the simulated experiment runs."""
    lo, hi = (int(config.days * f) for f in EXPERIMENT_WINDOW)
    return config.start_dt + timedelta(days=lo), config.start_dt + timedelta(days=hi)


def build_experiments(config: WorldConfig) -> pl.DataFrame:
    """The rate-boost experiment: control keeps the logging policy, treatment adds grid steps."""
    start, end = experiment_bounds(config)
    status = "completed" if end <= config.end_dt else "running"
    variants = [
        {"name": "control", "weight": 0.5, "policy": EXPLORE_POLICY},
        {"name": "treatment", "weight": 0.5, "policy": f"boost_{EXPERIMENT_BOOST_STEPS}_steps"},
    ]
    return pl.DataFrame(
        {
            "experiment_id": [EXPERIMENT_ID],
            "key": ["rate_boost"],
            "layer": ["rates"],
            "variants": [variants],
            "start_ts": [start],
            "end_ts": [end],
            "status": [status],
        }
    )
