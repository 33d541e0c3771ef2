"""Calibration: A/A false positives and CI coverage are nominal over 1,000 fresh experiments.

Each replication draws a new population (control and treatment) from a known model and runs
the project's own comparison (`compare_proportions`, `compare_means`, `compare_ratios`,
`compare_cuped`) on it, exactly as the analysis does for one metric. Over the replications:

- A/A (no effect): the share of 95 % intervals that exclude 0 (a false positive) is 5 %;
- A/B (a known true effect): the share of 95 % intervals, absolute and relative (delta
  method), that contain the true lift is 95 %.

A rate is "consistent with nominal" unless a two-sided exact binomial test rejects it at
p < 0.001: with 1,000 replications that allows about 5 % ± 2.3 points. The draws are
vectorised (one matrix per metric); the comparisons run once per replication.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from models.experiments.cuped import compare_cuped
from models.experiments.stats import (
    FloatArray,
    MeanComparison,
    compare_means,
    compare_proportions,
    compare_ratios,
)

REPLICATIONS = 1_000
N = 2_000  # customers per variant
LEVEL = 0.95
NOMINAL_FPR = 1 - LEVEL
REJECT_BELOW = 0.001  # binomial p-value that fails a test

# a proportion: 10 % convert in control, +10 % (relative) in treatment
BASE_RATE, RATE_LIFT = 0.10, 0.10
# a heavy-tailed mean: lognormal spend (skewness about 9), +5 % in treatment
LOG_MU, LOG_SIGMA, SPEND_LIFT = 3.0, 1.2, 0.05
# a ratio: Poisson orders scaled by a customer's taste, gamma baskets; baskets +5 %
TASTE_SIGMA, ORDERS_RATE, BASKET_SHAPE, BASKET_SCALE, BASKET_LIFT = 0.5, 1.5, 2.0, 20.0, 0.05


@dataclass(frozen=True)
class Rates:
    """Over the replications: intervals excluding 0 (A/A), covering the truth (A/B)."""

    false_positive: float
    absolute_coverage: float
    relative_coverage: float


def binomial_p(rate: float, nominal: float) -> float:
    """Two-sided exact binomial p-value of `rate` over REPLICATIONS against `nominal`."""
    successes = round(rate * REPLICATIONS)
    return float(stats.binomtest(successes, REPLICATIONS, nominal).pvalue)


def assert_nominal(rates: Rates) -> None:
    """Every rate is consistent with its nominal value (binomial p >= 0.001)."""
    checks = {
        "A/A false-positive rate": (rates.false_positive, NOMINAL_FPR),
        "absolute CI coverage": (rates.absolute_coverage, LEVEL),
        "relative CI coverage": (rates.relative_coverage, LEVEL),
    }
    for name, (rate, nominal) in checks.items():
        p = binomial_p(rate, nominal)
        assert p >= REJECT_BELOW, f"{name} {rate:.3f} vs nominal {nominal:.2f}: binomial p {p:.2g}"


def excludes_zero(comparison: MeanComparison) -> bool:
    """Whether the absolute 95 % interval excludes 0."""
    return comparison.absolute.ci_low > 0 or comparison.absolute.ci_high < 0


def covers(comparison: MeanComparison, absolute: float, relative: float) -> tuple[bool, bool]:
    """Whether the absolute and relative intervals contain the true lifts."""
    a, r = comparison.absolute, comparison.relative
    return a.ci_low <= absolute <= a.ci_high, r.ci_low <= relative <= r.ci_high


Compare = Callable[[int, bool], MeanComparison]


def rates(compare: Compare, true_absolute: float, true_relative: float) -> Rates:
    """Run `compare(replication, with_effect)` for every replication, A/A and A/B."""
    false_positives = sum(excludes_zero(compare(r, False)) for r in range(REPLICATIONS))
    covered = np.array(
        [covers(compare(r, True), true_absolute, true_relative) for r in range(REPLICATIONS)]
    )
    return Rates(
        false_positive=false_positives / REPLICATIONS,
        absolute_coverage=float(covered[:, 0].mean()),
        relative_coverage=float(covered[:, 1].mean()),
    )


def draws(seed: int, draw: Callable[[np.random.Generator, float], FloatArray]) -> FloatArray:
    """(3, REPLICATIONS, N) arrays: control, A/A treatment, A/B treatment (with the effect)."""
    rng = np.random.default_rng(seed)
    return np.stack([draw(rng, 0.0), draw(rng, 0.0), draw(rng, 1.0)])


def test_a_proportion_is_calibrated() -> None:
    # given 1,000 fresh populations converting at 10 %, treatment +10 % in the A/B case
    def draw(rng: np.random.Generator, effect: float) -> FloatArray:
        rate = BASE_RATE * (1 + RATE_LIFT * effect)
        return (rng.random((REPLICATIONS, N)) < rate).astype(np.float64)

    values = draws(1, draw)

    # when comparing each with the project's two-proportion comparison
    def compare(r: int, with_effect: bool) -> MeanComparison:
        return compare_proportions(values[0, r], values[2 if with_effect else 1, r]).welch

    result = rates(compare, BASE_RATE * RATE_LIFT, RATE_LIFT)
    # then false positives and coverage are nominal
    assert_nominal(result)
    # and the pooled z-test's A/A false positives too
    z_positive = sum(
        compare_proportions(values[0, r], values[1, r]).z_p_value < NOMINAL_FPR
        for r in range(REPLICATIONS)
    )
    assert binomial_p(z_positive / REPLICATIONS, NOMINAL_FPR) >= REJECT_BELOW


def test_a_heavy_tailed_mean_is_calibrated() -> None:
    # given 1,000 fresh lognormal spend populations, treatment +5 % in the A/B case
    def draw(rng: np.random.Generator, effect: float) -> FloatArray:
        return rng.lognormal(LOG_MU, LOG_SIGMA, (REPLICATIONS, N)) * (1 + SPEND_LIFT * effect)

    values = draws(2, draw)
    assert stats.skew(values[0].ravel()) > 5  # heavy-tailed indeed

    # when comparing each with Welch
    def compare(r: int, with_effect: bool) -> MeanComparison:
        return compare_means(values[0, r], values[2 if with_effect else 1, r])

    mean = math.exp(LOG_MU + LOG_SIGMA**2 / 2)
    # then false positives and coverage are nominal
    assert_nominal(rates(compare, mean * SPEND_LIFT, SPEND_LIFT))


def test_a_ratio_metric_by_the_delta_method_is_calibrated() -> None:
    # given 1,000 fresh populations of customers with orders and spend, baskets +5 % in A/B:
    # big spenders (taste) order more and buy bigger baskets, some customers order nothing
    def draw(rng: np.random.Generator, effect: float) -> FloatArray:
        taste = rng.lognormal(0.0, TASTE_SIGMA, (REPLICATIONS, N))
        orders = rng.poisson(ORDERS_RATE * taste).astype(np.float64)
        # a sum of k gamma(shape, scale) baskets is gamma(k shape, scale) (0 for k = 0)
        basket_scale = BASKET_SCALE * (1 + BASKET_LIFT * effect)
        spend = taste * rng.gamma(orders * BASKET_SHAPE, basket_scale)
        return np.stack([spend, orders])

    values = draws(3, draw)  # (variant, spend or orders, replication, customer)

    # when comparing average order value (spend / orders) with the delta method
    def compare(r: int, with_effect: bool) -> MeanComparison:
        treated = 2 if with_effect else 1
        return compare_ratios(
            values[0, 0, r], values[0, 1, r], values[treated, 0, r], values[treated, 1, r]
        )

    # E[spend] / E[orders] = E[taste^2] / E[taste] x basket mean, taste lognormal(0, s)
    ratio = math.exp(1.5 * TASTE_SIGMA**2) * BASKET_SHAPE * BASKET_SCALE
    # then false positives and coverage are nominal
    assert_nominal(rates(compare, ratio * BASKET_LIFT, BASKET_LIFT))


RHO = 0.6


def test_cuped_is_calibrated_and_removes_rho_squared_of_the_variance() -> None:
    # given 1,000 fresh populations whose metric correlates RHO with its pre-period value
    rng = np.random.default_rng(4)
    pre = rng.normal(10.0, 2.0, (3, REPLICATIONS, N))
    noise = rng.normal(0.0, 2.0, (3, REPLICATIONS, N))
    metric = 20.0 + RHO * (pre - 10.0) + math.sqrt(1 - RHO**2) * noise
    effect = 0.1
    metric[2] += effect

    # when comparing each with CUPED
    def cuped(r: int, with_effect: bool) -> MeanComparison:
        treated = 2 if with_effect else 1
        return compare_cuped(metric[0, r], pre[0, r], metric[treated, r], pre[treated, r]).adjusted

    # then false positives and coverage are nominal
    assert_nominal(rates(cuped, effect, effect / 20.0))
    # and across the experiments the adjusted lift varies 1 - rho^2 times as much as the raw
    # one, within 10 %, as each experiment's variance reduction promises
    results = [
        compare_cuped(metric[0, r], pre[0, r], metric[2, r], pre[2, r]) for r in range(REPLICATIONS)
    ]
    adjusted = np.array([x.adjusted.absolute.estimate for x in results])
    raw = np.array([x.unadjusted.absolute.estimate for x in results])
    assert adjusted.var() / raw.var() == pytest.approx(1 - RHO**2, rel=0.1)
    reductions = np.array([x.variance_reduction for x in results])
    assert reductions.mean() == pytest.approx(RHO**2, rel=0.1)
