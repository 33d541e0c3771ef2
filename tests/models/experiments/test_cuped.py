"""CUPED: variance reduction close to rho^2, an unbiased lift, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.experiments.cuped import compare_cuped, cuped_theta


def correlated(
    rng: np.random.Generator, n: int, rho: float, effect: float
) -> tuple[np.ndarray, np.ndarray]:
    """(metric, pre-period covariate) with correlation rho, unit variances, metric + effect."""
    pre = rng.normal(0.0, 1.0, n)
    post = rho * pre + np.sqrt(1 - rho**2) * rng.normal(0.0, 1.0, n) + effect
    return post + 5.0, pre + 3.0


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_variance_reduction_is_close_to_rho_squared(rho: float) -> None:
    # given customers whose metric correlates rho with its pre-period value
    rng = np.random.default_rng(int(rho * 100))
    y_c, x_c = correlated(rng, 20_000, rho, effect=0.0)
    y_t, x_t = correlated(rng, 20_000, rho, effect=0.05)
    # when comparing with CUPED
    result = compare_cuped(y_c, x_c, y_t, x_t)
    # then theta is the regression slope and the share of variance removed is rho^2 (10 %)
    assert result.theta == pytest.approx(rho, abs=0.02)
    assert result.variance_reduction == pytest.approx(rho**2, rel=0.1)
    # and the lift's variance is 1 - rho^2 times the raw one, within 10 %
    adjusted, raw = result.adjusted.absolute, result.unadjusted.absolute
    ratio = (adjusted.standard_error / raw.standard_error) ** 2
    assert ratio == pytest.approx(1 - rho**2, rel=0.1)


def test_cuped_lift_is_unbiased_over_many_experiments() -> None:
    # given 300 simulated experiments with a true lift of 0.1
    rng = np.random.default_rng(5)
    lifts = []
    covered = 0
    for _ in range(300):
        y_c, x_c = correlated(rng, 500, 0.7, effect=0.0)
        y_t, x_t = correlated(rng, 500, 0.7, effect=0.1)
        # when estimating it with CUPED
        adjusted = compare_cuped(y_c, x_c, y_t, x_t).adjusted.absolute
        lifts.append(adjusted.estimate)
        covered += adjusted.ci_low <= 0.1 <= adjusted.ci_high
    # then the estimates centre on 0.1 and the 95% intervals cover it about 95% of the time
    assert np.mean(lifts) == pytest.approx(0.1, abs=0.01)
    assert 0.92 <= covered / 300 <= 0.98


def test_theta_is_pooled_over_variants() -> None:
    # given two variants whose within-variant slopes differ
    x_c, x_t = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])
    y_c, y_t = 2 * x_c, 4 * x_t
    # when computing theta, then it is the slope over all customers together
    assert cuped_theta([y_c, y_t], [x_c, x_t]) == pytest.approx(3.0)


def test_a_constant_covariate_falls_back_to_the_raw_comparison() -> None:
    # given a covariate without variance
    rng = np.random.default_rng(0)
    y_c, y_t = rng.normal(0, 1, 100), rng.normal(0, 1, 100)
    # when comparing with CUPED
    result = compare_cuped(y_c, np.ones(100), y_t, np.ones(100))
    # then nothing is adjusted
    assert result.theta == 0
    assert result.variance_reduction == pytest.approx(0.0, abs=1e-12)
    assert result.adjusted.absolute == result.unadjusted.absolute


def test_misaligned_metric_and_covariate_are_refused() -> None:
    # given a covariate for fewer customers than the metric, when comparing, then refused
    with pytest.raises(ValueError, match="differ in length"):
        compare_cuped([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0], [1.0, 3.0])
