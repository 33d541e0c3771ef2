"""Welch, proportions, ratios and capping: against scipy, statsmodels and the bootstrap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from models.experiments.stats import (
    Summary,
    cap_at_percentile,
    compare_means,
    compare_proportions,
    compare_ratios,
    compare_summaries,
    summarize,
    summarize_ratio,
)
from tests.models.experiments.references import cookie_cats, run_reference

TOL = 1e-6


def scipy_welch(control: np.ndarray, treatment: np.ndarray) -> dict[str, float]:
    result = stats.ttest_ind(treatment, control, equal_var=False)
    ci = result.confidence_interval(0.95)
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "df": float(result.df),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
    }


# ----------------------------------------------------------------------------- Cookie Cats


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("metric", "cap"),
    [
        ("retention_1", None),
        ("retention_7", None),
        ("sum_gamerounds", None),
        ("sum_gamerounds", 99.0),
    ],
)
def test_welch_matches_scipy_on_cookie_cats(metric: str, cap: float | None) -> None:
    # given the Cookie Cats players, gate_30 as control and gate_40 as treatment
    data = cookie_cats()
    control, treatment = data.control[metric], data.treatment[metric]
    # when comparing the means (capped at the pooled 99th percentile where asked)
    result = compare_means(control, treatment, cap_percentile=cap)
    # then the test is scipy's Welch t-test on the same (capped) values, to 1e-6
    if cap is not None:
        threshold = np.percentile(np.concatenate([control, treatment]), cap)
        control, treatment = np.minimum(control, threshold), np.minimum(treatment, threshold)
    expected = scipy_welch(control, treatment)
    assert result.statistic == pytest.approx(expected["statistic"], abs=TOL)
    assert result.absolute.p_value == pytest.approx(expected["p_value"], abs=TOL)
    assert result.df == pytest.approx(expected["df"], rel=1e-9)
    assert result.absolute.ci_low == pytest.approx(expected["ci_low"], abs=TOL)
    assert result.absolute.ci_high == pytest.approx(expected["ci_high"], abs=TOL)
    assert result.absolute.estimate == pytest.approx(treatment.mean() - control.mean(), abs=1e-12)


@pytest.mark.realdata
def test_capping_cuts_the_heavy_tail_of_gamerounds_at_the_pooled_percentile() -> None:
    # given the rounds played, with one player at about 50,000 rounds
    data = cookie_cats()
    control, treatment = data.control["sum_gamerounds"], data.treatment["sum_gamerounds"]
    pooled = np.concatenate([control, treatment])
    # when capping at the 99th percentile of both variants together
    capped = cap_at_percentile(control, treatment, percentile=99.0)
    # then one threshold caps both, about 1% of the players are cut, and the rest is unchanged
    assert capped.cap == pytest.approx(np.percentile(pooled, 99.0))
    assert capped.n_capped == int(np.count_nonzero(pooled > capped.cap))
    assert 0.005 < capped.n_capped / pooled.size <= 0.01
    for before, after in zip((control, treatment), capped.samples, strict=True):
        assert after.max() <= capped.cap
        below = before <= capped.cap
        np.testing.assert_array_equal(after[below], before[below])
    # and the control's variance, which the outlier drove, drops to that of the treatment
    assert capped.samples[0].var() < 0.2 * control.var()
    assert capped.samples[0].var() == pytest.approx(capped.samples[1].var(), rel=0.05)


PROPORTION_REFERENCE = """
    from statsmodels.stats.proportion import proportions_ztest

    result = {}
    for metric, (count, nobs) in payload.items():
        z, p = proportions_ztest(count, nobs)
        result[metric] = {"z": float(z), "p_value": float(p)}
"""


@pytest.mark.realdata
def test_pooled_z_test_matches_statsmodels_on_cookie_cats(tmp_path: Path) -> None:
    # given the retention of the Cookie Cats players
    data = cookie_cats()
    metrics = ("retention_1", "retention_7")
    # when testing the proportions
    results = {m: compare_proportions(data.control[m], data.treatment[m]) for m in metrics}
    # then the pooled z-test is statsmodels' proportions_ztest of treatment vs control
    payload = {
        m: [
            [float(data.treatment[m].sum()), float(data.control[m].sum())],
            [data.treatment[m].size, data.control[m].size],
        ]
        for m in metrics
    }
    reference = run_reference(PROPORTION_REFERENCE, payload, tmp_path)
    for m in metrics:
        assert results[m].z_statistic == pytest.approx(reference[m]["z"], abs=TOL)
        assert results[m].z_p_value == pytest.approx(reference[m]["p_value"], abs=TOL)
    # and the retention on day 7 drops with the later gate, p < 0.01 (the known result)
    assert results["retention_7"].welch.absolute.estimate < 0
    assert results["retention_7"].z_p_value < 0.01


# ----------------------------------------------------------------------------- Welch


def test_welch_on_small_unequal_samples_matches_scipy() -> None:
    # given two small samples of very different spread and size
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(10, 1, 6), rng.normal(12, 5, 11)
    # when comparing them
    result = compare_means(control, treatment, alpha=0.1)
    # then the degrees of freedom, statistic, p-value and 90% interval are scipy's
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    ci = reference.confidence_interval(0.9)
    assert result.df == pytest.approx(float(reference.df), rel=1e-12)
    assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-12)
    assert result.absolute.p_value == pytest.approx(float(reference.pvalue), rel=1e-9)
    assert (result.absolute.ci_low, result.absolute.ci_high) == pytest.approx((ci.low, ci.high))


def test_relative_lift_uses_the_delta_method_and_the_absolute_p_value() -> None:
    # given summaries with control mean 10 and treatment mean 11
    control = Summary(n=1000, mean=10.0, variance=25.0)
    treatment = Summary(n=1200, mean=11.0, variance=36.0)
    # when comparing them under each convention
    standard = compare_summaries(control, treatment)
    gbstats = compare_summaries(control, treatment, convention="gbstats")
    # then the relative lift is 10% with the delta-method standard error
    se = math.sqrt(36 / (1200 * 100) + 25 * 121 / (1000 * 10**4))
    for result in (standard, gbstats):
        assert result.relative.estimate == pytest.approx(0.1)
        assert result.relative.standard_error == pytest.approx(se)
        half = stats.t.ppf(0.975, result.df) * se
        assert result.relative.ci_low == pytest.approx(0.1 - half)
    # and the standard p-value is the absolute test's, gbstats' that of the relative t
    assert standard.relative.p_value == standard.absolute.p_value
    assert gbstats.relative.p_value == pytest.approx(2 * stats.t.sf(0.1 / se, gbstats.df))
    assert gbstats.relative.p_value != pytest.approx(standard.relative.p_value, rel=1e-3)


def test_summary_from_sums_equals_the_summary_of_the_values() -> None:
    # given values and their pre-aggregated sums
    values = np.array([0.0, 3.0, 4.0, 10.0, 2.5])
    # when summarizing either way
    direct = summarize(values)
    aggregated = Summary.from_sums(values.size, values.sum(), (values**2).sum())
    # then they agree
    assert aggregated.mean == pytest.approx(direct.mean)
    assert aggregated.variance == pytest.approx(direct.variance)
    assert direct.standard_error == pytest.approx(values.std(ddof=1) / math.sqrt(5))


def test_gbstats_convention_gives_proportions_the_bernoulli_variance() -> None:
    # given 0/1 outcomes
    control = np.array([0, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    treatment = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 0], dtype=float)
    # when comparing them under each convention
    standard = compare_proportions(control, treatment)
    gbstats = compare_proportions(control, treatment, convention="gbstats")
    # then the variances are p (1 - p) (n - 1 based for standard)
    assert gbstats.welch.control.variance == pytest.approx(3 / 8 * 5 / 8)
    assert standard.welch.control.variance == pytest.approx(3 / 8 * 5 / 8 * 8 / 7)
    # and the pooled z-test does not depend on the convention
    assert gbstats.z_statistic == standard.z_statistic


@pytest.mark.parametrize(
    ("control", "treatment", "message"),
    [
        (np.ones((3, 2)), np.ones(4), "1-D"),
        ([1.0], [1.0, 2.0], "at least 2"),
        ([1.0, np.nan], [1.0, 2.0], "missing"),
        ([2.0, 2.0], [2.0, 2.0], "constant"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(
    control: object, treatment: object, message: str
) -> None:
    # given malformed per-customer values, when comparing, then the error says why
    with pytest.raises(ValueError, match=message):
        compare_means(control, treatment)  # type: ignore[arg-type]


def test_proportions_refuse_values_other_than_0_and_1() -> None:
    # given a "proportion" with a 2 in it, when comparing, then it is refused
    with pytest.raises(ValueError, match="0/1"):
        compare_proportions([0, 1, 2], [0, 1, 1])


def test_a_zero_control_mean_leaves_the_relative_lift_undefined() -> None:
    # given a control at 0 on average
    result = compare_means([-1.0, 1.0, 0.0], [1.0, 2.0, 3.0])
    # then the absolute lift is there and the relative one is NaN
    assert result.absolute.estimate == pytest.approx(2.0)
    assert math.isnan(result.relative.estimate)


# ----------------------------------------------------------------------------- ratios


def simulate_orders(
    rng: np.random.Generator, n: int, spend_per_order: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer (spend, orders): Poisson orders, lognormal baskets, a customer effect."""
    taste = rng.lognormal(0.0, 0.5, n)  # big spenders order more and buy bigger baskets
    orders = rng.poisson(1.5 * taste)
    spend = np.array([rng.lognormal(0, 0.6, k).sum() for k in orders]) * spend_per_order * taste
    return spend, orders.astype(float)


def test_delta_method_ratio_agrees_with_the_customer_bootstrap() -> None:
    # given simulated customers with spend and orders, baskets 5% bigger in treatment
    rng = np.random.default_rng(7)
    spend_c, orders_c = simulate_orders(rng, 3000, 40.0)
    spend_t, orders_t = simulate_orders(rng, 3000, 42.0)
    # when comparing average order value by the delta method
    result = compare_ratios(spend_c, orders_c, spend_t, orders_t)
    # then each ratio is the ratio of sums
    assert result.control.mean == pytest.approx(spend_c.sum() / orders_c.sum())
    # and the standard errors match a bootstrap over customers within 10%
    draws = 2000
    index_c = rng.integers(0, 3000, (draws, 3000))
    index_t = rng.integers(0, 3000, (draws, 3000))
    ratio_c = spend_c[index_c].sum(axis=1) / orders_c[index_c].sum(axis=1)
    ratio_t = spend_t[index_t].sum(axis=1) / orders_t[index_t].sum(axis=1)
    assert result.control.standard_error == pytest.approx(ratio_c.std(ddof=1), rel=0.1)
    assert result.absolute.standard_error == pytest.approx((ratio_t - ratio_c).std(), rel=0.1)
    assert result.relative.standard_error == pytest.approx(
        (ratio_t / ratio_c - 1).std(ddof=1), rel=0.1
    )


def test_ratio_variance_is_the_classic_delta_formula() -> None:
    # given a few customers' spend and orders
    spend = np.array([10.0, 0.0, 35.0, 22.0, 8.0, 60.0])
    orders = np.array([1.0, 0.0, 2.0, 2.0, 1.0, 3.0])
    # when summarizing the ratio
    summary = summarize_ratio(spend, orders)
    # then its variance is var(m)/mu_d^2 - 2 cov mu_m/mu_d^3 + mu_m^2 var(d)/mu_d^4
    mu_m, mu_d = spend.mean(), orders.mean()
    cov = np.cov(spend, orders, ddof=1)
    expected = cov[0, 0] / mu_d**2 - 2 * cov[0, 1] * mu_m / mu_d**3 + mu_m**2 * cov[1, 1] / mu_d**4
    assert summary.variance == pytest.approx(expected)
    assert summary.mean == pytest.approx(135 / 9)


def test_delta_method_relative_lift_of_means_agrees_with_the_bootstrap() -> None:
    # given skewed spend per customer, 8% higher in treatment
    rng = np.random.default_rng(11)
    control, treatment = rng.gamma(0.8, 50.0, 4000), rng.gamma(0.8, 54.0, 5000)
    # when comparing the means
    result = compare_means(control, treatment)
    # then the relative lift's standard error matches the bootstrap within 10%
    draws = 2000
    boot_c = control[rng.integers(0, control.size, (draws, control.size))].mean(axis=1)
    boot_t = treatment[rng.integers(0, treatment.size, (draws, treatment.size))].mean(axis=1)
    assert result.relative.standard_error == pytest.approx(
        (boot_t / boot_c - 1).std(ddof=1), rel=0.1
    )
