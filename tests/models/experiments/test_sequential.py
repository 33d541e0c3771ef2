"""Always-valid intervals: daily peeks at A/A tests cross 0 in under 5 % of them, unlike Welch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.experiments.analysis import AnalysisOptions
from models.experiments.sequential import (
    always_valid_lift,
    mixture_rho,
    sequential_from_summaries,
    sequential_means,
)
from models.experiments.stats import Summary, compare_summaries

RUNS = 1_000
DAYS = 28  # one look a day for four weeks
DAILY = 100  # new customers per variant per day


def daily_summaries(values: np.ndarray) -> list[list[Summary]]:
    """Each run's cumulative summary at the end of each day, from (runs, days * daily) values."""
    days = values.reshape(RUNS, DAYS, DAILY)
    totals = np.cumsum(days.sum(axis=2), axis=1)
    squares = np.cumsum((days**2).sum(axis=2), axis=1)
    return [
        [Summary.from_sums((d + 1) * DAILY, totals[r, d], squares[r, d]) for d in range(DAYS)]
        for r in range(RUNS)
    ]


def test_peeking_daily_at_a_a_tests_keeps_always_valid_false_positives_under_5_percent() -> None:
    # given 1,000 A/A experiments on a skewed metric, fresh customers every day for 4 weeks,
    # looked at every day, with the analysis' default tuning (5,000 customers in total)
    rng = np.random.default_rng(20)
    control = daily_summaries(rng.exponential(10.0, (RUNS, DAYS * DAILY)))
    treatment = daily_summaries(rng.exponential(10.0, (RUNS, DAYS * DAILY)))
    tuning_n = AnalysisOptions().tuning_n

    # when stopping at the first day whose interval excludes 0
    def ever_crosses(run: int, *, sequential: bool) -> bool:
        for c, t in zip(control[run], treatment[run], strict=True):
            lift = (
                sequential_from_summaries(c, t, tuning_n=tuning_n).absolute
                if sequential
                else compare_summaries(c, t).absolute
            )
            if lift.ci_low > 0 or lift.ci_high < 0:
                return True
        return False

    always_valid = sum(ever_crosses(r, sequential=True) for r in range(RUNS))
    fixed = sum(ever_crosses(r, sequential=False) for r in range(RUNS))
    # then the always-valid intervals wrongly exclude 0 in under 5 % of the experiments,
    # significantly so (one-sided binomial test against 5 %, p < 0.001)
    assert always_valid / RUNS < 0.05
    assert stats.binomtest(always_valid, RUNS, 0.05, alternative="less").pvalue < 0.001
    # while the fixed-horizon Welch interval, peeked at daily, does so far more than 5 %
    assert fixed / RUNS > 0.15
    assert fixed > 3 * always_valid


def test_the_interval_is_wider_than_the_fixed_one_and_agrees_with_its_p_value() -> None:
    # given one comparison at several sample sizes
    rng = np.random.default_rng(8)
    control, treatment = rng.normal(0, 1, 4000), rng.normal(0.08, 1, 4000)
    for n in (100, 500, 2000, 4000):
        # when computing the always-valid and fixed-horizon intervals
        sequential = sequential_means(control[:n], treatment[:n], tuning_n=8000).absolute
        fixed = compare_summaries(
            Summary(n, control[:n].mean(), control[:n].var(ddof=1)),
            Summary(n, treatment[:n].mean(), treatment[:n].var(ddof=1)),
        ).absolute
        # then the always-valid one contains the fixed one
        assert sequential.ci_low < fixed.ci_low < fixed.ci_high < sequential.ci_high
        # and its p-value is below alpha exactly when it excludes 0
        excludes = sequential.ci_low > 0 or sequential.ci_high < 0
        assert (sequential.p_value < 0.05) == excludes
        assert sequential.p_value >= fixed.p_value


def test_the_half_width_is_the_normal_mixture_boundary() -> None:
    # given a standard error of 1 after 1000 customers, tuned for 1000
    lift = always_valid_lift(0.0, 1.0, 1000, alpha=0.05, tuning_n=1000)
    # then the half-width is sqrt(2 (N rho^2 + 1) / (N rho^2) log(sqrt(N rho^2 + 1) / alpha))
    n_rho2 = 1000 * mixture_rho(0.05, 1000) ** 2
    expected = math.sqrt(2 * (n_rho2 + 1) / n_rho2 * math.log(math.sqrt(n_rho2 + 1) / 0.05))
    assert lift.ci_high == pytest.approx(expected)
    # and at the tuning size the mixture precision makes N rho^2 = -2 log a + log(1 - 2 log a)
    assert n_rho2 == pytest.approx(-2 * math.log(0.05) + math.log(1 - 2 * math.log(0.05)))
    assert lift.p_value == 1.0


def test_the_interval_is_narrowest_relative_to_the_fixed_one_near_the_tuning_size() -> None:
    # given a standard error of 1, when varying the total sample size around tuning_n
    def ratio(n: int) -> float:
        return always_valid_lift(0.0, 1.0, n, alpha=0.05, tuning_n=5000).ci_high

    # then the multiplier of the standard error is smallest near tuning_n
    multipliers = {n: ratio(n) for n in (500, 2000, 5000, 12_000, 50_000)}
    assert min(multipliers, key=multipliers.__getitem__) == 5000


def test_huge_effects_give_a_p_value_of_zero_not_an_overflow() -> None:
    # given an estimate 1000 standard errors away from 0
    lift = always_valid_lift(1000.0, 1.0, 10_000, alpha=0.05, tuning_n=5000)
    # then the always-valid p-value is 0
    assert lift.p_value == 0.0
