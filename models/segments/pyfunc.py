"""The segment model as an MLflow pyfunc model: segments_v1 features in, segments out.

It carries `segments.json` as its only artifact and assigns through the same
`SegmentModel` the native path uses, so both give identical segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from models.segments.model import MODEL_FILE, SegmentModel

ARTIFACT_KEY = "segments"
OUTPUT_COLUMNS = ("segment",)


def model_input(frame: pl.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Features as the pyfunc model takes them: numbers as floats, text as text.

    Floats everywhere (not pandas integers) so that a missing count is a NaN the model's
    signature accepts, not a schema error.
    """
    return frame.select(
        pl.col(name) if frame.schema[name] == pl.String else pl.col(name).cast(pl.Float64)
        for name in features
    ).to_pandas()


def predict_frame(model: SegmentModel, frame: pl.DataFrame) -> pd.DataFrame:
    """The pyfunc output: each row's segment (`inactive` without a purchase in the year)."""
    return pd.DataFrame({"segment": model.assign(frame).to_list()})


def artifacts(path: Path) -> dict[str, Path]:
    """The pyfunc artifacts of a model file written by `SegmentModel.save`."""
    return {ARTIFACT_KEY: path if path.name == MODEL_FILE else path / MODEL_FILE}


class SegmentsPyfunc(PythonModel):
    """Pyfunc wrapper of a saved segment model."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load `segments.json` from the artifacts."""
        self._model = SegmentModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self,
        context: PythonModelContext,  # noqa: ARG002 - pyfunc signature
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,  # noqa: ARG002 - pyfunc signature
    ) -> pd.DataFrame:
        """Segments of customer rows (the segments_v1 features as columns)."""
        return predict_frame(self._model, pl.from_pandas(model_input))
