"""The segment model: clusters chosen and fitted, stored as JSON, assigned in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from cashback.errors import CashbackError
from cashback.settings import SegmentSettings
from models.segments.fit import ClusterFit, choose_k, fit_clusters, native_model, predict
from models.segments.model import (
    INACTIVE,
    SegmentModel,
    active_mask,
    clustering_space,
    raw_matrix,
)
from tests.models.segments.conftest import FEATURES, synthetic_customers

CONFIG = SegmentSettings(k_min=2, k_max=6, n_init=4, silhouette_sample=800)


def _fitted(customers: pl.DataFrame) -> tuple[SegmentModel, ClusterFit, pl.DataFrame]:
    space = clustering_space(FEATURES)
    active = customers.filter(pl.Series(active_mask(customers)))
    fit = fit_clusters(space, raw_matrix(active, space.columns), CONFIG)
    names = tuple(f"segment {i}" for i in range(fit.k))
    return native_model(fit.pipeline, space, names, {"k": fit.k}), fit, active


def test_given_four_planted_types_then_k_is_four_and_the_types_are_recovered(
    customers: pl.DataFrame,
) -> None:
    # given customers of four well separated behaviour types
    # when k is chosen in 2..6 and the clusters fitted
    model, fit, active = _fitted(customers)

    # then k = 4 is the most compact stable choice, and the clusters are the types
    assert fit.k == 4
    assert fit.stability > 0.99
    assert fit.selection.filter(pl.col("chosen"))["k"].to_list() == [4]
    clusters = model.clusters(active)
    assert adjusted_rand_score(active["planted"].to_numpy(), clusters) > 0.95
    # and clusters are numbered by size, largest first
    sizes = np.bincount(clusters)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_given_the_fitted_pipeline_then_the_numpy_assignment_is_identical(
    customers: pl.DataFrame,
) -> None:
    # given a fitted pipeline and the model read from it
    model, fit, active = _fitted(customers)
    space = clustering_space(FEATURES)
    # and fresh customers the model never saw (same types, other draws)
    fresh = synthetic_customers(500, seed=99)
    for frame in (active, fresh):
        x = raw_matrix(frame, space.columns)
        # when both assign them
        native = model.clusters(frame)
        sklearn = predict(fit.pipeline, x)
        # then every cluster is the same, and so are the coordinates
        np.testing.assert_array_equal(native, sklearn)
        np.testing.assert_allclose(
            model.coordinates(frame), fit.pipeline[:-1].transform(x), rtol=0, atol=1e-12
        )


def test_given_a_saved_model_when_loaded_then_it_assigns_the_same_without_pickle(
    customers: pl.DataFrame, tmp_path: Path
) -> None:
    # given a fitted model saved to disk
    model, _, _ = _fitted(customers)
    path = model.save(tmp_path / "model")

    # when it is read back
    loaded = SegmentModel.load(path.parent)

    # then the file is plain JSON and the assignments are identical
    assert json.loads(path.read_text())["names"] == list(model.names)
    np.testing.assert_array_equal(loaded.centers, model.centers)
    assert loaded.assign(customers).to_list() == model.assign(customers).to_list()


def test_given_customers_without_a_purchase_in_the_year_then_they_are_inactive(
    customers: pl.DataFrame,
) -> None:
    # given a model, and customers with no purchase in 365 days (0 or null)
    model, _, _ = _fitted(customers)
    frame = customers.with_columns(
        pl.when(pl.col("planted") == "inactive")
        .then(pl.lit(None, dtype=pl.Int64))
        .otherwise(pl.col("purchases_365d"))
        .alias("purchases_365d")
    )

    # when they are assigned
    for rows in (customers, frame):
        segments = model.assign(rows)

        # then exactly they are inactive, and no one else
        inactive = (rows["planted"] == "inactive").to_list()
        assert [s == INACTIVE for s in segments.to_list()] == inactive
        assert set(segments.to_list()) == {*model.names, INACTIVE}
    assert (model.clusters(customers) == -1).sum() == 200


def test_given_features_without_the_behaviour_columns_then_the_space_says_what_is_missing() -> None:
    with pytest.raises(CashbackError, match="avg_basket_365d"):
        clustering_space([c for c in FEATURES if c != "avg_basket_365d"])
    with pytest.raises(CashbackError, match="share_<channel>"):
        clustering_space([c for c in FEATURES if not c.startswith("share_")])
    space = clustering_space(FEATURES)
    # the category mix weighs as much as one behaviour column
    weights = dict(zip(space.columns, space.weights, strict=True))
    assert sum(weights[c] ** 2 for c in space.category_columns) == pytest.approx(1.0)
    assert sum(weights[c] ** 2 for c in space.channel_columns) == pytest.approx(1.0)


def test_given_a_broken_model_file_then_loading_refuses(
    customers: pl.DataFrame, tmp_path: Path
) -> None:
    model, _, _ = _fitted(customers)
    data = model.to_dict()
    with pytest.raises(CashbackError, match="format"):
        SegmentModel.from_dict({**data, "format": 99})
    with pytest.raises(CashbackError, match="columns"):
        SegmentModel.from_dict({**data, "mean": data["mean"][:-1]})
    with pytest.raises(FileNotFoundError, match=r"segments\.json"):
        SegmentModel.load(tmp_path)


def test_given_silhouettes_and_stabilities_then_k_is_the_most_compact_stable_one() -> None:
    selection = pl.DataFrame(
        {
            "k": [3, 4, 5, 6],
            "silhouette": [0.30, 0.35, 0.25, float("nan")],
            "stability": [0.95, 0.60, 0.90, 0.99],
        }
    )
    # k = 4 has the best silhouette but is unstable: k = 3
    assert choose_k(selection, 0.8) == (3, None)
    # nothing stable enough: the most stable, said so
    k, note = choose_k(selection.with_columns(pl.col("stability") * 0.5), 0.8)
    assert k == 6
    assert note is not None
    assert "the most stable" in note
