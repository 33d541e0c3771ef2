"""The segment model in the model lifecycle: its gate and its registration.

Gate (`cashback models promote segments`), on the challenger run's evaluation set (a seeded
sample of the active customers' segments_v1 features at the close), both models' segments
judged in the same reference space (`models.segments.quality`):
- primary: `silhouette` (higher is better): compact, well separated segments; it is also
  the criterion k is chosen by;
- guardrail: `rfm_eta2` (higher is better): the share of the variance of the RFM total the
  segments explain, so that a challenger does not buy its silhouette with segments that no
  longer tell valuable customers apart (fewer clusters always look more compact).

Stability (two-halves ARI) needs refitting, which a registered model cannot do: it is a
training metric (`stability_ari`), with the truth ARI in simulated worlds (`truth_ari`).
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
from models.segments.plots import figures
from models.segments.pyfunc import SegmentsPyfunc, artifacts, model_input
from models.segments.quality import segmentation_quality

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from models.segments.model import FloatArray
    from pipelines.train_segments import SegmentsTraining

SHORT = "segments"


class SegmentsEvaluator:
    """Scores a segments pyfunc model on customers' segments_v1 features."""

    @property
    def gate(self) -> Gate:
        """The silhouette decides; the RFM variance explained guards."""
        return Gate(
            primary=MetricSpec("silhouette", higher_is_better=True),
            guardrails=(MetricSpec("rfm_eta2", higher_is_better=True),),
        )

    def evaluate(self, model: PyFuncModel, evaluation: pl.DataFrame) -> dict[str, float]:
        """The gate's metrics (and the other quality metrics) of `model` on `evaluation`."""
        schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        output: pd.DataFrame = model.predict(model_input(evaluation, schema.input_names()))
        return segmentation_quality(evaluation, output["segment"].astype(str).tolist())


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def register_segments(
    settings: Settings,
    result: SegmentsTraining,
    training: pl.DataFrame,
    evaluation: pl.DataFrame,
    coordinates: FloatArray,
    model_file: Path,
) -> str:
    """Log the training run to MLflow and register the model as `challenger`.

    Args:
        settings: the service settings.
        result: the training result (metrics, profiles, model).
        training: the active customers' features the clusters were fitted on.
        evaluation: the evaluation set (features, `true_segment` in simulated worlds).
        coordinates: the active customers in the model's clustering space (for the plot).
        model_file: `segments.json` written by `SegmentModel.save`.

    Returns:
        The registered version.
    """
    from models.registry import log_model_run  # noqa: PLC0415 - MLflow is slow to import

    features = list(result.features)
    active = result.assignments.filter(pl.col("segment") != "inactive")["segment"].to_list()
    plots = figures(result.profiles, coordinates, active)
    params = {
        **settings.segments.model_dump(mode="json"),
        "close": result.close.isoformat(),
        "k": result.model.k,
        "segments": list(result.model.names),
        "clustering_columns": list(result.model.columns),
        "active_customers": result.metrics.get("active_customers"),
    }
    try:
        info = log_model_run(
            settings,
            SHORT,
            python_model=SegmentsPyfunc(),
            artifacts=artifacts(model_file),
            params=params,
            metrics=_finite(result.metrics),
            evaluation=evaluation,
            training_data=training.select(features),
            input_example=model_input(evaluation.head(5), features),
            plots=plots,
            tags={"close": result.close.isoformat(), "segments": ", ".join(result.model.names)},
        )
    finally:
        for figure in plots.values():
            plt.close(figure)
    return str(info.version)
