"""The fraud model as an MLflow pyfunc model: claims with features in, scores out.

It carries the files of `models.fraud.artifacts` as its artifacts and predicts through the
same `FraudModel` the native path uses, so both give identical numbers.
Rules are configuration, not part of the model: the pyfunc output is the model's own view
(probability, risk score, anomaly score).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from models.fraud.artifacts import ANOMALY, BOOSTER, META, load_model
from models.fraud.dataset import encode
from models.fraud.model import FraudModel

ARTIFACT_FILES = {"booster": BOOSTER, "anomaly": ANOMALY, "meta": META}
OUTPUT_COLUMNS = ("probability", "risk_score", "anomaly_score")


def model_input(frame: pl.DataFrame, features: list[str]) -> pd.DataFrame:
    """Claim features as the pyfunc model takes them: numbers as floats, categories as text.

    Floats everywhere (not pandas integers) so that a missing count is a NaN the model's
    signature accepts, not a schema error.
    """
    return frame.select(
        pl.col(name) if frame.schema[name] == pl.String else pl.col(name).cast(pl.Float64)
        for name in features
    ).to_pandas()


def predict_frame(model: FraudModel, frame: pl.DataFrame) -> pd.DataFrame:
    """The pyfunc output for claim rows: probability, risk score and anomaly score."""
    full = model.with_anomaly(encode(frame, model.features))
    margin = np.asarray(model.booster.predict(full, raw_score=True))
    probability = model.calibrator.probability(margin)
    return pd.DataFrame(
        {"probability": probability, "risk_score": probability * 100, "anomaly_score": full[:, -1]}
    )


def artifacts(directory: Path) -> dict[str, Path]:
    """The pyfunc artifacts of a model directory written by `save_model`."""
    return {key: directory / name for key, name in ARTIFACT_FILES.items()}


class FraudPyfunc(PythonModel):
    """Pyfunc wrapper of a saved fraud model directory."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model files from the artifact directory."""
        self._model, _ = load_model(Path(context.artifacts["meta"]).parent)

    def predict(
        self,
        context: PythonModelContext,  # noqa: ARG002 - pyfunc signature
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # noqa: ARG002 - pyfunc signature
    ) -> pd.DataFrame:
        """Scores of claim rows (every feature of the model as a column)."""
        return predict_frame(self._model, pl.from_pandas(model_input))
