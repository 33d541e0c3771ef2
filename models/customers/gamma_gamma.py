"""The Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013).

A customer's transaction values are i.i.d. `Gamma(p, nu)` (shape p, rate nu), with mean
`p / nu`, and `nu ~ Gamma(q, v)` across customers (shape q, rate v). The mean `m` of a
customer's `x` transaction values is then `Gamma(p x, nu x)` given nu, and marginally::

    f(m | x) = G(p x + q) / (G(p x) G(q)) * v^q m^(p x - 1) x^(p x) / (v + x m)^(p x + q)

The posterior mean of the customer's mean transaction value is a weighted average of the
population mean `p v / (q - 1)` and the customer's own mean `m`::

    E[Z | x, m] = p (v + x m) / (p x + q - 1)
                = (q - 1) / (p x + q - 1) * p v / (q - 1) + p x / (p x + q - 1) * m

which is the population mean for x = 0. The fit uses customers with x > 0 (`x` = repeat
purchases, `m` = their mean value, as in `rfm_summary`); the model assumes spend per
transaction independent of the purchase process, so expected spend over (T, T + t] is
`BG/NBD expected purchases x E[Z | x, m]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, gammaln
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from models.customers.bgnbd import (
    BetaGeoModel,
    FloatArray,
    as_float_array,
    check_weights,
    maximize_log_likelihood,
    weighted_counts,
)

PARAMS = ("p", "q", "v")


def check_spend(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated (x, m) arrays: m > 0 where x > 0 (m is ignored where x = 0).

    Raises:
        ValueError: naming the offending argument.
    """
    x = as_float_array("frequency", frequency)
    m = as_float_array("monetary", monetary)
    if x.size != m.size:
        raise ValueError(
            f"frequency and monetary must have one value per customer, got {x.size}, {m.size}"
        )
    if np.any(x != np.round(x)):
        raise ValueError("frequency must be whole numbers (repeat purchases)")
    if np.any((x > 0) & (m == 0)):
        raise ValueError("monetary must be > 0 for customers with frequency > 0")
    return x, m


def log_likelihood(
    params: tuple[float, float, float], frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> FloatArray:
    """Per-customer log-density of the mean value m of x > 0 transactions.

    Args:
        params: (p, q, v).
        frequency: transactions x behind each mean (> 0).
        monetary: mean transaction value m (> 0).

    Returns:
        `log f(m | x)` per customer.
    """
    x, m = check_spend(frequency, monetary)
    if np.any(x == 0):
        raise ValueError("frequency must be > 0 for the spend likelihood")
    p, q, v = params
    px = p * x
    density = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + x * m)
    )
    return np.asarray(density, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Sufficient:
    """Sums by distinct x, constant sums, and the rows the fit reads per evaluation."""

    total: float
    x_values: FloatArray
    x_weights: FloatArray
    weighted_x_log_xm: float  # sum of w x log(x m)
    weighted_log_m: float  # sum of w log m
    x: FloatArray
    m: FloatArray
    w: FloatArray

    @classmethod
    def build(cls, x: FloatArray, m: FloatArray, w: FloatArray) -> Self:
        """From repeat customers (x > 0) with positive weight."""
        x_values, x_index = np.unique(x, return_inverse=True)
        return cls(
            total=float(w.sum()),
            x_values=x_values,
            x_weights=weighted_counts(x_index, w),
            weighted_x_log_xm=float(np.einsum("i,i->", w * x, np.log(x * m))),
            weighted_log_m=float(np.einsum("i,i->", w, np.log(m))),
            x=x,
            m=m,
            w=w,
        )


def _mean_log_likelihood(params: FloatArray, s: _Sufficient) -> tuple[float, FloatArray]:
    """Weighted mean log-likelihood and its gradient in (p, q, v)."""
    p, q, v = params
    u, wu, n = s.x_values, s.x_weights, s.total
    pu = p * u
    log_v_xm = np.log(v + s.x * s.m)
    w_log_v_xm = float(np.einsum("i,i->", s.w, log_v_xm))
    wx_log_v_xm = float(np.einsum("i,i->", s.w * s.x, log_v_xm))
    value = float(np.einsum("i,i->", wu, gammaln(pu + q) - gammaln(pu)))
    value += n * (q * np.log(v) - gammaln(q)) + p * s.weighted_x_log_xm - s.weighted_log_m
    value -= p * wx_log_v_xm + q * w_log_v_xm
    psi_puq = digamma(pu + q)
    gradient = np.array(
        [
            float(np.einsum("i,i->", wu * u, psi_puq - digamma(pu)))
            + s.weighted_x_log_xm
            - wx_log_v_xm,
            float(np.einsum("i,i->", wu, psi_puq)) + n * (np.log(v) - digamma(q)) - w_log_v_xm,
            n * q / v - float(np.einsum("i,i->", s.w * (p * s.x + q), 1.0 / (v + s.x * s.m))),
        ]
    )
    return value / n, gradient / n


class GammaGammaModel(BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Gamma-Gamma spend per transaction, fitted by maximum likelihood.

    Attributes:
        p_: shape of the per-transaction value gamma.
        q_: shape of the gamma of the customers' value rates.
        v_: rate of the gamma of the customers' value rates (in money units).
        log_likelihood_: the (weighted) total log-likelihood at the optimum.
        n_iter_: L-BFGS-B iterations.
        n_customers_: the (weighted) number of customers fitted (frequency > 0).
    """

    p_: float
    q_: float
    v_: float
    log_likelihood_: float
    n_iter_: int
    n_customers_: float

    def __init__(self, *, max_iter: int = 1000, tol: float = 1e-12) -> None:
        self.max_iter = max_iter
        self.tol = tol

    @classmethod
    def from_params(cls, p: float, q: float, v: float) -> Self:
        """A fitted model with the given parameters (e.g. stored ones)."""
        model = cls()
        for name, value in zip(PARAMS, (p, q, v), strict=True):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
            setattr(model, f"{name}_", float(value))
        model.log_likelihood_ = float("nan")
        model.n_iter_ = 0
        model.n_customers_ = 0.0
        return model

    @property
    def params(self) -> tuple[float, float, float]:
        """The fitted (p, q, v)."""
        check_is_fitted(self, "p_")
        return self.p_, self.q_, self.v_

    def fit(
        self,
        frequency: npt.ArrayLike,
        monetary: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> Self:
        """Fit p, q, v on the customers with frequency > 0 (the others carry no spend data).

        Args:
            frequency: repeat purchases x per customer.
            monetary: mean value of those x purchases (ignored where x = 0).
            weights: optional count of customers per row.

        Returns:
            self, fitted.

        Raises:
            ValueError: invalid input, or no customer with frequency > 0.
            ConvergenceError: the optimizer did not reach an interior optimum.
        """
        x, m = check_spend(frequency, monetary)
        w = check_weights(weights, x.size)
        keep = (x > 0) & (w > 0)
        if not np.any(keep):
            raise ValueError("frequency: no customer has a repeat purchase, nothing to fit")
        stats = _Sufficient.build(x[keep], m[keep], w[keep])
        mean_m = float(np.einsum("i,i->", stats.w, stats.m)) / stats.total
        params, n_iter = maximize_log_likelihood(
            lambda theta: _mean_log_likelihood(theta, stats),
            [1.0, 2.0, mean_m],  # population mean p v / (q - 1) = the sample mean
            PARAMS,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.p_, self.q_, self.v_ = (float(value) for value in params)
        self.log_likelihood_ = _mean_log_likelihood(params, stats)[0] * stats.total
        self.n_iter_ = n_iter
        self.n_customers_ = stats.total
        return self

    def conditional_expected_average_value(
        self, frequency: npt.ArrayLike, monetary: npt.ArrayLike
    ) -> FloatArray:
        """E[value per transaction | x, m]: `p (v + x m) / (p x + q - 1)` per customer.

        Args:
            frequency: repeat purchases x (0 gives the population mean `p v / (q - 1)`).
            monetary: mean value of those purchases (ignored where x = 0).

        Returns:
            The posterior mean transaction value.

        Raises:
            ValueError: the posterior mean is infinite (`p x + q <= 1`, e.g. q <= 1 at x = 0).
        """
        x, m = check_spend(frequency, monetary)
        p, q, v = self.params
        denominator = p * x + q - 1.0
        if np.any(denominator <= 0):
            raise ValueError(f"the mean value is infinite where p x + q <= 1 (q = {q:.4g})")
        return p * (v + x * np.where(x > 0, m, 0.0)) / denominator

    def expected_spend(
        self,
        bgnbd: BetaGeoModel,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,  # noqa: N803 - the BG/NBD T (age)
        monetary: npt.ArrayLike,
    ) -> FloatArray:
        """Expected spend in (T, T + t]: expected purchases x expected value per purchase.

        Args:
            bgnbd: a fitted BG/NBD model (same time unit as t, recency and T).
            t: horizon length (scalar or per customer).
            frequency: repeat purchases x.
            recency: time of the last purchase t_x.
            T: age.
            monetary: mean value of the x repeat purchases (ignored where x = 0).

        Returns:
            Expected spend per customer (undiscounted).
        """
        purchases = bgnbd.expected_purchases(t, frequency, recency, T)
        return purchases * self.conditional_expected_average_value(frequency, monetary)
