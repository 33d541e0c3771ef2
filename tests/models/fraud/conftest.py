"""A small fitted fraud model on synthetic claims (no simulation, a second to fit)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cashback.settings import FraudSettings
from models.fraud.dataset import encode
from models.fraud.decisions import Thresholds
from models.fraud.model import (
    ANOMALY_FEATURE,
    FraudModel,
    fit_anomaly,
    fit_booster,
    fit_calibrator,
)

FEATURES = [
    "device_customers_30d",
    "receipt_seen_before",
    "tenure_days",
    "lifecycle",
    "cashback_share",
    "customer_claims_1h",
]


def synthetic_claims(n: int, seed: int) -> pl.DataFrame:
    """Claims whose fraud depends on shared devices, reused receipts and young accounts."""
    rng = np.random.default_rng(seed)
    devices = rng.poisson(1.0, n) + 1
    receipt = rng.random(n) < 0.03
    tenure = rng.integers(0, 900, n).astype(float)
    tenure[rng.random(n) < 0.05] = np.nan
    risk = -4.5 + 0.9 * (devices - 1) + 3.0 * receipt + 1.5 * (tenure < 14)
    fraud = rng.random(n) < 1 / (1 + np.exp(-risk))
    return pl.DataFrame(
        {
            "claim_id": [f"k{i}" for i in range(n)],
            "device_customers_30d": devices,
            "receipt_seen_before": receipt,
            "tenure_days": tenure,
            "lifecycle": rng.choice(["new", "regular", "at_risk", "inactive"], n),
            "cashback_share": rng.uniform(0.0, 0.1, n),
            "customer_claims_1h": rng.poisson(0.3, n) + 1,
            "amount": rng.uniform(10.0, 300.0, n).round(2),
            "cashback_amount": rng.uniform(0.5, 20.0, n).round(2),
            "label": fraud.astype(np.int8),
        }
    ).with_columns(pl.col("tenure_days").fill_nan(None))


@pytest.fixture(scope="session")
def fitted_fraud() -> tuple[FraudModel, Thresholds, pl.DataFrame]:
    """A fitted model, thresholds, and held-out claims to score."""
    config = FraudSettings(max_rounds=60, early_stopping_rounds=10, anomaly_trees=20)
    train, valid, held_out = (
        synthetic_claims(n, seed) for n, seed in ((4000, 1), (1500, 2), (600, 3))
    )
    x_train, x_valid = encode(train, FEATURES), encode(valid, FEATURES)
    anomaly = fit_anomaly(config, x_train)
    names = [*FEATURES, ANOMALY_FEATURE]

    def full(x: np.ndarray) -> np.ndarray:
        return np.column_stack([x, anomaly.score(x)])

    y_train, y_valid = train["label"].to_numpy(), valid["label"].to_numpy()
    booster = fit_booster(config, names, (full(x_train), y_train), (full(x_valid), y_valid))
    margin = np.asarray(booster.predict(full(x_valid), raw_score=True))
    calibrator = fit_calibrator(margin, y_valid, "synthetic validation claims")
    typical = {n: float(np.nanmedian(full(x_train)[:, i])) for i, n in enumerate(names)}
    model = FraudModel(FEATURES, booster, anomaly, calibrator, typical, {"rounds": 60})
    return model, Thresholds(1.0, 0.9, 0.05, 100.0), held_out
