"""Gamma-Gamma: recovery of known parameters, the posterior mean, expected spend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import approx_fprime
from scipy.stats import gamma
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.customers.bgnbd import BetaGeoModel, ConvergenceError
from models.customers.gamma_gamma import (
    GammaGammaModel,
    _mean_log_likelihood,
    _Sufficient,
    log_likelihood,
)
from tests.models.customers.test_bgnbd import CDNOW, numerical_hessian, run_lifetimes, simulate

SPEND = (6.25, 3.74, 15.44)  # p, q, v: Fader & Hardie (2013) on CDNOW


def simulate_spend(
    frequency: np.ndarray, params: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Mean of x values ~ Gamma(p, nu) per customer, nu ~ Gamma(q, v) (rates); 0 if x = 0."""
    p, q, v = params
    rng = np.random.default_rng(seed)
    nu = rng.gamma(q, 1.0 / v, frequency.size)
    x = np.maximum(frequency, 1)
    return np.where(frequency > 0, rng.gamma(p * x, 1.0 / (x * nu)), 0.0)


def direct_log_density(params: tuple[float, float, float], x: int, m: float) -> float:
    """log of f(m | x) = int Gamma(m; p x, rate x nu) Gamma(nu; q, rate v) d nu, by quadrature."""
    p, q, v = params

    def joint(nu: float) -> float:
        return float(gamma.pdf(m, p * x, scale=1 / (x * nu)) * gamma.pdf(nu, q, scale=1 / v))

    value, _ = quad(joint, 0, np.inf, limit=200)
    return math.log(value)


def test_log_likelihood_matches_the_mixture_integral() -> None:
    x, m = [1, 2, 5, 14], [3.0, 25.0, 12.5, 40.0]
    expected = [direct_log_density(SPEND, xi, mi) for xi, mi in zip(x, m, strict=True)]
    np.testing.assert_allclose(log_likelihood(SPEND, x, m), expected, rtol=1e-7)


def test_analytic_gradient_matches_finite_differences() -> None:
    x = np.random.default_rng(0).integers(1, 12, 2_000).astype(float)
    m = simulate_spend(x, SPEND, seed=1)
    w = np.random.default_rng(2).integers(1, 4, x.size).astype(float)
    stats = _Sufficient.build(x, m, w)
    for params in (np.array(SPEND), np.array([1.5, 0.8, 3.0])):
        gradient = _mean_log_likelihood(params, stats)[1]
        numeric = approx_fprime(params, lambda theta: _mean_log_likelihood(theta, stats)[0], 1e-7)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-6)
        total = float(np.sum(w * log_likelihood(tuple(params), x, m)))
        assert _mean_log_likelihood(params, stats)[0] * w.sum() == pytest.approx(total)


def test_fit_recovers_known_parameters_within_standard_errors() -> None:
    data = simulate(100_000, CDNOW, horizon=1.0, seed=11)
    monetary = simulate_spend(data.x, SPEND, seed=12)
    model = GammaGammaModel().fit(data.x, monetary)
    repeat = data.x > 0
    assert model.n_customers_ == repeat.sum()
    estimate = np.array(model.params)

    def total(theta: np.ndarray) -> float:
        return float(log_likelihood(tuple(theta), data.x[repeat], monetary[repeat]).sum())

    standard_errors = np.sqrt(np.diag(np.linalg.inv(-numerical_hessian(total, estimate))))
    z = (estimate - np.array(SPEND)) / standard_errors
    assert np.all(np.abs(z) < 4), f"estimate {estimate}, SE {standard_errors}, z {z}"
    np.testing.assert_allclose(estimate, SPEND, rtol=0.1)
    assert model.log_likelihood_ == pytest.approx(total(estimate), rel=1e-10)


def test_weights_and_contract() -> None:
    x = np.random.default_rng(3).integers(0, 6, 3_000).astype(float)
    m = np.round(simulate_spend(x, SPEND, seed=4), 0) + (x > 0)
    rows = np.column_stack([x, m])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    expanded = GammaGammaModel().fit(x, m)
    aggregated = GammaGammaModel().fit(unique[:, 0], unique[:, 1], weights=counts)
    np.testing.assert_allclose(aggregated.params, expanded.params, rtol=1e-5)
    assert clone(expanded).get_params() == {"max_iter": 1000, "tol": 1e-12}
    with pytest.raises(NotFittedError):
        GammaGammaModel().conditional_expected_average_value([1], [2.0])


@pytest.mark.parametrize(
    ("frequency", "monetary", "match"),
    [
        ([1.0], [-2.0], "monetary must be non-negative"),
        ([1.0], [0.0], "monetary must be > 0"),
        ([1.0, 2.0], [1.0], "one value per customer"),
        ([0.0, 0.0], [0.0, 0.0], "no customer has a repeat purchase"),
        ([0.5], [1.0], "frequency must be whole"),
    ],
)
def test_fit_refuses_invalid_input(
    frequency: list[float], monetary: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        GammaGammaModel().fit(frequency, monetary)


def test_fit_reports_non_convergence() -> None:
    x = np.random.default_rng(5).integers(1, 6, 1_000).astype(float)
    with pytest.raises(ConvergenceError):
        GammaGammaModel(max_iter=1).fit(x, simulate_spend(x, SPEND, seed=6))


def test_conditional_expected_value_is_the_posterior_mean() -> None:
    """p E[1 / nu | x, m], the posterior by quadrature; the population mean at x = 0."""
    p, q, v = SPEND
    model = GammaGammaModel.from_params(*SPEND)
    x, m = np.array([0.0, 1.0, 3.0, 20.0]), np.array([0.0, 80.0, 4.0, 30.0])
    expected = [p * v / (q - 1)]
    for xi, mi in zip(x[1:], m[1:], strict=True):

        def posterior(nu: float, xi: float = xi, mi: float = mi) -> float:
            return float(gamma.pdf(mi, p * xi, scale=1 / (xi * nu)) * gamma.pdf(nu, q, scale=1 / v))

        mass, _ = quad(posterior, 0, np.inf, limit=200)
        mean, _ = quad(lambda nu, f=posterior: p / nu * f(nu), 0, np.inf, limit=200)
        expected.append(mean / mass)
    np.testing.assert_allclose(model.conditional_expected_average_value(x, m), expected, rtol=1e-7)
    with pytest.raises(ValueError, match="mean value is infinite"):
        GammaGammaModel.from_params(1.0, 0.5, 1.0).conditional_expected_average_value([0], [0.0])


def test_expected_spend_is_purchases_times_value() -> None:
    bgnbd = BetaGeoModel.from_params(*CDNOW)
    spend = GammaGammaModel.from_params(*SPEND)
    x, t_x, age = np.array([0.0, 2.0, 7.0]), np.array([0.0, 30.0, 20.0]), np.array([39.0] * 3)
    m = np.array([123.0, 25.0, 60.0])  # the first customer's m is ignored (x = 0)
    result = spend.expected_spend(bgnbd, 52.0, x, t_x, age, m)
    purchases = bgnbd.expected_purchases(52.0, x, t_x, age)
    p, q, v = SPEND
    values = np.array(
        [p * v / (q - 1), p * (v + 2 * 25) / (2 * p + q - 1), p * (v + 7 * 60) / (7 * p + q - 1)]
    )
    np.testing.assert_allclose(result, purchases * values, rtol=1e-12)


def test_expected_spend_matches_simulated_holdout_spend() -> None:
    """Holdout spend drawn from both processes: mean predicted vs mean realised, by frequency."""
    data = simulate(200_000, CDNOW, horizon=39.0, seed=13)
    p, q, v = SPEND
    rng = np.random.default_rng(14)
    nu = rng.gamma(q, 1.0 / v, data.x.size)
    x = np.maximum(data.x, 1)
    monetary = np.where(data.x > 0, rng.gamma(p * x, 1.0 / (x * nu)), 0.0)
    holdout_spend = rng.gamma(p * np.maximum(data.holdout, 1), 1.0 / nu) * (data.holdout > 0)
    predicted = GammaGammaModel.from_params(*SPEND).expected_spend(
        BetaGeoModel.from_params(*CDNOW), 39.0, data.x, data.t_x, data.age, monetary
    )
    for bucket in np.unique(np.digitize(data.x, [1, 2, 4, 8])):
        mask = np.digitize(data.x, [1, 2, 4, 8]) == bucket
        se = holdout_spend[mask].std() / math.sqrt(mask.sum())
        gap = predicted[mask].mean() - holdout_spend[mask].mean()
        assert abs(gap) < 4 * se, f"bucket {bucket}: gap {gap:.3f}, se {se:.3f}"


GAMMA_GAMMA_REFERENCE = """
    import json
    import numpy as np
    from lifetimes import GammaGammaFitter
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    data = np.load("data.npz")
    fitter = GammaGammaFitter().fit(data["x"], data["m"], tol=1e-5)  # 1e-7 fails here
    value = fitter.conditional_expected_average_profit(data["x"], data["m"])
    cdnow = load_cdnow_summary_data_with_monetary_value()
    cdnow = cdnow[cdnow["frequency"] > 0]
    print(json.dumps({
        "params": [fitter.params_[k] for k in ("p", "q", "v")],
        "value": list(map(float, value)),
        "cdnow": {k: cdnow[k].tolist() for k in ("frequency", "monetary_value")},
    }))
"""


@pytest.mark.slow
def test_matches_lifetimes_and_the_published_cdnow_fit(tmp_path: Path) -> None:
    x = np.random.default_rng(15).integers(1, 12, 5_000).astype(float)
    m = simulate_spend(x, SPEND, seed=16)
    np.savez(tmp_path / "data.npz", x=x, m=m)
    reference = run_lifetimes(GAMMA_GAMMA_REFERENCE, tmp_path)
    model = GammaGammaModel().fit(x, m)
    np.testing.assert_allclose(model.params, reference["params"], rtol=1e-3)
    np.testing.assert_allclose(
        model.conditional_expected_average_value(x, m), reference["value"], rtol=1e-3
    )
    cdnow = reference["cdnow"]  # the CDNOW repeat customers that lifetimes ships
    fitted = GammaGammaModel().fit(cdnow["frequency"], cdnow["monetary_value"])
    np.testing.assert_allclose(fitted.params, SPEND, atol=0.01)  # published to 2 decimals
