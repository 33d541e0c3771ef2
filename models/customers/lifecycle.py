"""The churn model in the model lifecycle: pyfunc wrapper, gate, registration, plots.

Gate (`cashback models promote churn`), on the challenger run's evaluation set (the
validation snapshot's customers): primary `roc_auc`; guardrails `brier` (lower is better)
and `pr_auc`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")  # files only

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl
from matplotlib.figure import Figure
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from sklearn.calibration import calibration_curve

from cashback.settings import Settings
from models.customers.churn import churn_metrics, load_churn, save_churn
from models.evaluation import Gate, MetricSpec
from models.fraud.dataset import encode

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from pipelines.train_churn import ChurnTraining

SHORT = "churn"
LABEL = "churned"


def model_input(frame: pl.DataFrame, features: list[str]) -> pd.DataFrame:
    """Features as the pyfunc model takes them: numbers as floats, categories as text."""
    return frame.select(
        pl.col(name) if frame.schema[name] == pl.String else pl.col(name).cast(pl.Float64)
        for name in features
    ).to_pandas()


class ChurnPyfunc(PythonModel):
    """Pyfunc wrapper of a saved churn model: features in, churn probability out."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model files from the artifact directory."""
        self._model = load_churn(Path(context.artifacts["meta"]).parent)

    def predict(
        self,
        context: PythonModelContext,  # noqa: ARG002 - pyfunc signature
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # noqa: ARG002 - pyfunc signature
    ) -> pd.DataFrame:
        """Churn probabilities of customer rows."""
        x = encode(pl.from_pandas(model_input), self._model.features)
        return pd.DataFrame({"probability": self._model.probability(x)})


class ChurnEvaluator:
    """Scores a churn pyfunc model on labelled snapshot rows (features and `churned`)."""

    @property
    def gate(self) -> Gate:
        """ROC-AUC decides; calibration (Brier) and PR-AUC guard."""
        return Gate(
            primary=MetricSpec("roc_auc", higher_is_better=True),
            guardrails=(
                MetricSpec("brier", higher_is_better=False),
                MetricSpec("pr_auc", higher_is_better=True),
            ),
        )

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """The gate's metrics of `model` on `evaluation`."""
        schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        scores: pd.DataFrame = model.predict(model_input(evaluation, schema.input_names()))
        label = evaluation[LABEL].to_numpy().astype(np.int8)
        found = churn_metrics(label, scores["probability"].to_numpy(), "m")
        return {k.removeprefix("m_"): v for k, v in found.items()}


def calibration_figure(validation: pl.DataFrame) -> Figure:
    """Predicted churn probability against the observed churn rate, model and BG/NBD."""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    label = validation[LABEL].to_numpy()
    for name, column in (("model", "probability"), ("BG/NBD", "bgnbd_p_no_purchase")):
        observed, predicted = calibration_curve(
            label, validation[column].to_numpy(), n_bins=10, strategy="quantile"
        )
        axes.plot(predicted, observed, marker="o", label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        title="Calibration on the validation snapshot",
    )
    axes.legend()
    figure.tight_layout()
    return figure


def register_churn(settings: Settings, result: ChurnTraining, frame: pl.DataFrame) -> str:
    """Log the training run to MLflow and register the model as `challenger`."""
    from models.registry import log_model_run  # noqa: PLC0415 - MLflow is slow to import

    features = result.model.features
    columns = [*features, LABEL]
    evaluation = result.validation.select(columns)
    training = frame.filter(pl.col("role") == "train").select(columns)
    gate = {
        k.removeprefix("model_"): v for k, v in result.metrics.items() if k.startswith("model_")
    }
    figure = calibration_figure(result.validation)
    try:
        with tempfile.TemporaryDirectory(prefix="cashback-churn-") as tmp:
            info = log_model_run(
                settings,
                SHORT,
                python_model=ChurnPyfunc(),
                artifacts=save_churn(result.model, Path(tmp)),
                params={
                    **result.model.params,
                    **settings.customers.model_dump(mode="json"),
                    "validation_snapshot": result.snapshots.validation.isoformat(),
                    "train_snapshots": ",".join(s.isoformat() for s in result.snapshots.train),
                },
                metrics=result.metrics | gate,
                evaluation=evaluation,
                training_data=training,
                input_example=model_input(evaluation.head(5), features),
                plots={"calibration": figure},
            )
    finally:
        plt.close(figure)
    return str(info.version)
