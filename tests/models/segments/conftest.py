"""Synthetic customers with four planted behaviour types (no simulation, fast to cluster)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cashback.settings import FeatureSettings
from features.catalog import service_features

FEATURES = service_features("segments_v1", FeatureSettings())
CHANNELS = ("online", "store", "app")
CATEGORIES = FeatureSettings().categories
# (purchases a year, basket, days since last purchase, tenure, channel mix, main category)
TYPES = {
    "loyal": (40, 45.0, 5.0, 800.0, (0.2, 0.6, 0.2), "groceries"),
    "big": (5, 260.0, 40.0, 700.0, (0.7, 0.2, 0.1), "electronics"),
    "new": (7, 40.0, 10.0, 90.0, (0.2, 0.1, 0.7), "fashion"),
    "fading": (4, 50.0, 220.0, 900.0, (0.4, 0.4, 0.2), "home"),
}


def synthetic_customers(per_type: int, seed: int, inactive: int = 0) -> pl.DataFrame:
    """segments_v1 features of customers of the planted types (`planted` says which).

    `inactive` more customers have no purchase in the year (nulls where the features have
    them).
    """
    rng = np.random.default_rng(seed)
    parts = []
    for name, (freq, basket, recency, tenure, channels, category) in TYPES.items():
        n = per_type
        purchases = rng.poisson(freq, n) + 1
        avg = basket * rng.lognormal(0, 0.25, n)
        row: dict[str, object] = {
            "planted": [name] * n,
            "purchases_365d": purchases,
            "spend_365d": purchases * avg,
            "avg_basket_365d": avg,
            "days_since_last_purchase": recency * rng.lognormal(0, 0.3, n),
            "tenure_days": tenure * rng.lognormal(0, 0.2, n),
            "purchases_90d": np.maximum(purchases // 4, 1),
        }
        mix = rng.dirichlet(np.asarray(channels) * 30, n)
        for i, channel in enumerate(CHANNELS):
            row[f"share_{channel}_90d"] = mix[:, i]
        weights = np.full(len(CATEGORIES), 1.0)
        weights[CATEGORIES.index(category)] = 6.0
        cats = rng.dirichlet(weights * 3, n)
        for i, cat in enumerate(CATEGORIES):
            row[f"share_{cat}_90d"] = cats[:, i]
        parts.append(pl.DataFrame(row))
    frame = pl.concat(parts, how="diagonal_relaxed")
    if inactive:
        frame = pl.concat(
            [
                frame,
                pl.DataFrame(
                    {
                        "planted": ["inactive"] * inactive,
                        "purchases_365d": [0] * inactive,
                        "spend_365d": [0.0] * inactive,
                        "tenure_days": rng.uniform(10, 900, inactive),
                        "purchases_90d": [0] * inactive,
                    }
                ),
            ],
            how="diagonal_relaxed",
        )
    n = frame.height
    lifecycle = np.where(frame["purchases_365d"].to_numpy() > 0, "regular", "inactive")
    rfm = np.where(frame["purchases_365d"].to_numpy() > 0, rng.integers(3, 16, n), 0)
    filled = frame.with_columns(
        pl.Series("customer_id", [f"C{i:06d}" for i in range(n)]),
        pl.Series("lifecycle", lifecycle),
        pl.Series("rfm_total", rfm),
        *(pl.col(c).fill_null(0.0) for c in frame.columns if c.startswith("share_")),
    )
    missing = [c for c in FEATURES if c not in filled.columns]
    return filled.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in missing)


@pytest.fixture(scope="module")
def customers() -> pl.DataFrame:
    """1,600 active customers of four types and 200 inactive ones."""
    return synthetic_customers(400, seed=3, inactive=200)
