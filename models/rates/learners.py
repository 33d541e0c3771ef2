"""Response and uplift learners over a numeric treatment: the cashback rate (0 = control).

- `SLearner`: one LightGBM model of y on [features, rate]; the rate column can be held to a
  monotone increasing effect (more cashback never predicts less response), which also lets
  the model interpolate between the rates it saw.
- `BaselineSLearner`: an S-learner boosted from a cross-fitted baseline of y on the features
  alone, its rate trees fitted on propensity-balanced resamples of the exposures (the one the
  rate policy uses: see its docstring for why).
- `TLearner`: one LightGBM model per rate level seen in training; predicts those levels only.
- `DRLearner`: doubly robust uplift of each level over 0 from cross-fitted outcome models
  and the logged propensities (right if either is).

All follow the scikit-learn estimator contract (parameters stored as given by `__init__`,
fitted attributes ending in `_`, `fit` returning self) and take `sample_weight` (e.g. inverse
logged propensities). A binary treatment is the special case of the rates {0, 1}.
`fit(X, rate, y)` takes the rate where `predict(X, rate)` does (scikit-uplift's
`fit(X, y, treatment)` puts it last). `predict(X, rate)` is E[y | x, rate],
`predict_grid(X, grid)` the (rows, rates) matrix and `uplift(X, rate, base)` the difference
of two predictions.
"""

from __future__ import annotations

from typing import Any, Self

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

FloatArray = npt.NDArray[np.float64]
OBJECTIVES = ("regression", "tweedie", "binary")
# Rates come from a grid: a tolerance keeps 0.1 + 0.2-style rounding matching its level.
LEVEL_ATOL = 1e-9
GRID_CHUNK_PAIRS = 262_144  # (row, rate) pairs per booster call: bounds the memory of a grid


def _features(X: npt.ArrayLike) -> FloatArray:  # noqa: N803 - scikit-learn's name
    """Features as a 2-D float array (NaN allowed: LightGBM routes missing values)."""
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X: expected a 2-D array, got shape {x.shape}")
    if np.any(np.isinf(x)):
        raise ValueError("X: contains infinite values")
    return x


def _vector(name: str, values: npt.ArrayLike, rows: int) -> FloatArray:
    """A finite 1-D float array of `rows` values; a scalar is repeated for every row."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(rows, float(array))
    if array.shape != (rows,):
        raise ValueError(f"{name}: expected a scalar or {rows} values, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _weights(sample_weight: npt.ArrayLike | None, rows: int) -> FloatArray | None:
    """Checked non-negative sample weights, or None."""
    if sample_weight is None:
        return None
    w = _vector("sample_weight", sample_weight, rows)
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("sample_weight: must be non-negative with a positive total")
    return w


def _level_index(levels: FloatArray, rate: FloatArray) -> npt.NDArray[np.intp]:
    """Index in `levels` (increasing) of each rate; a ValueError for a rate not among them."""
    index = np.clip(np.searchsorted(levels, rate), 0, levels.size - 1)
    # The nearest level is either at the insertion point or just before it.
    below = np.clip(index - 1, 0, None)
    closer = np.abs(levels[below] - rate) < np.abs(levels[index] - rate)
    index = np.where(closer, below, index)
    unknown = np.abs(levels[index] - rate) > LEVEL_ATOL
    if np.any(unknown):
        raise ValueError(
            f"rate: {np.unique(rate[unknown]).tolist()} not among the fitted levels "
            f"{levels.tolist()}"
        )
    return index


class _RateLearner(BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """What the learners share: LightGBM parameters, input checks, grid and uplift."""

    n_features_in_: int

    def __init__(
        self,
        *,
        objective: str = "regression",
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        n_estimators: int = 300,
        min_child_samples: int = 20,
        reg_lambda: float = 0.0,
        tweedie_variance_power: float = 1.5,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        self.objective = objective
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.tweedie_variance_power = tweedie_variance_power
        self.seed = seed
        self.num_threads = num_threads

    def _params(self) -> dict[str, Any]:
        """LightGBM parameters (checked here, not in __init__, as scikit-learn asks)."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        params: dict[str, Any] = {
            "objective": self.objective,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.reg_lambda,
            "seed": self.seed,
            "num_threads": self.num_threads,
            # Same data and seed give the same model, whatever the machine's load.
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        if self.objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return params

    def _train(
        self, x: FloatArray, y: FloatArray, w: FloatArray | None, params: dict[str, Any]
    ) -> lgb.Booster:
        """One booster on (x, y, weights)."""
        return lgb.train(params, lgb.Dataset(x, y, weight=w), num_boost_round=self.n_estimators)

    def _checked_fit_input(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray | None]:
        """Validated (x, rate, y, weights) for fit."""
        x = _features(X)
        rows = x.shape[0]
        if rows == 0:
            raise ValueError("X: no rows")
        y_ = _vector("y", y, rows)
        r = _vector("rate", rate, rows)
        if np.any(r < 0):
            raise ValueError("rate: must not be negative (0 is the control level)")
        return x, r, y_, _weights(sample_weight, rows)

    def _checked_predict_input(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
    ) -> FloatArray:
        """Features of the width the model was fitted on."""
        check_is_fitted(self)
        x = _features(X)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X: {x.shape[1]} features, the model was fitted on {self.n_features_in_}"
            )
        return x

    def _predict_checked(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """E[y | x, rate] on checked input (one rate per row)."""
        raise NotImplementedError

    def predict(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
    ) -> FloatArray:
        """Expected outcome E[y | x, rate] (a probability for the binary objective).

        Args:
            X: features, (rows, features) as in fit.
            rate: one rate for every row, or one rate per row.

        Returns:
            One prediction per row.

        Raises:
            NotFittedError: before fit.
            ValueError: invalid input, or (T-learner) a rate it was not fitted on.
        """
        x = self._checked_predict_input(X)
        return self._predict_checked(x, _vector("rate", rate, x.shape[0]))

    def predict_grid(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        grid: npt.ArrayLike,
    ) -> FloatArray:
        """Expected outcome of every row at every rate of a grid.

        Args:
            X: features, (rows, features).
            grid: the rates, 1-D.

        Returns:
            (rows, len(grid)) predictions; column j is `predict(X, grid[j])`.

        Raises:
            NotFittedError: before fit.
            ValueError: invalid input, or (T-learner) a rate it was not fitted on.
        """
        x = self._checked_predict_input(X)
        rates = np.asarray(grid, dtype=np.float64)
        if rates.ndim != 1:
            raise ValueError(f"grid: expected a 1-D array, got shape {rates.shape}")
        columns = [self._predict_checked(x, np.full(x.shape[0], r)) for r in rates]
        return np.column_stack(columns) if columns else np.empty((x.shape[0], 0))

    def uplift(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        base: float = 0.0,
    ) -> FloatArray:
        """Predicted effect of `rate` over `base`: predict(X, rate) - predict(X, base).

        Args:
            X: features, (rows, features).
            rate: one rate for every row, or one rate per row.
            base: the reference rate (default the control, 0).

        Returns:
            One uplift per row.

        Raises:
            NotFittedError: before fit.
            ValueError: invalid input, or (T-learner) a rate it was not fitted on.
        """
        x = self._checked_predict_input(X)
        rows = x.shape[0]
        treated = self._predict_checked(x, _vector("rate", rate, rows))
        return treated - self._predict_checked(x, _vector("base", base, rows))


class SLearner(_RateLearner):
    """One LightGBM model of y on [features, rate] (the "single model" learner).

    Args:
        monotone: constrain the prediction to be non-decreasing in the rate.
        objective: "regression" (squared error), "tweedie" (non-negative spend-like
            outcomes, log link) or "binary" (a 0/1 outcome; predictions are probabilities).
        num_leaves: leaves per tree.
        learning_rate: shrinkage.
        n_estimators: boosting rounds.
        min_child_samples: fewest rows in a leaf.
        reg_lambda: L2 penalty on leaf values.
        tweedie_variance_power: for the tweedie objective, in (1, 2).
        seed: random seed (the fit is deterministic given it).
        num_threads: LightGBM threads.

    Attributes:
        booster_: the fitted LightGBM booster; its last feature is the rate.
        n_features_in_: number of features (the rate excluded).
        rates_: the distinct rates seen in training.
    """

    booster_: lgb.Booster
    rates_: FloatArray

    def __init__(
        self,
        *,
        monotone: bool = True,
        objective: str = "regression",
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        n_estimators: int = 300,
        min_child_samples: int = 20,
        reg_lambda: float = 0.0,
        tweedie_variance_power: float = 1.5,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        super().__init__(
            objective=objective,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            reg_lambda=reg_lambda,
            tweedie_variance_power=tweedie_variance_power,
            seed=seed,
            num_threads=num_threads,
        )
        self.monotone = monotone

    def fit(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit the model on features, outcome and the rate each row was given.

        Args:
            X: features, (rows, features).
            rate: the rate each row was given (0 = control).
            y: outcome per row (0/1 for the binary objective, non-negative for tweedie).
            sample_weight: optional non-negative weight per row.

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input or parameters (naming them).
        """
        x, r, y_, w = self._checked_fit_input(X, rate, y, sample_weight)
        params = self._params()
        width = x.shape[1]
        if self.monotone:
            params["monotone_constraints"] = [0] * width + [1]
            # "intermediate" constrains less than "basic" (better fits), still exactly monotone.
            params["monotone_constraints_method"] = "intermediate"
        self.booster_ = self._train(np.column_stack([x, r]), y_, w, params)
        self.n_features_in_ = width
        self.rates_ = np.unique(r)
        return self

    def _predict_checked(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """The booster on [x, rate]."""
        return np.asarray(self.booster_.predict(np.column_stack([x, rate])), dtype=np.float64)


def _link(objective: str, raw: FloatArray) -> FloatArray:
    """LightGBM's inverse link: raw scores to predictions."""
    if objective == "tweedie":
        return np.asarray(np.exp(raw), dtype=np.float64)
    if objective == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-raw)), dtype=np.float64)
    return raw


class BaselineSLearner(_RateLearner):
    """An S-learner whose rate trees start from a baseline of the outcome without the rate.

    A plain S-learner spends most of its splits on who buys much (the baseline, far larger
    than any rate effect) and shrinks the rate effect towards zero. Here, in two stages:
    1. baseline: LightGBM of y on the features alone, cross-fitted (`n_folds`): each row's
       baseline comes from the models that did not see it;
    2. effect: LightGBM of y on [features, rate] boosted from each row's baseline (its raw
       score as the initial score), monotone increasing in the rate, with small trees
       (`effect_num_leaves`, `effect_min_child_samples`): its trees only have the rate's
       effect and what the baseline missed left to learn.
    The effect stage is fitted on propensity-balanced resamples: each row is kept with
    probability min(p) / p, so that every kept row is as if logged by uniform randomization
    over the rates (rejection sampling; needs every rate to have probability at least min(p)
    in every context, which exploration gives). That removes the confounding of a logging
    policy that gives some customers mostly one rate, without the 1 / p weights whose spread
    makes trees noisy. `resamples` such draws are averaged (in raw score) to use more rows.
    Predictions: link(mean baseline raw score + mean effect raw score).

    Args:
        monotone: constrain the prediction to be non-decreasing in the rate.
        objective, num_leaves, learning_rate, n_estimators, min_child_samples, reg_lambda,
            tweedie_variance_power, seed, num_threads: as `SLearner`; they configure the
            baseline models.
        effect_num_leaves: leaves per tree of the effect stage.
        effect_min_child_samples: fewest rows in a leaf of the effect stage.
        effect_n_estimators: boosting rounds of the effect stage.
        n_folds: folds of the baseline's cross-fitting (at least 2).
        resamples: propensity-balanced resamples of the effect stage (at least 1).

    Attributes:
        baselines_: the baseline boosters, one per fold.
        effects_: the effect boosters, one per resample; their last feature is the rate.
        n_features_in_: number of features (the rate excluded).
        rates_: the distinct rates seen in training.
        kept_: rows kept per resample.
    """

    baselines_: list[lgb.Booster]
    effects_: list[lgb.Booster]
    rates_: FloatArray
    kept_: list[int]

    def __init__(
        self,
        *,
        monotone: bool = True,
        objective: str = "regression",
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        n_estimators: int = 300,
        min_child_samples: int = 20,
        reg_lambda: float = 0.0,
        tweedie_variance_power: float = 1.5,
        effect_num_leaves: int = 7,
        effect_min_child_samples: int = 500,
        effect_n_estimators: int = 600,
        n_folds: int = 2,
        resamples: int = 3,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        super().__init__(
            objective=objective,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            reg_lambda=reg_lambda,
            tweedie_variance_power=tweedie_variance_power,
            seed=seed,
            num_threads=num_threads,
        )
        self.monotone = monotone
        self.effect_num_leaves = effect_num_leaves
        self.effect_min_child_samples = effect_min_child_samples
        self.effect_n_estimators = effect_n_estimators
        self.n_folds = n_folds
        self.resamples = resamples

    def fit(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
        propensity: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit the cross-fitted baseline, then the effect stage on balanced resamples.

        Args:
            X: features, (rows, features).
            rate: the rate each row was given (0 = control).
            y: outcome per row (0/1 for the binary objective, non-negative for tweedie).
            sample_weight: optional non-negative weight per row (not the propensities).
            propensity: probability that the logging policy gave each row its rate; None
                when the rates were assigned uniformly at random (every row is kept).

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input or parameters (naming them).
        """
        x, r, y_, w = self._checked_fit_input(X, rate, y, sample_weight)
        if self.n_folds < 2:
            raise ValueError(f"n_folds: expected at least 2, got {self.n_folds}")
        if self.resamples < 1:
            raise ValueError(f"resamples: expected at least 1, got {self.resamples}")
        keep_probability = self._keep_probability(propensity, x.shape[0])
        params = self._params()
        folds = np.random.default_rng(self.seed).permutation(x.shape[0]) % self.n_folds
        baseline = np.empty(x.shape[0])
        self.baselines_ = []
        for fold in range(self.n_folds):
            held_out = folds == fold
            booster = self._train(x[~held_out], y_[~held_out], _subset(w, ~held_out), params)
            baseline[held_out] = booster.predict(x[held_out], raw_score=True)
            self.baselines_.append(booster)
        effect_params = self._effect_params(x.shape[1])
        xr = np.column_stack([x, r])
        self.effects_, self.kept_ = [], []
        for draw in range(self.resamples):
            rng = np.random.default_rng([self.seed, draw])
            kept = rng.random(x.shape[0]) < keep_probability
            data = lgb.Dataset(
                xr[kept], y_[kept], weight=_subset(w, kept), init_score=baseline[kept]
            )
            self.effects_.append(
                lgb.train(
                    {**effect_params, "seed": self.seed + draw},
                    data,
                    num_boost_round=self.effect_n_estimators,
                )
            )
            self.kept_.append(int(kept.sum()))
        self.n_features_in_ = x.shape[1]
        self.rates_ = np.unique(r)
        return self

    @staticmethod
    def _keep_probability(propensity: npt.ArrayLike | None, rows: int) -> FloatArray:
        """min(p) / p per row (1 without propensities)."""
        if propensity is None:
            return np.ones(rows)
        p = _vector("propensity", propensity, rows)
        if np.any((p <= 0) | (p > 1)):
            raise ValueError("propensity: expected values in (0, 1]")
        return np.asarray(p.min() / p, dtype=np.float64)

    def _effect_params(self, width: int) -> dict[str, Any]:
        """The effect stage's LightGBM parameters."""
        params = {
            **self._params(),
            "num_leaves": self.effect_num_leaves,
            "min_data_in_leaf": self.effect_min_child_samples,
        }
        if self.monotone:
            params["monotone_constraints"] = [0] * width + [1]
            params["monotone_constraints_method"] = "intermediate"
        return params

    def _predict_checked(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """link(mean baseline raw score + mean effect raw score) on [x, rate]."""
        baseline = np.mean([b.predict(x, raw_score=True) for b in self.baselines_], axis=0)
        xr = np.column_stack([x, rate])
        effect = np.mean([b.predict(xr, raw_score=True) for b in self.effects_], axis=0)
        return _link(self.objective, np.asarray(baseline + effect, dtype=np.float64))

    def predict_grid(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        grid: npt.ArrayLike,
    ) -> FloatArray:
        """Expected outcome of every row at every rate of a grid (see the base class).

        The baseline does not depend on the rate: it is predicted once, and the effect trees
        read every (row, rate) pair in one call per booster, in chunks of rows. A request
        that prices one customer makes a few booster calls rather than a few per rate.
        """
        x = self._checked_predict_input(X)
        rates = np.asarray(grid, dtype=np.float64)
        if rates.ndim != 1:
            raise ValueError(f"grid: expected a 1-D array, got shape {rates.shape}")
        out = np.empty((x.shape[0], rates.size))
        step = max(1, GRID_CHUNK_PAIRS // max(rates.size, 1))
        for start in range(0, x.shape[0], step):
            out[start : start + step] = self._grid_chunk(x[start : start + step], rates)
        return out

    def _grid_chunk(self, x: FloatArray, rates: FloatArray) -> FloatArray:
        n, k = x.shape[0], rates.size
        baseline = np.mean([b.predict(x, raw_score=True) for b in self.baselines_], axis=0)
        pairs = np.column_stack([np.tile(x, (k, 1)), np.repeat(rates, n)])
        effect = np.mean([b.predict(pairs, raw_score=True) for b in self.effects_], axis=0)
        raw = np.tile(baseline, k) + effect
        return _link(self.objective, np.asarray(raw, dtype=np.float64)).reshape(k, n).T


def _subset(w: FloatArray | None, rows: npt.NDArray[np.bool_]) -> FloatArray | None:
    """The weights of some rows, or None."""
    return None if w is None else w[rows]


class TLearner(_RateLearner):
    """One LightGBM model per rate level seen in training (the "two models" learner).

    Predicts only at those levels: the per-level models share nothing, so nothing says what
    happens between them. Same parameters as `SLearner`, without `monotone`.

    Attributes:
        levels_: the rate levels, increasing.
        boosters_: one fitted booster per level, in the order of `levels_`.
        n_features_in_: number of features.
    """

    levels_: FloatArray
    boosters_: list[lgb.Booster]

    def fit(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit one model per distinct rate on the rows given that rate.

        Args:
            X: features, (rows, features).
            rate: the rate each row was given (0 = control).
            y: outcome per row.
            sample_weight: optional non-negative weight per row.

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input or parameters, or a level whose rows all weigh 0.
        """
        x, r, y_, w = self._checked_fit_input(X, rate, y, sample_weight)
        params = self._params()
        levels = np.unique(r)
        boosters = []
        for level in levels:
            rows = r == level
            level_w = _subset(w, rows)
            if level_w is not None and not np.any(level_w > 0):
                raise ValueError(f"sample_weight: every row at rate {level} weighs 0")
            boosters.append(self._train(x[rows], y_[rows], level_w, params))
        self.levels_ = levels
        self.boosters_ = boosters
        self.n_features_in_ = x.shape[1]
        return self

    def _predict_checked(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """Each row through the model of its rate."""
        index = _level_index(self.levels_, rate)
        out = np.empty(x.shape[0], dtype=np.float64)
        for i in np.unique(index):
            rows = index == i
            out[rows] = self.boosters_[i].predict(x[rows])
        return out


class DRLearner(_RateLearner):
    """Doubly robust learner of each rate level's uplift over the control (0).

    Outcome models (a `TLearner`) are fitted by cross-fitting: each row's predicted outcome
    at every level comes from models fitted on the other folds. For a level r > 0 and a row
    logged at rate a with propensity p (the probability that the logging policy gave it a):
        phi_r = mu_r(x) - mu_0(x) + [a = r] (y - mu_r(x)) / p - [a = 0] (y - mu_0(x)) / p,
    an unbiased estimate of the row's uplift if either the outcome models or the
    propensities are right; a LightGBM regression of phi_r on x is the uplift of r over 0.
    `predict` gives the outcome models' E[y | x, rate] (fitted on all rows), `uplift` the
    regressed effects. Same parameters as `TLearner`, plus `n_folds`.

    Attributes:
        levels_: the rate levels, increasing (0 among them).
        outcome_: the `TLearner` fitted on all rows.
        effects_: one booster per level above 0 (`levels_[1:]`): its uplift over 0.
        n_features_in_: number of features.
    """

    levels_: FloatArray
    outcome_: TLearner
    effects_: list[lgb.Booster]

    def __init__(
        self,
        *,
        n_folds: int = 2,
        objective: str = "regression",
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        n_estimators: int = 300,
        min_child_samples: int = 20,
        reg_lambda: float = 0.0,
        tweedie_variance_power: float = 1.5,
        seed: int = 0,
        num_threads: int = 2,
    ) -> None:
        super().__init__(
            objective=objective,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            reg_lambda=reg_lambda,
            tweedie_variance_power=tweedie_variance_power,
            seed=seed,
            num_threads=num_threads,
        )
        self.n_folds = n_folds

    def _outcome_model(self) -> TLearner:
        """A T-learner with this learner's parameters."""
        params = self.get_params()
        del params["n_folds"]
        return TLearner(**params)

    def _cross_fitted(
        self, x: FloatArray, r: FloatArray, y: FloatArray, w: FloatArray | None, levels: FloatArray
    ) -> FloatArray:
        """(rows, levels) outcome predictions, each row's from models fitted without it."""
        if self.n_folds < 2:
            raise ValueError(f"n_folds: expected at least 2, got {self.n_folds}")
        folds = np.random.default_rng(self.seed).permutation(x.shape[0]) % self.n_folds
        predicted = np.empty((x.shape[0], levels.size))
        for fold in range(self.n_folds):
            held_out = folds == fold
            train = ~held_out
            if np.unique(r[train]).size != levels.size:
                raise ValueError(f"rate: a level has no row outside fold {fold}; use fewer folds")
            model = self._outcome_model().fit(x[train], r[train], y[train], _subset(w, train))
            predicted[held_out] = model.predict_grid(x[held_out], levels)
        return predicted

    def fit(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
        propensity: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit the outcome models (cross-fitted) and one effect model per level above 0.

        Args:
            X: features, (rows, features).
            rate: the rate each row was given (0 = control; must be among them).
            y: outcome per row.
            sample_weight: optional non-negative weight per row (not the propensities:
                those go in `propensity`).
            propensity: probability that the logging policy gave each row its rate; by
                default each level's (weighted) share of rows, as in a randomized test.

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input or parameters, no control row, or propensities
                outside (0, 1].
        """
        x, r, y_, w = self._checked_fit_input(X, rate, y, sample_weight)
        levels = np.unique(r)
        if levels[0] != 0:
            raise ValueError("rate: no control row (rate 0) to measure uplift against")
        p = self._propensity(propensity, r, w, levels)
        mu = self._cross_fitted(x, r, y_, w, levels)
        logged = _level_index(levels, r)
        residual = (y_ - mu[np.arange(r.size), logged]) / p
        control = np.where(logged == 0, residual, 0.0)
        params = {**self._params(), "objective": "regression"}
        self.effects_ = [
            self._train(
                x, mu[:, k] - mu[:, 0] + np.where(logged == k, residual, 0.0) - control, w, params
            )
            for k in range(1, levels.size)
        ]
        self.outcome_ = self._outcome_model().fit(x, r, y_, w)
        self.levels_ = levels
        self.n_features_in_ = x.shape[1]
        return self

    @staticmethod
    def _propensity(
        propensity: npt.ArrayLike | None, r: FloatArray, w: FloatArray | None, levels: FloatArray
    ) -> FloatArray:
        """Checked propensities, or each level's share of the (weighted) rows."""
        if propensity is not None:
            p = _vector("propensity", propensity, r.size)
            if np.any((p <= 0) | (p > 1)):
                raise ValueError("propensity: expected values in (0, 1]")
            return p
        weight = np.ones_like(r) if w is None else w
        logged = _level_index(levels, r)
        share: FloatArray = np.bincount(logged, weights=weight) / weight.sum()
        return share[logged]

    def _predict_checked(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """The outcome models at each row's rate."""
        return self.outcome_._predict_checked(x, rate)

    def uplift(
        self,
        X: npt.ArrayLike,  # noqa: N803 - scikit-learn's name
        rate: npt.ArrayLike,
        base: float = 0.0,
    ) -> FloatArray:
        """Uplift of `rate` over `base` from the effect models (tau_rate - tau_base, tau_0 = 0).

        Args:
            X: features, (rows, features).
            rate: one fitted level for every row, or one per row.
            base: the reference level (default the control, 0).

        Returns:
            One uplift per row.

        Raises:
            NotFittedError: before fit.
            ValueError: invalid input, or a rate that is not a fitted level.
        """
        x = self._checked_predict_input(X)
        rows = x.shape[0]
        return self._effect(x, _vector("rate", rate, rows)) - self._effect(
            x, _vector("base", base, rows)
        )

    def _effect(self, x: FloatArray, rate: FloatArray) -> FloatArray:
        """Each row's uplift of its rate over 0 (0 at the control level)."""
        index = _level_index(self.levels_, rate)
        out = np.zeros(x.shape[0], dtype=np.float64)
        for k in np.unique(index[index > 0]):
            rows = index == k
            out[rows] = self.effects_[k - 1].predict(x[rows])
        return out
