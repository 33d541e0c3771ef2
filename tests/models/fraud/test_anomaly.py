"""The flattened isolation forest: sklearn's scores exactly, one row fast, stored without pickle."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from models.fraud.anomaly import FORMAT, AnomalyScorer, average_path_length

TOLERANCE = 1e-12


def claims_like(n: int, features: int, seed: int, nan_share: float = 0.05) -> np.ndarray:
    """Mixed columns (normal, skewed, counts, a few ties), with NaN sprinkled in."""
    rng = np.random.default_rng(seed)
    columns = []
    for j in range(features):
        kind = j % 3
        if kind == 0:
            columns.append(rng.normal(10.0 * j, 1.0 + j, n))
        elif kind == 1:
            columns.append(rng.lognormal(1.0, 1.0, n))
        else:
            columns.append(rng.poisson(2.0, n).astype(float))
    x = np.column_stack(columns)
    x[rng.random(x.shape) < nan_share] = np.nan
    return x


def imputed(scorer: AnomalyScorer, x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), scorer.medians_, x)


def sklearn_scores(scorer: AnomalyScorer, x: np.ndarray) -> np.ndarray:
    """What the fitted inner IsolationForest says on the same imputed input."""
    assert scorer.forest_ is not None
    return -np.asarray(scorer.forest_.score_samples(imputed(scorer, x)))


def near_thresholds(scorer: AnomalyScorer, n: int, seed: int) -> np.ndarray:
    """Rows whose values sit on, and one float32 step either side of, split thresholds."""
    rng = np.random.default_rng(seed)
    split = np.flatnonzero(scorer.left_ != np.arange(len(scorer.left_)))
    rows = np.tile(scorer.medians_, (n, 1))
    for i in range(n):
        for node in rng.choice(split, size=min(len(split), 3 * scorer.n_features_in_)):
            value = np.float32(scorer.threshold_[node])
            step = rng.integers(-1, 2)
            if step:
                value = np.nextafter(value, np.float32(np.inf * step))
            rows[i, scorer.feature_[node]] = float(value)
    return rows


# ------------------------------------------------------------------------ equal to sklearn


@pytest.mark.parametrize(
    ("n_estimators", "max_samples", "features"),
    [(100, "auto", 12), (37, 64, 5), (10, 0.5, 1), (1, "auto", 30), (25, 3, 4)],
)
def test_score_is_sklearns_score_samples_on_the_imputed_input(
    n_estimators: int, max_samples: Any, features: int
) -> None:
    # given a scorer fitted on NaN-sprinkled training rows
    train = claims_like(3_000, features, seed=1)
    scorer = AnomalyScorer(n_estimators, max_samples, random_state=7).fit(train)

    # when unseen rows (NaN included, some far outside the training range) and rows sitting
    # exactly on split thresholds are scored
    test = np.vstack(
        [
            claims_like(2_000, features, seed=2, nan_share=0.1),
            claims_like(50, features, seed=3) * 50.0 - 1e4,
            near_thresholds(scorer, 300, seed=4),
        ]
    )
    got = scorer.score(test)

    # then the scores are the inner forest's -score_samples on the same imputed rows
    want = sklearn_scores(scorer, test)
    np.testing.assert_allclose(got, want, rtol=0.0, atol=TOLERANCE)
    assert got.shape == (len(test),)
    assert ((got > 0.0) & (got <= 1.0)).all()


def test_score_one_is_score_of_that_row_and_sklearns() -> None:
    # given a fitted scorer and rows with NaN
    train = claims_like(4_000, 9, seed=5)
    scorer = AnomalyScorer(random_state=0).fit(train)
    test = np.vstack([claims_like(300, 9, seed=6, nan_share=0.2), near_thresholds(scorer, 50, 7)])
    batch = scorer.score(test)
    want = sklearn_scores(scorer, test)

    for i, row in enumerate(test):
        # when one row is scored (as an array with NaN, and as a list with None)
        as_list = [None if np.isnan(v) else float(v) for v in row]
        one = scorer.score_one(row)

        # then it is the batch score of that row, and sklearn's
        assert isinstance(one, float)
        assert one == pytest.approx(batch[i], rel=1e-15, abs=0.0)
        assert scorer.score_one(as_list) == one
        assert abs(one - want[i]) <= TOLERANCE


def test_large_batches_go_in_blocks_with_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a scorer and more rows than one block holds
    scorer = AnomalyScorer(n_estimators=20, random_state=3).fit(claims_like(1_000, 6, seed=8))
    test = claims_like(1_001, 6, seed=9)
    whole = scorer.score(test)

    # when blocks are made tiny (7 rows of 20 trees at a time), then nothing changes
    monkeypatch.setattr("models.fraud.anomaly.BLOCK_CELLS", 150)
    np.testing.assert_array_equal(scorer.score(test), whole)
    # and no row at all is an empty answer
    assert scorer.score(np.empty((0, 6))).shape == (0,)


def test_threads_and_memory_layouts_do_not_change_the_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a scorer, and rows cut in many small tasks (7-row blocks, 3 blocks a task)
    scorer = AnomalyScorer(n_estimators=20, random_state=3).fit(claims_like(1_000, 6, seed=8))
    test = claims_like(1_001, 6, seed=10, nan_share=0.1)
    test[:5] = 1e39  # beyond float32: inf, as sklearn's cast
    monkeypatch.setattr("models.fraud.anomaly.BLOCK_CELLS", 150)
    monkeypatch.setattr("models.fraud.anomaly.TASK_BLOCKS", 3)
    monkeypatch.setattr("models.fraud.anomaly.THREADS", 1)
    alone = scorer.score(test)

    # when a pool of threads walks them, and the rows come in other layouts and types
    monkeypatch.setattr("models.fraud.anomaly.THREADS", 4)
    pooled = scorer.score(test)
    fortran = scorer.score(np.asfortranarray(test))
    strided = scorer.score(np.hstack([test, test])[:, :6])
    as_lists = scorer.score([[None if np.isnan(v) else float(v) for v in row] for row in test])

    # then every score is the same, bit for bit, and still sklearn's
    for other in (pooled, fortran, strided, as_lists):
        np.testing.assert_array_equal(other, alone)
    with np.errstate(over="ignore"):  # sklearn's own cast of 1e39
        want = sklearn_scores(scorer, test)
    np.testing.assert_allclose(alone, want, rtol=0.0, atol=TOLERANCE)
    assert scorer.score_one(test[5]) == alone[5]
    # and the caller's rows are not written to
    assert np.isnan(test).any()


def test_average_path_length_is_sklearns() -> None:
    from sklearn.ensemble._iforest import _average_path_length

    n = np.arange(0, 600)
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))
    assert average_path_length([256])[0] == _average_path_length([256])[0]


def test_a_single_training_row_scores_one_half_as_sklearn() -> None:
    scorer = AnomalyScorer(n_estimators=5, random_state=0).fit(np.array([[1.0, 2.0]]))
    rows = np.array([[1.0, 2.0], [50.0, -3.0]])
    np.testing.assert_array_equal(scorer.score(rows), [0.5, 0.5])
    np.testing.assert_array_equal(scorer.score(rows), sklearn_scores(scorer, rows))
    assert scorer.score_one([50.0, None]) == 0.5


# ----------------------------------------------------------------------------- NaN handling


def test_missing_values_are_imputed_with_the_training_medians() -> None:
    # given training rows with NaN, and a column that is never filled in
    train = claims_like(2_000, 4, seed=10)
    train[:, 3] = np.nan
    scorer = AnomalyScorer(n_estimators=30, random_state=1).fit(train)

    # then the medians are the columns' NaN-medians, 0.0 for the empty column
    np.testing.assert_array_equal(scorer.medians_[:3], np.nanmedian(train[:, :3], axis=0))
    assert scorer.medians_[3] == 0.0

    # and a row with a gap scores as the row with the median written in
    row = np.array([np.nan, 3.0, np.nan, 7.0])
    filled = np.where(np.isnan(row), scorer.medians_, row)
    assert scorer.score(row[None, :])[0] == scorer.score(filled[None, :])[0]
    assert scorer.score_one([None, 3.0, float("nan"), 7.0]) == scorer.score_one(filled)
    # the caller's array is not written to
    assert np.isnan(row[0])


def test_the_inner_forest_is_fitted_on_the_imputed_training_rows() -> None:
    train = claims_like(1_500, 5, seed=11)
    scorer = AnomalyScorer(n_estimators=15, random_state=4).fit(train)
    same = IsolationForest(n_estimators=15, random_state=4).fit(imputed(scorer, train))
    test = claims_like(500, 5, seed=12)
    assert scorer.forest_ is not None
    np.testing.assert_array_equal(
        scorer.forest_.score_samples(imputed(scorer, test)),
        same.score_samples(imputed(scorer, test)),
    )


def test_fit_refuses_infinities_and_empty_or_flat_input() -> None:
    train = claims_like(100, 3, seed=13)
    train[5, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        AnomalyScorer().fit(train)
    for bad in (np.empty((0, 3)), np.ones(5), np.empty((4, 0))):
        with pytest.raises(ValueError, match="non-empty 2-D"):
            AnomalyScorer().fit(bad)


def test_scoring_refuses_rows_of_the_wrong_width() -> None:
    scorer = AnomalyScorer(n_estimators=5, random_state=0).fit(claims_like(200, 3, seed=14))
    with pytest.raises(ValueError, match="shape"):
        scorer.score(np.ones((4, 2)))
    with pytest.raises(ValueError, match="shape"):
        scorer.score(np.ones(3))
    with pytest.raises(ValueError, match="3 values"):
        scorer.score_one([1.0, 2.0])


# ------------------------------------------------------------------------------ the signal


def test_outliers_score_higher_than_inliers() -> None:
    # given a training cloud of normal claims in 6 dimensions
    rng = np.random.default_rng(15)
    train = rng.normal(size=(5_000, 6))
    scorer = AnomalyScorer(random_state=2).fit(train)

    # when fresh inliers and far-away points are scored
    inliers = scorer.score(rng.normal(size=(1_000, 6)))
    outliers = scorer.score(rng.normal(size=(100, 6)) + rng.choice([-6.0, 6.0], size=(100, 6)))

    # then every outlier scores above the 95th percentile of the inliers, above 0.6
    assert outliers.min() > np.quantile(inliers, 0.95)
    assert outliers.min() > 0.6
    assert np.median(inliers) < 0.5


# ----------------------------------------------------------------------------- persistence


def test_to_dict_through_json_and_back_scores_identically() -> None:
    # given a fitted scorer
    train = claims_like(2_000, 7, seed=16)
    scorer = AnomalyScorer(n_estimators=40, max_samples=128, random_state=5).fit(train)
    test = claims_like(700, 7, seed=17, nan_share=0.2)

    # when it goes through a JSON document and back
    data = json.loads(json.dumps(scorer.to_dict()))
    loaded = AnomalyScorer.from_dict(data)

    # then it scores the very same, with the same parameters and fitted arrays
    assert data["format"] == FORMAT
    np.testing.assert_array_equal(loaded.score(test), scorer.score(test))
    assert loaded.score_one(test[0]) == scorer.score_one(test[0])
    assert loaded.get_params() == scorer.get_params()
    for name in ("medians_", "tree_start_", "feature_", "threshold_", "left_", "right_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(scorer, name))
    np.testing.assert_array_equal(loaded.leaf_value_, scorer.leaf_value_)
    assert (loaded.max_depth_, loaded.max_samples_) == (scorer.max_depth_, scorer.max_samples_)
    assert loaded.forest_ is None


def test_save_and_load_an_npz_without_pickle(tmp_path: Path) -> None:
    train = claims_like(2_000, 5, seed=18)
    scorer = AnomalyScorer(n_estimators=30, random_state=np.random.RandomState(0)).fit(train)
    test = claims_like(300, 5, seed=19)

    path = scorer.save(tmp_path / "anomaly.npz")
    loaded = AnomalyScorer.load(path)

    assert path == tmp_path / "anomaly.npz"
    with np.load(path, allow_pickle=False) as stored:  # every entry loads without pickle
        assert {"header", "feature", "threshold", "medians"} <= set(stored.files)
    np.testing.assert_array_equal(loaded.score(test), scorer.score(test))
    assert loaded.get_params()["random_state"] is None  # a RandomState is not stored


def _leaf_to_root(data: dict[str, Any]) -> None:
    """Turn a leaf of the first tree into a split whose children are the root: a cycle."""
    leaf = next(i for i, left in enumerate(data["left"]) if left == i)
    data["left"][leaf] = data["right"][leaf] = 0


def _shorten(key: str) -> Callable[[dict[str, Any]], None]:
    def shorten(data: dict[str, Any]) -> None:
        data[key] = data[key][:-1]

    return shorten


CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "format": (lambda d: d.update(format="something/else"), "format"),
    "child index": (lambda d: d["left"].__setitem__(0, len(d["left"])), "out of range"),
    "feature": (lambda d: d["feature"].__setitem__(0, 4), "feature is out of range"),
    "lengths": (_shorten("threshold"), "differ in length"),
    "medians": (_shorten("medians"), "medians"),
    "cycle": (_leaf_to_root, "cycle"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_from_dict_refuses_what_cannot_be_a_scorer(corruption: str) -> None:
    scorer = AnomalyScorer(n_estimators=3, random_state=0).fit(claims_like(300, 4, seed=20))
    data = scorer.to_dict()
    corrupt, message = CORRUPTIONS[corruption]
    corrupt(data)
    with pytest.raises(ValueError, match=message):
        AnomalyScorer.from_dict(data)


# ------------------------------------------------------------------------ estimator contract


def test_init_only_stores_the_parameters() -> None:
    share = 0.25
    scorer = AnomalyScorer(n_estimators=-3, max_samples=share, random_state=11)

    # nothing is checked or computed before fit, and nothing fitted exists
    assert scorer.get_params() == {"n_estimators": -3, "max_samples": 0.25, "random_state": 11}
    assert scorer.max_samples is share
    assert not [name for name in vars(scorer) if name.endswith("_") or name.startswith("_")]
    with pytest.raises(ValueError, match="n_estimators"):
        scorer.fit(claims_like(50, 2, seed=21))


def test_get_params_set_params_and_clone_follow_sklearn() -> None:
    scorer = AnomalyScorer(n_estimators=12, random_state=3)
    assert scorer.set_params(max_samples=64) is scorer
    assert scorer.get_params()["max_samples"] == 64
    copy = clone(scorer)
    assert copy.get_params() == scorer.get_params()
    assert "n_estimators=12" in repr(scorer)
    assert scorer.__sklearn_tags__().input_tags.allow_nan


def test_unfitted_use_raises_not_fitted() -> None:
    scorer = AnomalyScorer()
    for use in (
        lambda: scorer.score(np.ones((2, 3))),
        lambda: scorer.score_one([1.0, 2.0, 3.0]),
        scorer.to_dict,
        lambda: check_is_fitted(scorer),
    ):
        with pytest.raises(NotFittedError):
            use()


def test_fit_returns_self_with_the_fitted_attributes() -> None:
    scorer = AnomalyScorer(n_estimators=8, random_state=0)
    train = claims_like(500, 3, seed=22)
    assert scorer.fit(train, y=np.zeros(500)) is scorer
    check_is_fitted(scorer)
    n_nodes = len(scorer.feature_)
    assert scorer.n_features_in_ == 3
    assert scorer.max_samples_ == 256
    assert len(scorer.tree_start_) == 8
    assert scorer.forest_ is not None
    assert scorer.max_depth_ == max(e.tree_.max_depth for e in scorer.forest_.estimators_)
    for name in ("threshold_", "left_", "right_", "leaf_value_"):
        assert getattr(scorer, name).shape == (n_nodes,)
    # refitting with the same seed gives the same forest
    again = AnomalyScorer(n_estimators=8, random_state=0).fit(train)
    np.testing.assert_array_equal(again.threshold_, scorer.threshold_)
