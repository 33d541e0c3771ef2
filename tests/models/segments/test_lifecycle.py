"""The segment model as pyfunc, its evaluator and the quality metrics behind the gate."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest
from mlflow.models import infer_signature

from cashback.settings import SegmentSettings
from models.registry import evaluator_for
from models.segments.fit import fit_clusters, native_model
from models.segments.model import INACTIVE, SegmentModel, active_mask, clustering_space, raw_matrix
from models.segments.pyfunc import SegmentsPyfunc, artifacts, model_input, predict_frame
from models.segments.quality import TRUE_SEGMENT, segmentation_quality
from tests.models.segments.conftest import FEATURES


@pytest.fixture(scope="module")
def model(customers: pl.DataFrame) -> SegmentModel:
    space = clustering_space(FEATURES)
    active = customers.filter(pl.Series(active_mask(customers)))
    config = SegmentSettings(k_min=4, k_max=4, n_init=4)
    fit = fit_clusters(space, raw_matrix(active, space.columns), config)
    names = ("loyal", "big", "new", "fading")
    return native_model(fit.pipeline, space, names, {})


def _saved_pyfunc(model: SegmentModel, customers: pl.DataFrame, tmp_path: Path) -> object:
    path = model.save(tmp_path / "files")
    example = model_input(customers.head(5), FEATURES)
    signature = infer_signature(example, predict_frame(model, customers.head(5)))
    target = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        str(target),
        python_model=SegmentsPyfunc(),
        artifacts={k: str(v) for k, v in artifacts(path).items()},
        signature=signature,
        input_example=example,
        pip_requirements=["mlflow"],  # not inferred: that would take seconds
    )
    return mlflow.pyfunc.load_model(str(target))


def test_given_the_pyfunc_model_then_it_assigns_what_the_native_model_assigns(
    model: SegmentModel, customers: pl.DataFrame, tmp_path: Path
) -> None:
    # given the model saved as MLflow pyfunc and loaded back
    pyfunc = _saved_pyfunc(model, customers, tmp_path)

    # when both assign every customer (features as serving would pass them)
    served = pyfunc.predict(model_input(customers, FEATURES))  # type: ignore[attr-defined]

    # then the segments are identical, inactive customers included
    assert served["segment"].tolist() == model.assign(customers).to_list()
    assert (served["segment"] == INACTIVE).sum() == 200

    # and the evaluator found by the registry scores it like the training metrics
    evaluator = evaluator_for("segments")
    assert evaluator.gate.primary.name == "silhouette"
    scored = evaluator.evaluate(pyfunc, customers)  # type: ignore[arg-type]
    expected = segmentation_quality(customers, model.assign(customers).to_list())
    assert scored == pytest.approx(expected, nan_ok=True)
    assert {s.name for s in evaluator.gate.metrics} <= set(scored)


def test_given_good_and_bad_segmentations_then_the_quality_metrics_tell_them_apart(
    customers: pl.DataFrame,
) -> None:
    # given the planted types as a truth, the planted types themselves, and a random labelling
    frame = customers.with_columns(
        pl.when(pl.col("planted") != "inactive").then(pl.col("planted")).alias(TRUE_SEGMENT),
        (pl.col("planted") == "loyal").cast(pl.Int64).mul(10).add(3).alias("rfm_total"),
    )
    planted = frame["planted"].to_list()
    rng = np.random.default_rng(0)
    shuffled = [p if p == INACTIVE else str(rng.choice(["a", "b", "c", "d"])) for p in planted]

    # when both are scored
    good = segmentation_quality(frame, planted)
    bad = segmentation_quality(frame, shuffled)

    # then the planted one wins on every count
    assert good["truth_ari"] == pytest.approx(1.0)
    assert abs(bad["truth_ari"]) < 0.01
    assert good["silhouette"] > 0.3 > bad["silhouette"]
    assert good["rfm_eta2"] == pytest.approx(1.0)
    assert bad["rfm_eta2"] < 0.01
    assert good["inactive_agreement"] == bad["inactive_agreement"] == 1.0
    assert good["segments"] == 4
    # and a model that calls everyone inactive is caught
    lazy = segmentation_quality(frame, [INACTIVE] * frame.height)
    assert lazy["inactive_agreement"] == pytest.approx(200 / frame.height)
    assert np.isnan(lazy["silhouette"])
