"""A toy model for the lifecycle tests: LightGBM on synthetic data, wrapped as pyfunc."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl
from matplotlib.figure import Figure
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.model import PythonModel
from sklearn.metrics import brier_score_loss, roc_auc_score

from cashback.settings import Settings
from models.evaluation import Gate, MetricSpec
from models.registry import ModelVersionInfo, log_model_run

FEATURES = ("f0", "f1", "f2", "f3")
BOOSTER_FILE = "booster.txt"


class BoosterModel(PythonModel):
    """Pyfunc wrapper of a LightGBM booster file (the artifact `booster`)."""

    def load_context(self, context: Any) -> None:
        self.booster = lgb.Booster(model_file=context.artifacts["booster"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return self.booster.predict(model_input[list(FEATURES)].to_numpy(dtype=np.float64))


@dataclass(frozen=True)
class ToyEvaluator:
    """ROC-AUC decides, the Brier score is a guardrail."""

    gate: Gate = field(default=Gate(MetricSpec("roc_auc", True), (MetricSpec("brier", False),)))

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        score = np.asarray(model.predict(evaluation.select(FEATURES).to_pandas()))
        label = evaluation["label"].to_numpy()
        return {
            "roc_auc": float(roc_auc_score(label, score)),
            "brier": float(brier_score_loss(label, score)),
        }


def claims(n: int, seed: int) -> pl.DataFrame:
    """Synthetic claims: raw ids, four features and a label that depends on two of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.5 * x[:, 1])))
    return pl.DataFrame(
        {
            "claim_id": [f"clm-{seed}-{i:06d}" for i in range(n)],
            "customer_id": [f"cus-{seed}-{i % 97:04d}" for i in range(n)],
            "ip_hash": [f"iphash{seed}{i:08x}" for i in range(n)],
            **{name: x[:, j] for j, name in enumerate(FEATURES)},
            "label": (rng.random(n) < p).astype(np.int8),
        }
    )


def train(data: pl.DataFrame, directory: Path, *, shuffle_labels: bool = False) -> Path:
    """Train a small booster and save it; returns the booster file."""
    label = data["label"].to_numpy()
    if shuffle_labels:
        label = np.random.default_rng(99).permutation(label)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 1, "deterministic": True},
        lgb.Dataset(data.select(FEATURES).to_numpy(), label),
        num_boost_round=20,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BOOSTER_FILE
    booster.save_model(path)
    return path


def curve(score: np.ndarray[Any, Any]) -> Figure:
    """A small figure (no pyplot, no backend needed)."""
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().hist(score, bins=10)
    return figure


def log_toy(
    settings: Settings,
    directory: Path,
    *,
    short: str = "fraud",
    shuffle_labels: bool = False,
    tags: dict[str, str] | None = None,
) -> ModelVersionInfo:
    """Train a toy booster in `directory` and log it as a challenger of `short`."""
    training, evaluation = claims(2_000, seed=1), claims(1_000, seed=2)
    booster_file = train(training, directory, shuffle_labels=shuffle_labels)
    score = lgb.Booster(model_file=booster_file).predict(evaluation.select(FEATURES).to_numpy())
    label = evaluation["label"].to_numpy()
    return log_model_run(
        settings,
        short,
        python_model=BoosterModel(),
        artifacts={"booster": booster_file},
        params={"num_leaves": 7, "rounds": 20, "shuffled": shuffle_labels},
        metrics={
            "roc_auc": float(roc_auc_score(label, score)),
            "brier": float(brier_score_loss(label, score)),
        },
        evaluation=evaluation,
        training_data=training,
        input_example=training.select(FEATURES).head(5).to_pandas(),
        plots={"score_histogram": curve(score)},
        tags=tags,
    )
