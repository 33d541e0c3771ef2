"""Bayesian lift: chance to win and expected loss of the normal posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from models.experiments.bayes import (
    bayesian_from_summaries,
    bayesian_proportions,
    expected_positive_part,
    normal_posterior,
)
from models.experiments.stats import Summary


@pytest.mark.parametrize(("mean", "sd"), [(0.0, 1.0), (0.3, 0.2), (-2.0, 0.5), (5.0, 0.1)])
def test_expected_loss_is_the_integral_of_the_losing_side(mean: float, sd: float) -> None:
    # given a normal posterior of the lift
    # when reading the expected losses
    posterior = normal_posterior(mean, sd, alpha=0.05, lower_is_better=False)

    # then shipping loses E[max(-lift, 0)], keeping the control E[max(lift, 0)]
    def density(x: float) -> float:
        return float(stats.norm.pdf(x, mean, sd))

    # integrated over mean +- 12 sd, where all the mass is (quad misses narrow far peaks)
    low, high = mean - 12 * sd, mean + 12 * sd
    loss = integrate.quad(lambda x: -x * density(x), low, 0)[0] if low < 0 else 0.0
    gain = integrate.quad(lambda x: x * density(x), 0, high)[0] if high > 0 else 0.0
    assert posterior.expected_loss == pytest.approx(loss, abs=1e-9)
    assert posterior.expected_loss_control == pytest.approx(gain, abs=1e-9)
    # and their difference is the posterior mean
    assert posterior.expected_loss_control - posterior.expected_loss == pytest.approx(mean)
    assert posterior.chance_to_win == pytest.approx(stats.norm.sf(0, mean, sd))
    assert posterior.ci_low == pytest.approx(stats.norm.ppf(0.025, mean, sd))


def test_lower_is_better_swaps_the_sides() -> None:
    # given a lift of +0.2 with sd 0.1 on a metric where lower is better (e.g. fraud loss)
    higher = normal_posterior(0.2, 0.1, alpha=0.05, lower_is_better=False)
    lower = normal_posterior(0.2, 0.1, alpha=0.05, lower_is_better=True)
    # then the chance to win is that of a decrease, and the losses trade places
    assert lower.chance_to_win == pytest.approx(1 - higher.chance_to_win)
    assert lower.expected_loss == pytest.approx(higher.expected_loss_control)
    assert lower.expected_loss_control == pytest.approx(higher.expected_loss)
    assert lower.chance_to_win < 0.05


def test_posteriors_use_the_frequentist_estimate_and_standard_error() -> None:
    # given a control at 10% conversion and a treatment at 12%
    control = np.r_[np.ones(100), np.zeros(900)]
    treatment = np.r_[np.ones(120), np.zeros(880)]
    # when comparing them the Bayesian way
    result = bayesian_proportions(control, treatment)
    # then the absolute posterior is N(0.02, p (1 - p) / n summed)
    sd = math.sqrt(0.1 * 0.9 / 1000 + 0.12 * 0.88 / 1000)
    assert result.absolute.mean == pytest.approx(0.02)
    assert result.absolute.sd == pytest.approx(sd)
    assert result.absolute.chance_to_win == pytest.approx(stats.norm.cdf(0.02 / sd))
    # and the relative posterior centres on +20%
    assert result.relative.mean == pytest.approx(0.2)


def test_a_zero_control_mean_leaves_the_relative_posterior_undefined() -> None:
    # given a control with mean 0, when comparing, then only the absolute posterior exists
    result = bayesian_from_summaries(Summary(10, 0.0, 1.0), Summary(10, 1.0, 1.0))
    assert result.absolute.chance_to_win > 0.9
    assert math.isnan(result.relative.chance_to_win)


def test_the_positive_part_of_a_point_mass_is_its_positive_part() -> None:
    # given no uncertainty, then E[max(X, 0)] is max(x, 0)
    assert expected_positive_part(2.0, 0.0) == 2.0
    assert expected_positive_part(-2.0, 0.0) == 0.0


def test_a_treatment_constant_at_zero_has_a_point_mass_relative_posterior() -> None:
    # given a treatment where nobody converted, its relative lift is exactly -1
    result = bayesian_from_summaries(Summary(100, 0.3, 0.21), Summary(100, 0.0, 0.0))
    # then the relative posterior is a point mass there, not a division by zero
    assert result.relative.mean == -1.0
    assert result.relative.sd == 0.0
    assert result.relative.chance_to_win == 0.0
    assert result.relative.expected_loss == 1.0
