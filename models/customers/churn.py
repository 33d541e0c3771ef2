"""The churn model: calibrated probability of no purchase in the next H days.

LightGBM on the churn_v1 features and the BG/NBD quantities of each snapshot (expected
purchases in the horizon, probability alive), trained on the training snapshots,
early-stopped on the calibration snapshot, whose out-of-sample scores then fit an isotonic
calibration. Judged on the validation snapshot beside the BG/NBD baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from cashback.errors import CashbackError
from cashback.settings import CustomerModelSettings

FloatMatrix = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int8]


@dataclass
class ChurnModel:
    """A fitted churn model.

    Attributes:
        features: input names, in matrix order.
        booster: the LightGBM model (raw margin out).
        calibration_x: isotonic knots: raw scores.
        calibration_y: isotonic knots: probabilities.
        params: what it was trained with.
    """

    features: list[str]
    booster: lgb.Booster
    calibration_x: list[float]
    calibration_y: list[float]
    params: dict[str, Any] = field(default_factory=dict)

    def raw(self, x: FloatMatrix) -> FloatMatrix:
        """Uncalibrated scores (the booster's probability)."""
        return np.asarray(self.booster.predict(x))

    def probability(self, x: FloatMatrix) -> FloatMatrix:
        """Calibrated churn probabilities."""
        return np.interp(self.raw(x), self.calibration_x, self.calibration_y)


def _check(name: str, y: Labels, minimum: int) -> None:
    churners, stayers = int(y.sum()), int(len(y) - y.sum())
    if min(churners, stayers) < minimum:
        msg = (
            f"too few customers to learn churn on the {name} snapshots: {churners} churners "
            f"and {stayers} stayers (at least {minimum} of each; setting "
            "CASHBACK_CUSTOMERS__MIN_POSITIVES)"
        )
        raise CashbackError(msg)


def fit_churn(
    config: CustomerModelSettings,
    names: list[str],
    train: tuple[FloatMatrix, Labels],
    calibration: tuple[FloatMatrix, Labels],
) -> ChurnModel:
    """Fit the booster, then the isotonic calibration on the calibration snapshot.

    Raises:
        CashbackError: when a snapshot set has too few churners or stayers.
    """
    _check("training", train[1], config.min_positives)
    _check("calibration", calibration[1], config.min_positives)
    params = {
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": 2,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(train[0], train[1], feature_name=names)
    valid_set = lgb.Dataset(calibration[0], calibration[1], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.max_rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    raw = np.asarray(booster.predict(calibration[0]))
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        raw, calibration[1]
    )
    return ChurnModel(
        names,
        booster,
        [float(v) for v in isotonic.X_thresholds_],
        [float(v) for v in isotonic.y_thresholds_],
        {**params, "best_iteration": booster.best_iteration},
    )


def lift_top_decile(label: Labels, score: FloatMatrix) -> float:
    """Churn rate among the top 10 % by score over the overall churn rate."""
    top = np.argsort(-score, kind="stable")[: max(len(score) // 10, 1)]
    return float(label[top].mean() / label.mean()) if label.mean() > 0 else float("nan")


def churn_metrics(label: Labels, probability: FloatMatrix, prefix: str) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier score and top-decile lift of churn probabilities."""
    return {
        f"{prefix}_roc_auc": float(roc_auc_score(label, probability)),
        f"{prefix}_pr_auc": float(average_precision_score(label, probability)),
        f"{prefix}_brier": float(brier_score_loss(label, probability)),
        f"{prefix}_lift_top_decile": lift_top_decile(label, probability),
    }


BOOSTER = "churn_booster.txt"
META = "churn.json"


def save_churn(model: ChurnModel, directory: Path) -> dict[str, Path]:
    """Write the model as a LightGBM text file and JSON; returns the files by artifact name."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"booster": directory / BOOSTER, "meta": directory / META}
    model.booster.save_model(str(files["booster"]))
    meta = {
        "features": model.features,
        "calibration_x": model.calibration_x,
        "calibration_y": model.calibration_y,
        "params": model.params,
    }
    files["meta"].write_text(json.dumps(meta, indent=2, default=str))
    return files


def load_churn(directory: Path) -> ChurnModel:
    """Read a model written by `save_churn`."""
    meta = json.loads((directory / META).read_text())
    return ChurnModel(
        list(meta["features"]),
        lgb.Booster(model_file=str(directory / BOOSTER)),
        list(meta["calibration_x"]),
        list(meta["calibration_y"]),
        dict(meta["params"]),
    )
