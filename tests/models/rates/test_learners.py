"""S-, baseline S-, T- and DR-learners on worlds with a known heterogeneous effect of the rate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.rates import learners
from models.rates.learners import BaselineSLearner, DRLearner, SLearner, TLearner
from models.rates.uplift_metrics import qini_by_level

GRID = np.array([0.0, 0.02, 0.05, 0.1])
# One thread: `make pytest` runs two test processes on two cores, and LightGBM's threads
# slow down many times over when they have to share cores.
SMALL = {"n_estimators": 200, "num_leaves": 15, "num_threads": 1}
# the baseline S-learner's effect stage, small too
EFFECT = {"effect_n_estimators": 200, "effect_min_child_samples": 50, "resamples": 2}
Learner = type[SLearner] | type[BaselineSLearner] | type[TLearner] | type[DRLearner]


def _small(learner: Learner) -> dict[str, object]:
    """Small-model parameters for a learner class."""
    return {**SMALL, **EFFECT} if learner is BaselineSLearner else dict(SMALL)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _world(
    n: int, seed: int, *, binary: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Features, randomized rates, outcome and the true uplift of each level over 0.

    The effect grows with the rate and with the first feature (0.5 to 2.5 per 10 points of
    rate); the second and third features move the baseline only.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    rate = rng.choice(GRID, n)
    effect = 0.5 + 2.0 * x[:, 0]
    base = 2.0 * x[:, 1] + x[:, 2]
    if binary:
        logit = -2.0 + base
        y = rng.binomial(1, _sigmoid(logit + effect * rate * 10)).astype(float)
        truth = {r: _sigmoid(logit + effect * r * 10) - _sigmoid(logit) for r in GRID[1:]}
    else:
        y = base + effect * rate * 10 + rng.normal(0.0, 0.5, n)
        truth = {r: effect * r * 10 for r in GRID[1:]}
    return x, rate, y, {float(r): v for r, v in truth.items()}


def _qini_gain(y: np.ndarray, rate: np.ndarray, uplift: dict[float, np.ndarray]) -> np.ndarray:
    """Qini area above the random line per row, at each level (a continuous outcome)."""
    scores = qini_by_level(y, rate, uplift)
    return np.array([(s.qini_area - s.qini_area_random) / s.size for s in scores.values()])


@pytest.mark.parametrize(
    ("learner", "min_correlation"),
    [
        (SLearner, (0.8, 0.9, 0.95)),
        (BaselineSLearner, (0.8, 0.9, 0.95)),
        (TLearner, (0.4, 0.75, 0.9)),
        (DRLearner, (0.4, 0.75, 0.9)),
    ],
)
def test_learners_recover_the_ranking_of_the_effect(
    learner: Learner, min_correlation: tuple[float, ...]
) -> None:
    # given a world where the effect of the rate depends on the first feature
    x, rate, y, _ = _world(8000, 1, binary=False)
    x_test, rate_test, y_test, truth = _world(4000, 2, binary=False)
    # when the learner is fitted and predicts each level's uplift on new rows
    model = learner(**_small(learner)).fit(x, rate, y)
    uplift = {r: model.uplift(x_test, r) for r in truth}
    # then the predicted uplift follows the true one (closer at larger rates: more signal)
    for r, floor in zip(truth, min_correlation, strict=True):
        assert np.corrcoef(uplift[r], truth[r])[0, 1] > floor
    # and its Qini gain at each level is most of the true uplift's, far above a random score's
    random = np.random.default_rng(3).random(y_test.size)
    gain = _qini_gain(y_test, rate_test, uplift)
    oracle = _qini_gain(y_test, rate_test, truth)
    chance = _qini_gain(y_test, rate_test, dict.fromkeys(truth, random))
    assert np.all(gain[1:] > 0.7 * oracle[1:])
    assert np.all(gain > chance + 0.3 * oracle)


@pytest.mark.parametrize("learner", [SLearner, TLearner])
def test_binary_outcome_qini_beats_a_random_score(learner: Learner) -> None:
    # given a 0/1 outcome whose probability rises with the rate, more for some rows
    x, rate, y, _ = _world(8000, 1, binary=True)
    x_test, rate_test, y_test, _ = _world(4000, 2, binary=True)
    # when fitted with the binary objective
    model = learner(objective="binary", **SMALL).fit(x, rate, y)
    predicted = model.predict_grid(x_test, GRID)
    # then predictions are probabilities
    assert np.all((predicted > 0) & (predicted < 1))
    # and the Qini coefficient at the top rate beats a random score's by a margin
    top = float(GRID[-1])
    ours = qini_by_level(y_test, rate_test, {top: predicted[:, -1] - predicted[:, 0]})[top]
    random = np.random.default_rng(3).random(y_test.size)
    chance = qini_by_level(y_test, rate_test, {top: random})[top]
    assert ours.qini_coefficient is not None
    assert chance.qini_coefficient is not None
    assert ours.qini_coefficient > chance.qini_coefficient + 0.04


@pytest.mark.parametrize("learner", [SLearner, BaselineSLearner])
@pytest.mark.parametrize("binary", [False, True])
def test_s_learner_is_non_decreasing_in_the_rate_for_every_row(
    binary: bool, learner: type[SLearner] | type[BaselineSLearner]
) -> None:
    # given noisy data (a free model wiggles in the rate) and a fine grid beyond the levels
    x, rate, y, _ = _world(8000, 1, binary=binary)
    x_test = np.random.default_rng(5).random((3000, 4))
    fine = np.linspace(0.0, 0.15, 31)
    objective = "binary" if binary else "regression"
    # when fitted with and without the monotone constraint
    params = _small(learner)
    monotone = learner(objective=objective, **params).fit(x, rate, y).predict_grid(x_test, fine)
    free = learner(objective=objective, monotone=False, **params).fit(x, rate, y)
    # then the constrained predictions never decrease along the rate, for any row
    assert np.all(np.diff(monotone, axis=1) >= 0)
    # while the plain free model's do somewhere (so the check above has teeth; the baseline
    # learner's small rate trees happen not to wiggle on this world even when free)
    if learner is SLearner:
        assert np.any(np.diff(free.predict_grid(x_test, fine), axis=1) < 0)


def _discrete_world(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two 3-valued features, randomized rates, weights 3 on positive noise, 1 otherwise.

    With few distinct values every cell holds many rows, so LightGBM bins weighted and
    repeated rows the same way.
    """
    rng = np.random.default_rng(seed)
    n = 4000
    x = rng.integers(0, 3, (n, 2)).astype(float)
    rate = rng.choice(GRID, n)
    noise = rng.normal(0.0, 0.5, n)
    y = x[:, 0] + 0.5 * x[:, 1] + (1 + x[:, 0]) * rate * 10 + noise
    weight = np.where(noise > 0, 3, 1)
    return x, rate, y, weight


CELLS = np.array([[a, b] for a in range(3) for b in range(3)], dtype=float)


@pytest.mark.parametrize("learner", [SLearner, TLearner])
def test_weighting_equals_repeating_rows(learner: Learner) -> None:
    # given integer weights
    x, rate, y, weight = _discrete_world(1)
    rows = np.repeat(np.arange(y.size), weight)
    # when fitted with the weights, and on the rows repeated that many times
    weighted = learner(**SMALL).fit(x, rate, y, sample_weight=weight).predict_grid(CELLS, GRID)
    repeated = learner(**SMALL).fit(x[rows], rate[rows], y[rows]).predict_grid(CELLS, GRID)
    # then the predictions are the same (up to float summation order)
    np.testing.assert_allclose(weighted, repeated, rtol=0, atol=1e-6)


@pytest.mark.parametrize("learner", [SLearner, TLearner])
def test_weights_move_the_fit_to_the_weighted_means(learner: Learner) -> None:
    # given weights that favour rows with positive noise (the weighted mean is higher)
    x, rate, y, weight = _discrete_world(2)
    # when fitted with and without them
    weighted = learner(**SMALL).fit(x, rate, y, sample_weight=weight)
    plain = learner(**SMALL).fit(x, rate, y)
    # then each cell's prediction is close to its weighted mean, not to its plain mean
    for cell in CELLS:
        for r in GRID:
            rows = np.all(x == cell, axis=1) & (rate == r)
            weighted_mean = np.average(y[rows], weights=weight[rows])
            plain_mean = y[rows].mean()
            assert weighted_mean - plain_mean > 0.15
            assert weighted.predict(cell[None, :], r)[0] == pytest.approx(weighted_mean, abs=0.06)
            assert plain.predict(cell[None, :], r)[0] == pytest.approx(plain_mean, abs=0.06)


@pytest.mark.parametrize("learner", [SLearner, BaselineSLearner, TLearner, DRLearner])
def test_estimator_contract(learner: Learner) -> None:
    # given an estimator with non-default parameters
    model = learner(num_leaves=7, n_estimators=20, seed=3, num_threads=1)
    x, rate, y, _ = _world(600, 1, binary=False)
    # then clone copies the parameters and nothing fitted
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert copy.get_params()["num_threads"] == 1
    assert learner().get_params()["num_threads"] == 2
    # and predicting before fit raises scikit-learn's not-fitted error
    with pytest.raises(NotFittedError):
        copy.predict(x, 0.0)
    # and fit returns the estimator itself, with fitted attributes ending in "_"
    assert model.fit(x, rate, y) is model
    assert model.n_features_in_ == 4
    # and the same seed gives the same model (deterministic)
    again = clone(model).fit(x, rate, y)
    np.testing.assert_array_equal(again.predict_grid(x, GRID), model.predict_grid(x, GRID))


@pytest.mark.parametrize("learner", [SLearner, BaselineSLearner, TLearner])
def test_scalar_per_row_and_grid_predictions_agree(learner: Learner) -> None:
    # given a fitted learner
    x, rate, y, _ = _world(2000, 1, binary=False)
    model = learner(**_small(learner)).fit(x, rate, y)
    # when predicting at each row's own rate, at one rate, and on the grid
    grid = model.predict_grid(x, GRID)
    per_row = model.predict(x, rate)
    # then they agree, and uplift is the difference of two predictions
    assert grid.shape == (x.shape[0], GRID.size)
    column = np.searchsorted(GRID, rate)
    np.testing.assert_allclose(per_row, grid[np.arange(x.shape[0]), column])
    np.testing.assert_allclose(model.predict(x, 0.05), grid[:, 2])
    np.testing.assert_allclose(model.uplift(x, 0.1, base=0.02), grid[:, 3] - grid[:, 1])


def test_tweedie_predictions_are_positive() -> None:
    # given a non-negative, spend-like outcome with many zeros
    x, rate, y, _ = _world(3000, 1, binary=False)
    spend = np.where(y > 1.5, y, 0.0)
    # when fitted with the tweedie objective (log link)
    model = SLearner(objective="tweedie", **SMALL).fit(x, rate, spend)
    # then predictions are positive and follow the rate
    predicted = model.predict_grid(x, GRID)
    assert np.all(predicted > 0)
    assert np.all(np.diff(predicted, axis=1) >= 0)


def test_t_learner_refuses_rates_it_was_not_fitted_on() -> None:
    x, rate, y, _ = _world(2000, 1, binary=False)
    model = TLearner(**SMALL).fit(x, rate, y)
    # a level up to float rounding is accepted
    np.testing.assert_allclose(model.predict(x, 0.1 + 1e-12), model.predict(x, 0.1))
    with pytest.raises(ValueError, match=r"\[0.03\] not among the fitted levels"):
        model.predict(x, 0.03)
    with pytest.raises(ValueError, match="not among the fitted levels"):
        model.predict_grid(x, [0.0, 0.2])


@pytest.mark.parametrize(
    ("params", "fit_args", "match"),
    [
        ({"objective": "poisson"}, {}, "objective"),
        ({}, {"rate": -0.01}, "rate: must not be negative"),
        ({}, {"y": np.zeros(3)}, "y: expected a scalar or 100 values"),
        ({}, {"sample_weight": -np.ones(100)}, "sample_weight"),
        ({}, {"X": np.ones(100)}, "X: expected a 2-D array"),
    ],
)
def test_invalid_input_is_refused(params: dict, fit_args: dict, match: str) -> None:
    rng = np.random.default_rng(0)
    args = {"X": rng.random((100, 2)), "rate": rng.choice(GRID, 100), "y": rng.random(100)}
    with pytest.raises(ValueError, match=match):
        SLearner(**params).fit(**{**args, **fit_args})


def test_prediction_needs_the_fitted_width() -> None:
    x, rate, y, _ = _world(500, 1, binary=False)
    model = SLearner(n_estimators=10, num_threads=1).fit(x, rate, y)
    with pytest.raises(ValueError, match="3 features, the model was fitted on 4"):
        model.predict(x[:, :3], 0.0)


# ------------------------------------------------------------------ doubly robust learner


def _confounded_world(
    n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logged rates favouring the top rate for high-baseline rows, with their propensities.

    Returns features, rate, outcome, propensity of the logged rate and the true uplift of
    the top rate over 0.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    effect = 0.5 + 2.0 * x[:, 0]
    top = 0.1 + 0.6 * x[:, 1]  # the baseline rises with x1 too: a naive contrast is biased
    probabilities = np.column_stack([(1 - top) / 3] * 3 + [top])
    logged = (probabilities.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    rate = GRID[logged]
    y = 2.0 * x[:, 1] + x[:, 2] + effect * rate * 10 + rng.normal(0.0, 0.5, n)
    return x, rate, y, probabilities[np.arange(n), logged], effect * GRID[-1] * 10


def test_dr_learner_is_right_with_the_propensities_when_outcome_models_are_wrong() -> None:
    # given confounded logs and outcome models too weak to adjust for it (3 trees)
    x, rate, y, propensity, _ = _confounded_world(8000, 1)
    x_test, *_, truth = _confounded_world(4000, 2)
    weak = {"n_estimators": 3, "num_leaves": 15, "num_threads": 1}
    # when the DR learner gets the logged propensities, and when it and a T-learner do not
    dr = DRLearner(**weak).fit(x, rate, y, propensity=propensity).uplift(x_test, 0.1)
    blind = DRLearner(**weak).fit(x, rate, y).uplift(x_test, 0.1)
    naive = TLearner(**weak).fit(x, rate, y).uplift(x_test, 0.1)
    # then only the DR learner with propensities finds the mean effect of the top rate
    assert dr.mean() == pytest.approx(truth.mean(), abs=0.12)
    assert abs(blind.mean() - truth.mean()) > 0.25
    assert abs(naive.mean() - truth.mean()) > 0.25


def test_dr_learner_uplift_is_relative_to_the_base_level() -> None:
    # given a fitted DR learner
    x, rate, y, propensity, _ = _confounded_world(3000, 3)
    model = DRLearner(**SMALL).fit(x, rate, y, propensity=propensity)
    # then uplift over a base is the difference of the uplifts over 0, and 0 at the base
    np.testing.assert_allclose(
        model.uplift(x, 0.1, base=0.02), model.uplift(x, 0.1) - model.uplift(x, 0.02)
    )
    np.testing.assert_array_equal(model.uplift(x, 0.05, base=0.05), 0.0)
    # and predict gives the outcome models' expected outcome at each fitted level
    assert model.predict_grid(x, GRID).shape == (x.shape[0], GRID.size)
    with pytest.raises(ValueError, match="not among the fitted levels"):
        model.uplift(x, 0.03)


@pytest.mark.parametrize(
    ("rate_shift", "propensity", "n_folds", "match"),
    [
        (0.01, None, 2, "no control row"),
        (0.0, np.zeros(500), 2, r"propensity: expected values in \(0, 1\]"),
        (0.0, None, 1, "n_folds"),
    ],
)
def test_dr_learner_refuses_what_it_cannot_use(
    rate_shift: float, propensity: np.ndarray | None, n_folds: int, match: str
) -> None:
    x, rate, y, _ = _world(500, 1, binary=False)
    with pytest.raises(ValueError, match=match):
        DRLearner(n_folds=n_folds, n_estimators=5, num_threads=1).fit(
            x, rate + rate_shift, y, propensity=propensity
        )


# ------------------------------------------------------------------ baseline S-learner


def _spend_world(n: int, seed: int, top: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Spend-like outcomes: a baseline varying 20-fold, a multiplicative effect of the rate.

    Half the rows respond (x0 > 0.5: spend x (1 + 8 rate)), half do not. With `top`, the
    logging policy gives the top rate with that probability per row, else one of the others
    at random (a confounded log), and the rows' propensities come back too.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    baseline = np.exp(3.0 * x[:, 1])
    responds = x[:, 0] > 0.5
    if top is None:
        logged = rng.integers(0, GRID.size, n)
        propensity = np.full(n, 1.0 / GRID.size)
    else:
        probabilities = np.column_stack([(1 - top) / 3] * 3 + [top])
        logged = (probabilities.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
        propensity = probabilities[np.arange(n), logged]
    rate = GRID[logged]
    mean = baseline * np.where(responds, 1 + 8 * rate, 1.0)
    spend = rng.gamma(2.0, mean / 2.0)
    return {"x": x, "rate": rate, "y": spend, "propensity": propensity, "responds": responds}


def _relative_effect(model: SLearner | BaselineSLearner, x: np.ndarray) -> np.ndarray:
    """Predicted spend at the top rate over spend at 0, per row."""
    grid = model.predict_grid(x, GRID)
    return np.asarray(grid[:, -1] / grid[:, 0])


def test_baseline_s_learner_keeps_the_size_of_a_small_effect_under_a_large_baseline() -> None:
    # given spend whose baseline varies 20-fold while the rate adds at most 80 % for responders
    world, test = _spend_world(20_000, 1), _spend_world(4_000, 2)
    params = {"objective": "tweedie", **SMALL}
    # when a plain S-learner and the baseline S-learner are fitted
    plain = SLearner(**params).fit(world["x"], world["rate"], world["y"])
    staged = BaselineSLearner(**params, **EFFECT).fit(world["x"], world["rate"], world["y"])
    # then the baseline S-learner's effect for responders (truly x1.8) is closer to the truth
    responders, others = test["responds"], ~test["responds"]
    ours = _relative_effect(staged, test["x"])
    theirs = _relative_effect(plain, test["x"])
    assert abs(np.median(ours[responders]) - 1.8) < abs(np.median(theirs[responders]) - 1.8)
    assert np.median(ours[responders]) == pytest.approx(1.8, abs=0.2)
    # and it tells responders from the others (truly x1.0)
    assert np.median(ours[others]) < 1.2
    assert np.median(ours[responders]) - np.median(ours[others]) > 0.5


def test_baseline_s_learner_undoes_a_confounded_log_with_the_propensities() -> None:
    # given a log where the top rate goes mostly to big spenders (x1), with propensities
    world = _spend_world(20_000, 3, top=None)
    x = world["x"]
    top = 0.1 + 0.8 * (x[:, 1] > 0.5)
    world = _spend_world(20_000, 3, top=top)
    test = _spend_world(4_000, 4)
    params = {"objective": "tweedie", **SMALL, **EFFECT}
    # when fitted with the propensities
    model = BaselineSLearner(**params).fit(
        world["x"], world["rate"], world["y"], propensity=world["propensity"]
    )
    # then the effect stage saw about min(p) / p of the rows per resample
    expected = float(np.sum(world["propensity"].min() / world["propensity"]))
    assert model.kept_[0] == pytest.approx(expected, rel=0.05)
    # and the responders' effect is found at its true size, the others' near none
    effect = _relative_effect(model, test["x"])
    assert np.median(effect[test["responds"]]) == pytest.approx(1.8, abs=0.25)
    assert np.median(effect[~test["responds"]]) < 1.2


@pytest.mark.parametrize(
    ("params", "propensity", "match"),
    [
        ({"n_folds": 1}, None, "n_folds"),
        ({"resamples": 0}, None, "resamples"),
        ({}, np.zeros(500), r"propensity: expected values in \(0, 1\]"),
    ],
)
def test_baseline_s_learner_refuses_what_it_cannot_use(
    params: dict, propensity: np.ndarray | None, match: str
) -> None:
    x, rate, y, _ = _world(500, 1, binary=False)
    with pytest.raises(ValueError, match=match):
        BaselineSLearner(n_estimators=5, num_threads=1, **params).fit(
            x, rate, y, propensity=propensity
        )


def test_the_baseline_learners_grid_is_the_same_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fitted baseline S-learner and its grid predicted in one chunk
    x, rate, y, _ = _world(500, 2, binary=False)
    model = BaselineSLearner(**_small(BaselineSLearner)).fit(x, rate, y)
    whole = model.predict_grid(x, GRID)
    # when the chunks hold a few rows only (not a multiple of the row count)
    monkeypatch.setattr(learners, "GRID_CHUNK_PAIRS", 7 * GRID.size)
    chunked = model.predict_grid(x, GRID)
    # then nothing changes, and each column is the prediction at its rate
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(whole[:, 1], model.predict(x, GRID[1]))
