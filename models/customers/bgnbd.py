"""The BG/NBD model (Fader, Hardie & Lee 2005): purchases, P(alive) and the churn baseline.

Each customer buys at Poisson rate `lambda ~ Gamma(r, alpha)` (shape r, rate alpha) while
alive, and after every *repeat* purchase drops out for good with probability
`p ~ Beta(a, b)`. A customer is summarised by `x` (repeat purchases, the `frequency`),
`t_x` (time of the last purchase, the `recency`, 0 when x = 0) and `T` (age), all measured
from the customer's first purchase, in any one time unit (days, weeks).

Likelihood (FHL 2005 eq. 6), with `B` the beta function::

    L = B(a, b + x) / B(a, b) * G(r + x) alpha^r / (G(r) (alpha + T)^(r + x))
      + [x > 0] B(a + 1, b + x - 1) / B(a, b) * G(r + x) alpha^r / (G(r) (alpha + t_x)^(r + x))

Since `B(a + 1, b + x - 1) = B(a, b + x) a / (b + x - 1)`, its log is the first term's log
plus `softplus(d)`, `d = log(a / (b + x - 1)) + (r + x) log((alpha + T) / (alpha + t_x))`
(a log-sum-exp of the two terms; `d = -inf` when x = 0). `d` is also the log-odds that the
customer has dropped out: `P(alive | x, t_x, T) = expit(-d)`.

The churn score is `P(no purchase in (T, T + t] | x, t_x, T)`, not `1 - P(alive)`: given
alive, the posterior is `lambda ~ Gamma(r + x, alpha + T)` and `p ~ Beta(a, b + x)`,
independent; dropout happens only right after a purchase, so a customer alive at T makes
no purchase in (T, T + t] exactly when the first Poisson arrival comes after t, which has
posterior probability `((alpha + T) / (alpha + T + t))^(r + x)`. Hence::

    P(no purchase) = 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + t))^(r + x))

The conditional expected number of purchases in (T, T + t] (FHL 2005 eq. 10) is
`P(alive) * (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t))^(r + x)
* 2F1(r + x, b + x; a + b + x - 1; z))`, `z = t / (alpha + T + t)`. That hypergeometric
overflows for large x; Euler's transformation `2F1(A, B; C; z) = (1 - z)^(C - A - B)
2F1(C - A, C - B; C; z)` turns the product into `(1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1;
a + b + x - 1; z)`, bounded for every x, which is what is computed.

The fit maximizes the (optionally weighted) log-likelihood over the log-parameters with
L-BFGS-B and an analytic gradient. Terms that depend on x alone or on T alone are summed
once per distinct value, so only the repeat customers' `softplus(d)` is evaluated per row.

The helpers `as_float_array`, `maximize_log_likelihood` and `ConvergenceError` are shared
with `models.customers.gamma_gamma`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Self

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

FloatArray = npt.NDArray[np.float64]
Objective = Callable[[FloatArray], tuple[float, FloatArray]]

PARAMS = ("r", "alpha", "a", "b")
LOG_BOUND = 25.0  # log-parameters are kept in [-25, 25]; an optimum on the bound is refused
GRADIENT_TOLERANCE = 1e-6  # a line-search stop is accepted when the mean-ll gradient is this small
MICROSECONDS_PER_DAY = 86_400_000_000


class ConvergenceError(RuntimeError):
    """The maximum-likelihood fit did not reach an interior optimum."""


# --------------------------------------------------------------------------- input checks


def as_float_array(name: str, values: npt.ArrayLike) -> FloatArray:
    """Values as a finite, non-negative, 1-D float64 array.

    Args:
        name: the argument's name, for the error message.
        values: a scalar or a 1-D array-like (numpy array, list, polars Series).

    Returns:
        The values as float64, at least 1-D.

    Raises:
        ValueError: not 1-D, not finite, or negative.
    """
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    if np.any(array < 0):
        raise ValueError(f"{name} must be non-negative")
    return array


def check_customers(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - the model's T (age), as in the literature
    *,
    allow_empty: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated (x, t_x, T) arrays of equal length.

    Args:
        frequency: repeat purchases x (non-negative integers).
        recency: time of the last purchase t_x (0 when x = 0; > 0 when x > 0).
        T: age, time from the first purchase to the end of observation (>= t_x).
        allow_empty: accept zero customers.

    Returns:
        frequency, recency and T as float64 arrays.

    Raises:
        ValueError: naming the offending argument.
    """
    x = as_float_array("frequency", frequency)
    t_x = as_float_array("recency", recency)
    age = as_float_array("T", T)
    if not x.size == t_x.size == age.size:
        raise ValueError(
            f"frequency, recency and T must have one value per customer, got lengths "
            f"{x.size}, {t_x.size}, {age.size}"
        )
    if not allow_empty and x.size == 0:
        raise ValueError("frequency is empty: no customers to fit")
    if np.any(x != np.round(x)):
        raise ValueError("frequency must be whole numbers (repeat purchases)")
    if np.any(t_x > age):
        raise ValueError("recency must not exceed T (the last purchase is inside the age)")
    if np.any((x > 0) & (t_x == 0)):
        raise ValueError("recency must be > 0 for customers with frequency > 0")
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("recency must be 0 for customers with frequency 0")
    return x, t_x, age


def check_weights(weights: npt.ArrayLike | None, size: int) -> FloatArray:
    """Per-customer weights (counts of identical customers); ones when None.

    Raises:
        ValueError: wrong length, negative, not finite, or all zero.
    """
    if weights is None:
        return np.ones(size)
    w = as_float_array("weights", weights)
    if w.size != size:
        raise ValueError(f"weights must have one value per customer ({size}), got {w.size}")
    if not w.sum() > 0:
        raise ValueError("weights must not all be zero")
    return w


def check_horizon(t: npt.ArrayLike, size: int) -> FloatArray:
    """The prediction horizon t, broadcast to one value per customer.

    Raises:
        ValueError: negative, not finite, or a length other than 1 or `size`.
    """
    horizon = as_float_array("t", t)
    if horizon.size not in {1, size}:
        raise ValueError(f"t must be a scalar or have one value per customer ({size})")
    return np.broadcast_to(horizon, (size,))


def weighted_counts(index: npt.NDArray[np.intp], weights: FloatArray) -> FloatArray:
    """Sum of `weights` per distinct value, from `np.unique(..., return_inverse=True)`."""
    return np.bincount(index, weights=weights).astype(np.float64)


# --------------------------------------------------------------------------- optimization


def maximize_log_likelihood(
    mean_log_likelihood: Objective,
    start: Sequence[float],
    names: Sequence[str],
    *,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, int]:
    """Maximize a mean log-likelihood over positive parameters, on the log scale (L-BFGS-B).

    Args:
        mean_log_likelihood: parameters -> (mean log-likelihood, its gradient).
        start: starting parameters (positive).
        names: the parameters' names, for error messages.
        max_iter: L-BFGS-B iteration limit.
        tol: L-BFGS-B `ftol` and `gtol`.

    Returns:
        The maximizing parameters and the number of iterations.

    Raises:
        ConvergenceError: no convergence, a non-finite optimum, or a parameter on its bound.
    """

    def negative(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        value, gradient = mean_log_likelihood(params)
        return -value, -gradient * params

    result = minimize(
        negative,
        np.log(np.asarray(start, dtype=np.float64)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-LOG_BOUND, LOG_BOUND)] * len(start),
        options={"maxiter": max_iter, "ftol": tol, "gtol": tol},
    )
    _check_result(result.x, result.fun, result.jac, names, bool(result.success), result.message)
    return np.exp(result.x), int(result.nit)


def _check_result(
    log_params: FloatArray,
    value: float,
    gradient: FloatArray,
    names: Sequence[str],
    success: bool,
    message: str,
) -> None:
    """Refuse a non-finite, boundary or unconverged L-BFGS-B result."""
    if not (np.isfinite(value) and np.all(np.isfinite(log_params))):
        raise ConvergenceError("the log-likelihood is not finite at the optimum")
    on_bound = [n for n, v in zip(names, log_params, strict=True) if abs(v) >= LOG_BOUND - 1e-6]
    if on_bound:
        raise ConvergenceError(
            f"parameter(s) {', '.join(on_bound)} ran to 0 or infinity: the data do not identify "
            "them (e.g. no repeat purchases, or no sign of dropout)"
        )
    if not success and np.max(np.abs(gradient)) > GRADIENT_TOLERANCE:
        stopped = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, np.exp(log_params), strict=True))
        raise ConvergenceError(
            f"maximum likelihood did not converge ({message.strip()}), stopped at {stopped}"
        )


# --------------------------------------------------------------------------- likelihood


def _log_dropout_odds(
    params: Sequence[float], x: FloatArray, t_x: FloatArray, age: FloatArray
) -> FloatArray:
    """`d`: log-odds that the customer has dropped out by T (-inf when x = 0)."""
    r, alpha, a, b = params
    repeat = x > 0
    shifted = np.where(repeat, b + x - 1.0, 1.0)
    odds = np.log(a / shifted) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
    return np.where(repeat, odds, -np.inf)


def log_likelihood(
    params: Sequence[float],
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - the model's T (age)
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood (FHL 2005 eq. 6).

    Args:
        params: (r, alpha, a, b).
        frequency: repeat purchases x.
        recency: time of the last purchase t_x.
        T: age.

    Returns:
        `log L` per customer.
    """
    x, t_x, age = check_customers(frequency, recency, T)
    r, alpha, a, b = params
    shared = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + age)
    total = shared + alive + np.logaddexp(0.0, _log_dropout_odds(params, x, t_x, age))
    return np.asarray(total, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Sufficient:
    """The data as the fit reads it: per-distinct-value sums, and the repeat customers."""

    total: float  # sum of weights
    x_values: FloatArray  # distinct frequencies
    x_weights: FloatArray  # weight per distinct frequency
    age_values: FloatArray  # distinct ages T
    age_weights: FloatArray  # weight per distinct T
    age_x_weights: FloatArray  # sum of weight * x per distinct T
    x: FloatArray  # repeat customers (x > 0) only, from here on
    t_x: FloatArray
    age: FloatArray
    w: FloatArray

    @classmethod
    def build(cls, x: FloatArray, t_x: FloatArray, age: FloatArray, w: FloatArray) -> Self:
        """Sums by distinct x and T; rows of repeat customers with positive weight."""
        x_values, x_index = np.unique(x, return_inverse=True)
        age_values, age_index = np.unique(age, return_inverse=True)
        keep = (x > 0) & (w > 0)
        return cls(
            total=float(w.sum()),
            x_values=x_values,
            x_weights=weighted_counts(x_index, w),
            age_values=age_values,
            age_weights=weighted_counts(age_index, w),
            age_x_weights=weighted_counts(age_index, w * x),
            x=x[keep],
            t_x=t_x[keep],
            age=age[keep],
            w=w[keep],
        )


def _frequency_terms(params: FloatArray, s: _Sufficient) -> tuple[float, FloatArray]:
    """Terms of x alone: log G(r+x)/G(r) + log B(a, b+x)/B(a, b) + r log alpha."""
    r, alpha, a, b = params
    u, wu, n = s.x_values, s.x_weights, s.total
    value = _dot(wu, gammaln(r + u) + gammaln(b + u) - gammaln(a + b + u))
    value += n * (r * np.log(alpha) - gammaln(r) - gammaln(b) + gammaln(a + b))
    psi_abu = _dot(wu, digamma(a + b + u))
    gradient = np.array(
        [
            _dot(wu, digamma(r + u)) + n * (np.log(alpha) - digamma(r)),
            n * r / alpha,
            n * digamma(a + b) - psi_abu,
            _dot(wu, digamma(b + u)) - psi_abu + n * (digamma(a + b) - digamma(b)),
        ]
    )
    return float(value), gradient


def _age_terms(params: FloatArray, s: _Sufficient) -> tuple[float, FloatArray]:
    """The first (alive) term's `-(r + x) log(alpha + T)`."""
    r, alpha = params[0], params[1]
    log_age = np.log(alpha + s.age_values)
    weight_log_age = _dot(s.age_weights, log_age)
    value = -(r * weight_log_age + _dot(s.age_x_weights, log_age))
    d_alpha = -_dot(r * s.age_weights + s.age_x_weights, 1.0 / (alpha + s.age_values))
    return value, np.array([-weight_log_age, d_alpha, 0.0, 0.0])


def _repeat_terms(params: FloatArray, s: _Sufficient) -> tuple[float, FloatArray]:
    """`softplus(d)` of the repeat customers: the log-sum-exp with the dropped-out term."""
    r, alpha, a, b = params
    x, w = s.x, s.w
    rx = r + x
    at_age, at_last = alpha + s.age, alpha + s.t_x
    delta = np.log(at_age / at_last)
    shifted = b + x - 1.0
    d = np.log(a / shifted) + rx * delta
    softplus, dropped = _softplus_and_expit(d)
    ws = w * dropped
    gradient = np.array(
        [
            _dot(ws, delta),
            _dot(ws, rx * (s.t_x - s.age) / (at_age * at_last)),
            ws.sum() / a,
            -_dot(ws, 1.0 / shifted),
        ]
    )
    return _dot(w, softplus), gradient


def _softplus_and_expit(d: FloatArray) -> tuple[FloatArray, FloatArray]:
    """`log(1 + e^d)` and `1 / (1 + e^-d)`, stable, sharing one exponential."""
    small = np.exp(-np.abs(d))
    one_plus = 1.0 + small
    softplus = np.maximum(d, 0.0) + np.log1p(small)
    return softplus, np.where(d >= 0, 1.0, small) / one_plus


def _dot(u: FloatArray, v: FloatArray) -> float:
    """A dot product without BLAS (whose threads stall on a busy machine)."""
    return float(np.einsum("i,i->", u, v))


def _mean_log_likelihood(params: FloatArray, s: _Sufficient) -> tuple[float, FloatArray]:
    """Weighted mean log-likelihood and its gradient in (r, alpha, a, b)."""
    parts = [f(params, s) for f in (_frequency_terms, _age_terms, _repeat_terms)]
    value = sum(p[0] for p in parts)
    gradient = np.sum([p[1] for p in parts], axis=0)
    return value / s.total, gradient / s.total


def _start(s: _Sufficient) -> list[float]:
    """Starting point: r = a = b = 1 and alpha matching the mean purchase rate."""
    mean_age = _dot(s.age_weights, s.age_values) / s.total
    mean_x = _dot(s.x_weights, s.x_values) / s.total
    return [1.0, max(mean_age, 1e-6) / max(mean_x, 1e-2), 1.0, 1.0]


# --------------------------------------------------------------------------- the estimator


class BetaGeoModel(BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """BG/NBD fitted by maximum likelihood; P(alive), churn score and expected purchases.

    Attributes:
        r_: shape of the purchase-rate gamma.
        alpha_: rate (inverse scale, in the data's time unit) of the purchase-rate gamma.
        a_: first shape of the dropout-probability beta.
        b_: second shape of the dropout-probability beta.
        log_likelihood_: the (weighted) total log-likelihood at the optimum.
        n_iter_: L-BFGS-B iterations.
    """

    r_: float
    alpha_: float
    a_: float
    b_: float
    log_likelihood_: float
    n_iter_: int

    def __init__(self, *, max_iter: int = 1000, tol: float = 1e-12) -> None:
        self.max_iter = max_iter
        self.tol = tol

    @classmethod
    def from_params(cls, r: float, alpha: float, a: float, b: float) -> Self:
        """A fitted model with the given parameters (e.g. stored ones, or published ones)."""
        model = cls()
        for name, value in zip(PARAMS, (r, alpha, a, b), strict=True):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
            setattr(model, f"{name}_", float(value))
        model.log_likelihood_ = float("nan")
        model.n_iter_ = 0
        return model

    @property
    def params(self) -> tuple[float, float, float, float]:
        """The fitted (r, alpha, a, b)."""
        check_is_fitted(self, "r_")
        return self.r_, self.alpha_, self.a_, self.b_

    def fit(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,  # noqa: N803 - the model's T (age)
        weights: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit r, alpha, a, b by maximum likelihood.

        Args:
            frequency: repeat purchases x per customer.
            recency: time of the last purchase t_x (0 when x = 0).
            T: age, from the first purchase to the end of observation (same unit).
            weights: optional count of customers per row (to fit on aggregated rows).

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input (naming the argument).
            ConvergenceError: the optimizer did not reach an interior optimum.
        """
        x, t_x, age = check_customers(frequency, recency, T, allow_empty=False)
        w = check_weights(weights, x.size)
        if not np.any((x > 0) & (w > 0)):
            raise ValueError("frequency: no customer has a repeat purchase, nothing to fit")
        stats = _Sufficient.build(x, t_x, age, w)
        params, n_iter = maximize_log_likelihood(
            lambda p: _mean_log_likelihood(p, stats),
            _start(stats),
            PARAMS,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in params)
        self.log_likelihood_ = _mean_log_likelihood(params, stats)[0] * stats.total
        self.n_iter_ = n_iter
        return self

    def probability_alive(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,  # noqa: N803 - the model's T (age)
    ) -> FloatArray:
        """P(alive at T | x, t_x, T) per customer (1 for customers with x = 0)."""
        x, t_x, age = check_customers(frequency, recency, T)
        return np.asarray(expit(-_log_dropout_odds(self.params, x, t_x, age)))

    def probability_no_purchase(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,  # noqa: N803 - the model's T (age)
    ) -> FloatArray:
        """P(no purchase in (T, T + t] | x, t_x, T) per customer: the churn score.

        Args:
            t: horizon length (scalar or per customer), in the fit's time unit.
            frequency: repeat purchases x.
            recency: time of the last purchase t_x.
            T: age.

        Returns:
            `1 - P(alive) * (1 - ((alpha + T) / (alpha + T + t))^(r + x))`.
        """
        x, t_x, age = check_customers(frequency, recency, T)
        horizon = check_horizon(t, x.size)
        r, alpha = self.params[:2]
        buys = -np.expm1(-(r + x) * np.log1p(horizon / (alpha + age)))
        return 1.0 - self.probability_alive(x, t_x, age) * buys

    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,  # noqa: N803 - the model's T (age)
    ) -> FloatArray:
        """E[purchases in (T, T + t] | x, t_x, T] per customer (FHL 2005 eq. 10).

        Args:
            t: horizon length (scalar or per customer), in the fit's time unit.
            frequency: repeat purchases x.
            recency: time of the last purchase t_x.
            T: age.

        Returns:
            The conditional expected number of purchases.
        """
        x, t_x, age = check_customers(frequency, recency, T)
        horizon = check_horizon(t, x.size)
        r, alpha, a, b = self.params
        z = horizon / (alpha + age + horizon)
        # Euler-transformed ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)
        with np.errstate(invalid="ignore", over="ignore"):
            tail = np.exp((a - 1.0) * np.log1p(-z)) * hyp2f1(
                a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z
            )
            # on a flat ridge (a and b huge) the Euler form is 0 x inf: FHL's own form is
            # finite there
            direct = np.exp((r + x) * np.log1p(-z)) * hyp2f1(r + x, b + x, a + b + x - 1.0, z)
        tail = np.where(np.isfinite(tail), tail, direct)
        given_alive = np.asarray((a + b + x - 1.0) / (a - 1.0) * (1.0 - tail), dtype=np.float64)
        return self.probability_alive(x, t_x, age) * given_alive


# --------------------------------------------------------------------------- RFM summary


def rfm_summary(
    purchases: pl.LazyFrame | pl.DataFrame,
    cutoff: datetime,
    *,
    first_purchase_origin: bool = True,
    signups: pl.LazyFrame | pl.DataFrame | None = None,
    value: str | None = None,
) -> pl.DataFrame:
    """Per-customer (frequency, recency, T) in days, from a purchase log, as of a cut-off.

    Only purchases strictly before `cutoff` count. Purchases are grouped into (UTC)
    calendar days: a customer's purchase days are the model's transactions.

    With `first_purchase_origin` (the usual BG/NBD convention), each customer's clock starts
    on the day of the first purchase: frequency = purchase days after the first,
    recency = days from the first to the last purchase day, T = days from the first
    purchase day to `cutoff` (fractional if `cutoff` is not at midnight). Customers without
    a purchase before `cutoff` are absent.

    Without it, the clock starts on the signup day (`signups`: customer_id, signup_ts, with
    signup_ts < cutoff): frequency = purchase days after the signup day (a purchase on the
    signup day is the origin event itself), recency = days from the signup day to the last
    such purchase day (0 when none), T = days from the signup day to `cutoff`. Every
    customer of `signups` is present, with or without purchases.

    Args:
        purchases: one row per purchase, with `customer_id` and `ts` (returns excluded).
        cutoff: the end of observation (exclusive); the same time-zone awareness as `ts`.
        first_purchase_origin: start each customer's clock at the first purchase day.
        signups: the signup times, required when `first_purchase_origin` is False.
        value: optional amount column; adds `monetary_value`, the mean per-day total over
            the counted (repeat) purchase days (0 when frequency is 0), for Gamma-Gamma.

    Returns:
        customer_id, frequency (Int64), recency, T (Float64) [, monetary_value], sorted by
        customer_id.

    Raises:
        ValueError: `signups` missing without `first_purchase_origin`, or given with it.
    """
    if first_purchase_origin == (signups is not None):
        raise ValueError("signups must be given exactly when first_purchase_origin is False")
    amount = pl.col(value) if value is not None else pl.lit(0.0)
    days = (
        purchases.lazy()
        .filter(pl.col("ts") < cutoff)
        .group_by("customer_id", pl.col("ts").dt.truncate("1d").alias("day"))
        .agg(amount.sum().alias("amount"))
    )
    if signups is None:
        summary = _from_first_purchase(days)
    else:
        summary = _from_signup(days, signups.lazy().filter(pl.col("signup_ts") < cutoff))
    columns = [
        "customer_id",
        pl.col("frequency").cast(pl.Int64),
        _elapsed_days(pl.col("last") - pl.col("origin")).alias("recency"),
        _elapsed_days(pl.lit(cutoff) - pl.col("origin")).alias("T"),
    ]
    if value is not None:
        mean = pl.col("repeat_amount") / pl.col("frequency")
        monetary = pl.when(pl.col("frequency") > 0).then(mean).otherwise(0.0)
        columns.append(monetary.alias("monetary_value"))
    return summary.select(columns).sort("customer_id").collect()


def _elapsed_days(delta: pl.Expr) -> pl.Expr:
    """A duration in (fractional) days, to the microsecond."""
    return delta.dt.total_microseconds() / MICROSECONDS_PER_DAY


def _from_first_purchase(days: pl.LazyFrame) -> pl.LazyFrame:
    """Origin = the first purchase day; the first day's amount is not a repeat purchase."""
    return days.group_by("customer_id").agg(
        pl.col("day").min().alias("origin"),
        pl.col("day").max().alias("last"),
        (pl.len() - 1).alias("frequency"),
        (pl.col("amount").sum() - pl.col("amount").sort_by("day").first()).alias("repeat_amount"),
    )


def _from_signup(days: pl.LazyFrame, signups: pl.LazyFrame) -> pl.LazyFrame:
    """Origin = the signup day; purchase days after it are the transactions."""
    origins = signups.select("customer_id", pl.col("signup_ts").dt.truncate("1d").alias("origin"))
    counted = (
        days.join(origins, on="customer_id", how="inner")
        .filter(pl.col("day") > pl.col("origin"))
        .group_by("customer_id")
        .agg(
            pl.col("day").max().alias("last"),
            pl.len().alias("frequency"),
            pl.col("amount").sum().alias("repeat_amount"),
        )
    )
    return origins.join(counted, on="customer_id", how="left").with_columns(
        pl.col("last").fill_null(pl.col("origin")),
        pl.col("frequency").fill_null(0),
        pl.col("repeat_amount").fill_null(0.0),
    )
