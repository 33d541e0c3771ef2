"""The value (CLV) model in the model lifecycle: pyfunc wrapper, gate, registration, plot.

Gate (`cashback models promote clv`), on the challenger run's evaluation set (held-out
customers at the split): primary `spearman` (ranking customers is what targeting uses);
guardrail `mae` (lower is better: budgets are sums of these predictions).
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

from cashback.settings import Settings
from models.customers.lifecycle import model_input
from models.customers.value import ValueModel, load_value, save_value, value_metrics
from models.evaluation import Gate, MetricSpec
from models.fraud.dataset import encode

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

SHORT = "clv"
LABEL = "actual"


class ValuePyfunc(PythonModel):
    """Pyfunc wrapper of a saved value model: features in, expected spend out."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model files from the artifact directory."""
        self._model = load_value(Path(context.artifacts["value_meta"]).parent)

    def predict(
        self,
        context: PythonModelContext,  # noqa: ARG002 - pyfunc signature
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # noqa: ARG002 - pyfunc signature
    ) -> pd.DataFrame:
        """Expected spend over the horizon of customer rows."""
        x = encode(pl.from_pandas(model_input), self._model.features)
        return pd.DataFrame({"spend": self._model.spend(x)})


class ValueEvaluator:
    """Scores a value pyfunc model on rows with features and the `actual` later spend."""

    @property
    def gate(self) -> Gate:
        """Spearman decides; MAE guards."""
        return Gate(
            primary=MetricSpec("spearman", higher_is_better=True),
            guardrails=(MetricSpec("mae", higher_is_better=False),),
        )

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """The gate's metrics of `model` on `evaluation`."""
        schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        scores: pd.DataFrame = model.predict(model_input(evaluation, schema.input_names()))
        found = value_metrics(evaluation[LABEL].to_numpy(), scores["spend"].to_numpy(), "m")
        return {k.removeprefix("m_"): v for k, v in found.items()}


def decile_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Mean predicted and mean actual spend per decile of the prediction."""
    order = np.argsort(predicted, kind="stable")
    groups = np.array_split(order, 10)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    x = np.arange(1, len(groups) + 1)
    axes.bar(x - 0.2, [predicted[g].mean() for g in groups], width=0.4, label="predicted")
    axes.bar(x + 0.2, [actual[g].mean() for g in groups], width=0.4, label="actual")
    axes.set(
        xlabel="decile of predicted spend",
        ylabel="mean spend over the horizon",
        title="Value model on held-out customers",
        xticks=x,
    )
    axes.legend()
    figure.tight_layout()
    return figure


def register_value(
    settings: Settings,
    model: ValueModel,
    *,
    training: pl.DataFrame,
    evaluation: pl.DataFrame,
    metrics: dict[str, float],
    snapshot: str,
) -> str:
    """Log the value run to MLflow and register the model as `challenger`.

    Args:
        settings: the service settings.
        model: the model fitted on the training customers.
        training: its training rows (features and `actual`).
        evaluation: held-out customers' rows (features and `actual`).
        metrics: every metric of the run (the gate's among them, unprefixed).
        snapshot: the split time, ISO.
    """
    from models.registry import log_model_run  # noqa: PLC0415 - MLflow is slow to import

    columns = [*model.features, LABEL]
    predicted = model.spend(encode(evaluation, model.features))
    figure = decile_figure(evaluation[LABEL].to_numpy(), predicted)
    try:
        with tempfile.TemporaryDirectory(prefix="cashback-clv-") as tmp:
            info = log_model_run(
                settings,
                SHORT,
                python_model=ValuePyfunc(),
                artifacts=save_value(model, Path(tmp)),
                params={
                    **model.params,
                    **settings.customers.model_dump(mode="json"),
                    "snapshot": snapshot,
                },
                metrics=metrics,
                evaluation=evaluation.select(columns),
                training_data=training.select(columns),
                input_example=model_input(evaluation.head(5), model.features),
                plots={"deciles": figure},
            )
    finally:
        plt.close(figure)
    return str(info.version)
