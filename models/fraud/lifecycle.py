"""The fraud model in the model lifecycle: its gate, its registration, its champion.

Gate (`cashback models promote fraud`), on the challenger run's evaluation set (the test
slice's labelled claims):
- primary: `labelled_pr_auc`, average precision over every labelled claim;
- guardrails: `audit_pr_auc` (the audit sample describes every claim) and `audit_brier`
  (calibration on the audit sample; lower is better).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd
import polars as pl

from cashback.settings import Settings
from models.evaluation import Gate, MetricSpec
from models.fraud.dataset import LABEL, SOURCE, SPLIT, audited
from models.fraud.metrics import brier, ranking_metrics
from models.fraud.plots import figures
from models.fraud.pyfunc import FraudPyfunc, artifacts, model_input
from models.fraud.rules import RuleSet
from models.fraud.scorer import FraudScorer

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from pipelines.train_fraud import FraudTraining

SHORT = "fraud"
GATE_SHARE = 0.04  # recall and precision "at review" in the gate's metrics: the top 4 %


class FraudEvaluator:
    """Scores a fraud pyfunc model on labelled claims (features, `label`, `label_source`)."""

    @property
    def gate(self) -> Gate:
        """Average precision on labelled claims decides; the audit sample guards."""
        return Gate(
            primary=MetricSpec("labelled_pr_auc", higher_is_better=True),
            guardrails=(
                MetricSpec("audit_pr_auc", higher_is_better=True),
                MetricSpec("audit_brier", higher_is_better=False),
            ),
        )

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """The gate's metrics of `model` on `evaluation`."""
        schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        scores: pd.DataFrame = model.predict(model_input(evaluation, schema.input_names()))
        frame = evaluation.with_columns(pl.Series("probability", scores["probability"]))
        metrics: dict[str, float] = {}
        for name, condition in {
            "labelled": pl.col(LABEL).is_not_null(),
            "audit": audited(pl.col(SOURCE)),
        }.items():
            rows = frame.filter(condition)
            label = rows[LABEL].cast(pl.Int8).to_numpy()
            probability = rows["probability"].to_numpy()
            metrics |= ranking_metrics(label, probability, GATE_SHARE, name)
            metrics[f"{name}_brier"] = brier(label, probability)
        return metrics


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def register_fraud(
    settings: Settings, result: FraudTraining, frame: pl.DataFrame, files: Path
) -> str:
    """Log the training run to MLflow and register the model as `challenger`.

    Args:
        settings: the service settings.
        result: the training result (metrics, scored test slice).
        frame: every mature claim with features, labels and split.
        files: the model directory written by `models.fraud.artifacts.save_model`.

    Returns:
        The registered version.
    """
    from models.registry import log_model_run  # noqa: PLC0415 - MLflow is slow to import

    features = result.scorer.model.features
    labelled = pl.col(LABEL).is_not_null()
    columns = [*features, "cashback_amount", LABEL, SOURCE]
    evaluation = frame.filter((pl.col(SPLIT) == "test") & labelled).select(columns)
    training = frame.filter((pl.col(SPLIT) == "train") & labelled).select(columns)
    gate_metrics = FraudEvaluator().gate.metrics
    test_gate = {
        spec.name: value
        for spec in gate_metrics
        if not math.isnan(value := result.metrics.get(spec.name, math.nan))
    }
    plots = figures(result.test, "is_fraud", LABEL, SOURCE)
    try:
        info = log_model_run(
            settings,
            SHORT,
            python_model=FraudPyfunc(),
            artifacts=artifacts(files),
            params={**result.scorer.model.params, **settings.fraud.model_dump(mode="json")},
            metrics=_finite(result.metrics) | test_gate,
            evaluation=evaluation,
            training_data=training,
            input_example=model_input(evaluation.head(5), features),
            plots=plots,
            tags={
                "calibration_set": result.scorer.model.calibrator.fitted_on,
                "cutoff": result.periods.cutoff.isoformat(),
            },
        )
    finally:
        for figure in plots.values():
            plt.close(figure)
    return str(info.version)


def champion_scorer(settings: Settings, rules: RuleSet | None) -> tuple[FraudScorer, str]:
    """The champion fraud model, loaded natively from its artifacts, and its version."""
    from models.registry import champion_artifacts, champion_version  # noqa: PLC0415

    directory = champion_artifacts(settings, SHORT)
    version = champion_version(settings, SHORT)
    return FraudScorer.from_directory(directory, rules), str(version)
