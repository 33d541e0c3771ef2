"""The customer value model: expected spend over the next H_v days.

A LightGBM regressor with a Tweedie objective (spend is exactly zero for many customers and
long-tailed for the rest) on the churn_v1 features and the BG/NBD x Gamma-Gamma quantities of
the customer at the same close. Judged by MAE (budgeting) and Spearman correlation (ranking
customers for an offer) against the actual later spend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

from cashback.settings import CustomerModelSettings

FloatMatrix = npt.NDArray[np.float64]
BOOSTER = "value_booster.txt"
META = "value.json"
ROUNDS = 300


@dataclass
class ValueModel:
    """A fitted value model.

    Attributes:
        features: input names, in matrix order.
        booster: the LightGBM model (expected spend out).
        params: what it was trained with.
    """

    features: list[str]
    booster: lgb.Booster
    params: dict[str, Any] = field(default_factory=dict)

    def spend(self, x: FloatMatrix) -> FloatMatrix:
        """Expected spend over the horizon, per row (never negative)."""
        return np.asarray(self.booster.predict(x))


def value_params(config: CustomerModelSettings) -> dict[str, Any]:
    """LightGBM parameters of the value regressor."""
    return {
        "objective": "tweedie",
        "tweedie_variance_power": 1.3,
        "learning_rate": config.learning_rate,
        "num_leaves": 15,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "lambda_l2": 1.0,
        "num_threads": 2,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }


def fit_value(
    config: CustomerModelSettings, names: list[str], x: FloatMatrix, y: FloatMatrix
) -> ValueModel:
    """Fit the regressor on features `x` and later spend `y`."""
    params = value_params(config)
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=names), num_boost_round=ROUNDS)
    return ValueModel(names, booster, {**params, "rounds": ROUNDS})


def value_metrics(actual: FloatMatrix, predicted: FloatMatrix, prefix: str) -> dict[str, float]:
    """MAE and Spearman correlation of predicted against actual spend."""
    return {
        f"{prefix}_mae": float(np.mean(np.abs(actual - predicted))),
        f"{prefix}_spearman": float(spearmanr(actual, predicted).statistic),
    }


def save_value(model: ValueModel, directory: Path) -> dict[str, Path]:
    """Write the model as a LightGBM text file and JSON; the files by artifact name."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"value_booster": directory / BOOSTER, "value_meta": directory / META}
    model.booster.save_model(str(files["value_booster"]))
    meta = {"features": model.features, "params": model.params}
    files["value_meta"].write_text(json.dumps(meta, indent=2, default=str))
    return files


def load_value(directory: Path) -> ValueModel:
    """Read a model written by `save_value`."""
    meta = json.loads((directory / META).read_text())
    return ValueModel(
        list(meta["features"]),
        lgb.Booster(model_file=str(directory / BOOSTER)),
        dict(meta["params"]),
    )
