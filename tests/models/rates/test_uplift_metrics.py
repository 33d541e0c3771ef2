"""Qini and uplift curves and scores: equal to scikit-uplift 0.5.1's, weights, rate levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import auc
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.rates import uplift_metrics as um
from tests.conftest import shared_file

sk = pytest.importorskip("sklift.metrics")
sk_models = pytest.importorskip("sklift.models")

TOL = 1e-9
# scikit-uplift 0.5.1 calls a scikit-learn helper deprecated since 1.8.
pytestmark = pytest.mark.filterwarnings("ignore:Function stable_cumsum is deprecated:FutureWarning")


def _random_data(seed: int, decimals: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary outcome and treatment, a noisy score rounded so that it has many ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    t = rng.integers(0, 2, n)
    y = rng.binomial(1, 0.1 + 0.2 * rng.random(n) + 0.05 * t)
    score = np.round(rng.normal(size=n) + 0.3 * y * t, decimals)
    return y, t, score


def _assert_same_curve(ours: um.Curve, theirs: tuple[np.ndarray, np.ndarray]) -> None:
    assert ours[0].shape == np.asarray(theirs[0]).shape
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=TOL)


def _assert_same_as_sklift(y: np.ndarray, t: np.ndarray, score: np.ndarray) -> None:
    """Every curve and score equals scikit-uplift's (which takes y, score, treatment)."""
    _assert_same_curve(um.qini_curve(y, t, score), sk.qini_curve(y, score, t))
    _assert_same_curve(um.uplift_curve(y, t, score), sk.uplift_curve(y, score, t))
    _assert_same_curve(um.perfect_qini_curve(y, t), sk.perfect_qini_curve(y, t))
    _assert_same_curve(
        um.perfect_qini_curve(y, t, negative_effect=False),
        sk.perfect_qini_curve(y, t, negative_effect=False),
    )
    _assert_same_curve(um.perfect_uplift_curve(y, t), sk.perfect_uplift_curve(y, t))
    qini = sk.qini_auc_score(y, score, t)
    uplift_auc = sk.uplift_auc_score(y, score, t)
    assert um.qini_auc_score(y, t, score) == pytest.approx(qini, abs=TOL)
    assert um.uplift_auc_score(y, t, score) == pytest.approx(uplift_auc, abs=TOL)
    scores = um.uplift_scores(y, t, score)
    assert scores.qini_coefficient == pytest.approx(qini, abs=TOL)
    assert scores.uplift_auc == pytest.approx(uplift_auc, abs=TOL)
    # The unnormalised areas are the areas under scikit-uplift's curves.
    assert scores.qini_area == pytest.approx(auc(*sk.qini_curve(y, score, t)), abs=TOL)
    assert scores.uplift_area == pytest.approx(auc(*sk.uplift_curve(y, score, t)), abs=TOL)


@pytest.mark.parametrize(("seed", "decimals"), [(s, s % 3) for s in range(12)])
def test_equals_scikit_uplift_on_random_data_with_ties(seed: int, decimals: int) -> None:
    # given random data whose rounded scores tie often (0 decimals: a handful of values)
    y, t, score = _random_data(seed, decimals)
    assert np.unique(score).size < score.size
    # then every curve and score equals scikit-uplift's
    _assert_same_as_sklift(y, t, score)


def test_qini_without_negative_effects_equals_scikit_uplift() -> None:
    # given data where the treated respond more (the flag's perfect curve is then valid)
    y, t, score = _random_data(3, 1)
    # when the perfect curve assumes nobody is hurt by the treatment
    ours = um.qini_auc_score(y, t, score, negative_effect=False)
    # then it equals scikit-uplift's
    assert ours == pytest.approx(sk.qini_auc_score(y, score, t, negative_effect=False), abs=TOL)


def test_constant_score_is_the_random_line() -> None:
    # given a score that ranks nobody above anybody
    y, t, _ = _random_data(5, 1)
    # when it is scored
    scores = um.uplift_scores(y, t, np.zeros(y.size))
    # then its curves are straight lines from (0, 0) to the end: the random areas, score 0
    assert scores.qini_area == pytest.approx(scores.qini_area_random, abs=TOL)
    assert scores.uplift_area == pytest.approx(scores.uplift_area_random, abs=TOL)
    assert scores.qini_coefficient == pytest.approx(0.0, abs=TOL)


def _hillstrom_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Women's e-mail vs no e-mail, visit; a two-model logistic score on a 30 % test split."""
    frame = pd.read_csv(shared_file("hillstrom/hillstrom.csv"))
    frame = frame[frame["segment"].isin(["Womens E-Mail", "No E-Mail"])]
    t = (frame["segment"] == "Womens E-Mail").to_numpy().astype(int)
    y = frame["visit"].to_numpy()
    x = pd.get_dummies(
        frame[["recency", "history", "mens", "womens", "newbie", "zip_code", "channel"]],
        columns=["zip_code", "channel"],
        dtype=float,
    ).to_numpy()
    train, test = train_test_split(
        np.arange(y.size), test_size=0.3, stratify=2 * t + y, random_state=0
    )
    model = sk_models.TwoModels(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        method="vanilla",
    ).fit(x[train], y[train], t[train])
    return y[test], t[test], np.asarray(model.predict(x[test]))


@pytest.mark.realdata
def test_equals_scikit_uplift_on_a_hillstrom_split() -> None:
    # given Hillstrom's women's e-mail test split scored by a two-model logistic regression
    y, t, score = _hillstrom_split()
    # then every curve and score equals scikit-uplift's, also with the score rounded (ties)
    _assert_same_as_sklift(y, t, score)
    _assert_same_as_sklift(y, t, np.round(score, 3))


def test_integer_weights_equal_repeated_rows() -> None:
    # given random data and integer weights
    y, t, score = _random_data(7, 1)
    weights = np.random.default_rng(7).integers(0, 4, y.size)
    rows = np.repeat(np.arange(y.size), weights)
    # when scored with the weights, and by scikit-uplift on the rows repeated that often
    ours = um.uplift_scores(y, t, score, weights)
    # then curves and scores are the same
    _assert_same_curve(
        um.qini_curve(y, t, score, weights), sk.qini_curve(y[rows], score[rows], t[rows])
    )
    _assert_same_curve(
        um.uplift_curve(y, t, score, weights), sk.uplift_curve(y[rows], score[rows], t[rows])
    )
    assert ours.qini_coefficient == pytest.approx(
        sk.qini_auc_score(y[rows], score[rows], t[rows]), abs=TOL
    )
    assert ours.uplift_auc == pytest.approx(
        sk.uplift_auc_score(y[rows], score[rows], t[rows]), abs=TOL
    )
    assert ours.size == rows.size
    assert ours.treated == t[rows].sum()


def test_curves_of_a_continuous_outcome_by_hand() -> None:
    # given spend-like outcomes, by decreasing score: treated 3, control 0, treated 1, control 2
    y, t, score = [3.0, 0.0, 1.0, 2.0], [1, 0, 1, 0], [4.0, 3.0, 2.0, 1.0]
    # when the curves are computed
    qini = um.qini_curve(y, t, score)
    uplift = um.uplift_curve(y, t, score)
    scores = um.uplift_scores(y, t, score)
    # then Qini = Y_t - Y_c N_t / N_c and uplift = (Y_t / N_t - Y_c / N_c) N, from (0, 0)
    np.testing.assert_allclose(qini[0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(qini[1], [0, 3, 3, 4, 2])
    np.testing.assert_allclose(uplift[1], [0, 3, 6, 6, 4])
    assert scores.qini_area == pytest.approx(11.0)
    assert scores.qini_area_random == pytest.approx(4.0)
    assert scores.uplift_area == pytest.approx(1.5 + 4.5 + 6 + 5)
    # and the normalised scores, defined for a 0/1 outcome only, are left out
    assert scores.qini_coefficient is None
    assert scores.uplift_auc is None
    with pytest.raises(ValueError, match="binary"):
        um.qini_auc_score(y, t, score)


@pytest.mark.parametrize(
    ("y", "t", "score", "match"),
    [
        ([1, 0, 1], [1, 0, 2], [0.1, 0.2, 0.3], "treatment"),
        ([1, 0, 1], [1, 0], [0.1, 0.2, 0.3], "lengths differ"),
        ([1, 0, 1], [1, 0, 1], [0.1, np.nan, 0.3], "score"),
        ([1, 0, 1], [1, 1, 1], [0.1, 0.2, 0.3], "both treated and control"),
        ([], [], [], "no rows"),
    ],
)
def test_invalid_input_is_refused(y: list, t: list, score: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        um.uplift_scores(y, t, score)


def test_negative_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="weights"):
        um.qini_curve([1, 0], [1, 0], [0.5, 0.1], weights=[1.0, -1.0])


# ------------------------------------------------------------------ rate levels against 0 %


def _levels_data() -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Rows at rates 0, 2 % and 5 %; a score per level for every row."""
    rng = np.random.default_rng(11)
    n = 3000
    rate = rng.choice([0.0, 0.02, 0.05], n)
    effect = rng.random(n)
    y = rng.binomial(1, 0.1 + effect * rate * 4)
    uplift = {
        0.02: effect * 0.08 + rng.normal(0, 0.05, n),
        0.05: effect * 0.2 + rng.normal(0, 0.05, n),
    }
    return y, rate, uplift


def test_each_level_is_scored_against_the_control_rows() -> None:
    # given outcomes at three rates and a predicted uplift of each level over 0
    y, rate, uplift = _levels_data()
    weights = np.random.default_rng(1).uniform(0.5, 2.0, y.size)
    # when the levels are scored
    by_level = um.qini_by_level(y, rate, uplift, weights)
    # then each level is the binary case on its rows and the control rows, treatment = level
    assert list(by_level) == [0.02, 0.05]
    for level, scores in by_level.items():
        keep = (rate == 0) | (rate == level)
        expected = um.uplift_scores(
            y[keep], rate[keep] == level, uplift[level][keep], weights[keep]
        )
        assert scores == expected
        assert scores.qini_coefficient is not None
        assert scores.qini_coefficient > 0.05


def test_levels_match_scikit_uplift_without_weights() -> None:
    # given the same data, unweighted
    y, rate, uplift = _levels_data()
    by_level = um.qini_by_level(y, rate, uplift)
    for level, scores in by_level.items():
        keep = (rate == 0) | (rate == level)
        t = (rate[keep] == level).astype(int)
        # then each level's coefficient is scikit-uplift's on those rows
        assert scores.qini_coefficient == pytest.approx(
            sk.qini_auc_score(y[keep], uplift[level][keep], t), abs=TOL
        )
        assert scores.uplift_auc == pytest.approx(
            sk.uplift_auc_score(y[keep], uplift[level][keep], t), abs=TOL
        )


@pytest.mark.parametrize(
    ("uplift", "match"),
    [
        ({0.0: np.zeros(3000)}, "not above the control"),
        ({0.03: np.zeros(3000)}, "no row at level 0.03"),
        ({0.02: np.zeros(10)}, "10 scores for 3000 rows"),
    ],
)
def test_bad_levels_are_refused(uplift: dict[float, np.ndarray], match: str) -> None:
    y, rate, _ = _levels_data()
    with pytest.raises(ValueError, match=match):
        um.qini_by_level(y, rate, uplift)
