"""Agreement with GrowthBook's gbstats 0.8 (run in an isolated env), to 1e-6.

Cookie Cats (gate_30 control, gate_40 treatment) on retention_1 and retention_7
(proportions), sum_gamerounds (a mean with a heavy tail) and sum_gamerounds capped at the
pooled 99th percentile: frequentist, sequential and Bayesian results, relative and absolute,
and the SRM p-value. Then, on simulated data, ratio metrics and CUPED.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.experiments.bayes import (
    BayesianComparison,
    bayesian_from_summaries,
    bayesian_means,
    bayesian_proportions,
)
from models.experiments.cuped import compare_cuped
from models.experiments.sequential import (
    SequentialComparison,
    sequential_means,
    sequential_proportions,
)
from models.experiments.srm import check_srm
from models.experiments.stats import (
    Lift,
    MeanComparison,
    cap_at_percentile,
    compare_means,
    compare_proportions,
    compare_ratios,
    summarize_ratio,
)
from tests.models.experiments.references import cookie_cats, run_reference

TOL = 1e-6
TUNING_N = 5000.0
DIFFERENCES = ("relative", "absolute")

# each metric: its source column, whether it is a proportion, and its capping percentile
COOKIE_METRICS: dict[str, tuple[str, bool, float | None]] = {
    "retention_1": ("retention_1", True, None),
    "retention_7": ("retention_7", True, None),
    "sum_gamerounds": ("sum_gamerounds", False, None),
    "sum_gamerounds_capped": ("sum_gamerounds", False, 99.0),
}

GBSTATS_SCRIPT = """
    import numpy as np
    from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
    from gbstats.frequentist.tests import (
        FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest,
    )
    from gbstats.models.statistics import (
        ProportionStatistic, RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic,
    )
    from gbstats.utils import check_srm

    def mean_stat(x):
        x = np.asarray(x, dtype=float)
        return SampleMeanStatistic(n=x.size, sum=float(x.sum()), sum_squares=float((x**2).sum()))

    def stat(x, binomial):
        if binomial:
            return ProportionStatistic(n=len(x), sum=float(np.sum(x)))
        return mean_stat(x)

    def ratio_stat(m, d):
        m, d = np.asarray(m, dtype=float), np.asarray(d, dtype=float)
        return RatioStatistic(
            n=m.size, m_statistic=mean_stat(m), d_statistic=mean_stat(d),
            m_d_sum_of_products=float((m * d).sum()),
        )

    def ra_stat(y, x):
        y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
        return RegressionAdjustedStatistic(
            n=y.size, post_statistic=mean_stat(y), pre_statistic=mean_stat(x),
            post_pre_sum_of_products=float((y * x).sum()), theta=0,
        )

    def frequentist(a, b, difference):
        r = TwoSidedTTest(a, b, FrequentistConfig(difference_type=difference)).compute_result()
        return {"expected": r.expected, "ci": list(r.ci), "p_value": r.p_value,
                "stddev": r.uplift.stddev}

    def sequential(a, b, difference):
        config = SequentialConfig(
            difference_type=difference, sequential_tuning_parameter=payload["tuning_n"]
        )
        r = SequentialTwoSidedTTest(a, b, config).compute_result()
        return {"expected": r.expected, "ci": list(r.ci), "p_value": r.p_value}

    def bayesian(a, b, difference):
        config = EffectBayesianConfig(difference_type=difference)
        r = EffectBayesianABTest(a, b, config).compute_result()
        return {"expected": r.expected, "ci": list(r.ci), "chance_to_win": r.chance_to_win,
                "risk": list(r.risk), "stddev": r.uplift.stddev}

    result = {"cookie": {}}
    for name, spec in payload.get("cookie", {}).items():
        a_values, b_values = np.asarray(spec["control"]), np.asarray(spec["treatment"])
        if spec["cap"] is not None:
            cap = np.percentile(np.concatenate([a_values, b_values]), spec["cap"])
            a_values, b_values = np.minimum(a_values, cap), np.minimum(b_values, cap)
        a, b = stat(a_values, spec["binomial"]), stat(b_values, spec["binomial"])
        result["cookie"][name] = {
            d: {"frequentist": frequentist(a, b, d), "sequential": sequential(a, b, d),
                "bayesian": bayesian(a, b, d)}
            for d in ("relative", "absolute")
        }
    if "srm" in payload:
        result["srm_p"] = float(check_srm(payload["srm"]["users"], payload["srm"]["weights"]))

    if "ratio" in payload:
        ratio = payload["ratio"]
        a = ratio_stat(ratio["m_control"], ratio["d_control"])
        b = ratio_stat(ratio["m_treatment"], ratio["d_treatment"])
        result["ratio"] = {
            d: {"frequentist": frequentist(a, b, d), "bayesian": bayesian(a, b, d)}
            for d in ("relative", "absolute")
        }

    if "cuped" in payload:
        cuped = payload["cuped"]
        a = ra_stat(cuped["y_control"], cuped["x_control"])
        b = ra_stat(cuped["y_treatment"], cuped["x_treatment"])
        test = TwoSidedTTest(a, b, FrequentistConfig(difference_type="absolute"))
        result["cuped"] = {"theta": test.stat_a.theta, "absolute": frequentist(a, b, "absolute")}
"""


def simulated_ratio(rng: np.random.Generator, n: int, basket: float) -> dict[str, list[float]]:
    orders = rng.poisson(2.0, n).astype(float)
    spend = orders * rng.gamma(2.0, basket / 2.0, n)
    return {"m": spend.tolist(), "d": orders.tolist()}


def simulated_cuped(rng: np.random.Generator, n: int, effect: float) -> dict[str, list[float]]:
    pre = rng.gamma(2.0, 20.0, n)
    post = 0.8 * pre + rng.normal(10.0 + effect, 15.0, n)
    return {"y": post.tolist(), "x": pre.tolist()}


@pytest.fixture(scope="module")
def cookie_payload() -> dict[str, Any]:
    data = cookie_cats()
    return {
        "cookie": {
            name: {
                "control": data.control[column].tolist(),
                "treatment": data.treatment[column].tolist(),
                "binomial": binomial,
                "cap": cap,
            }
            for name, (column, binomial, cap) in COOKIE_METRICS.items()
        },
        "tuning_n": TUNING_N,
        "srm": {
            "users": [data.control["retention_1"].size, data.treatment["retention_1"].size],
            "weights": [0.5, 0.5],
        },
    }


@pytest.fixture(scope="module")
def simulated_payload() -> dict[str, Any]:
    rng = np.random.default_rng(2024)
    ratio_c, ratio_t = simulated_ratio(rng, 3000, 40.0), simulated_ratio(rng, 3500, 42.0)
    cuped_c, cuped_t = simulated_cuped(rng, 4000, 0.0), simulated_cuped(rng, 4000, 1.0)
    return {
        "ratio": {
            "m_control": ratio_c["m"],
            "d_control": ratio_c["d"],
            "m_treatment": ratio_t["m"],
            "d_treatment": ratio_t["d"],
        },
        "cuped": {
            "y_control": cuped_c["y"],
            "x_control": cuped_c["x"],
            "y_treatment": cuped_t["y"],
            "x_treatment": cuped_t["x"],
        },
    }


@pytest.fixture(scope="module")
def gbstats_cookie(
    cookie_payload: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_reference(GBSTATS_SCRIPT, cookie_payload, tmp_path_factory.mktemp("gbstats"))


@pytest.fixture(scope="module")
def gbstats_simulated(
    simulated_payload: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_reference(GBSTATS_SCRIPT, simulated_payload, tmp_path_factory.mktemp("gbstats"))


def assert_lift(ours: Lift, theirs: dict[str, Any]) -> None:
    assert ours.estimate == pytest.approx(theirs["expected"], abs=TOL)
    assert [ours.ci_low, ours.ci_high] == pytest.approx(theirs["ci"], abs=TOL)
    assert ours.p_value == pytest.approx(theirs["p_value"], abs=TOL)
    if "stddev" in theirs:
        assert ours.standard_error == pytest.approx(theirs["stddev"], abs=TOL)


def assert_bayesian(ours: BayesianComparison, difference: str, theirs: dict[str, Any]) -> None:
    posterior = ours.relative if difference == "relative" else ours.absolute
    assert posterior.mean == pytest.approx(theirs["expected"], abs=TOL)
    assert posterior.sd == pytest.approx(theirs["stddev"], abs=TOL)
    assert [posterior.ci_low, posterior.ci_high] == pytest.approx(theirs["ci"], abs=TOL)
    assert posterior.chance_to_win == pytest.approx(theirs["chance_to_win"], abs=TOL)
    # gbstats' risk is [loss of keeping control, loss of shipping treatment]
    assert [posterior.expected_loss_control, posterior.expected_loss] == pytest.approx(
        theirs["risk"], abs=TOL
    )


def ours_on_cookie_cats(
    name: str,
) -> tuple[MeanComparison, SequentialComparison, BayesianComparison]:
    """Our frequentist (gbstats convention), sequential and Bayesian results on one metric."""
    column, binomial, cap = COOKIE_METRICS[name]
    data = cookie_cats()
    control, treatment = data.control[column], data.treatment[column]
    if binomial:
        return (
            compare_proportions(control, treatment, convention="gbstats").welch,
            sequential_proportions(control, treatment, tuning_n=TUNING_N),
            bayesian_proportions(control, treatment),
        )
    if cap is not None:
        control, treatment = cap_at_percentile(control, treatment, percentile=cap).samples
    return (
        compare_means(control, treatment, convention="gbstats"),
        sequential_means(control, treatment, tuning_n=TUNING_N),
        bayesian_means(control, treatment),
    )


@pytest.mark.realdata
@pytest.mark.parametrize("difference", DIFFERENCES)
@pytest.mark.parametrize("metric", list(COOKIE_METRICS))
def test_cookie_cats_matches_gbstats(
    gbstats_cookie: dict[str, Any], metric: str, difference: str
) -> None:
    # given gbstats' results on one Cookie Cats metric (capping done on its side)
    theirs = gbstats_cookie["cookie"][metric][difference]
    # when analysing the same metric here
    frequentist, sequential, bayesian = ours_on_cookie_cats(metric)
    # then the frequentist lift, interval and p-value (gbstats convention) agree to 1e-6
    assert_lift(getattr(frequentist, difference), theirs["frequentist"])
    # and so do the always-valid interval and p-value of the sequential test
    assert_lift(getattr(sequential, difference), theirs["sequential"])
    # and the Bayesian chance to win, expected losses and credible interval
    assert_bayesian(bayesian, difference, theirs["bayesian"])


@pytest.mark.realdata
def test_cookie_cats_srm_matches_gbstats(gbstats_cookie: dict[str, Any]) -> None:
    # given the 44,700 vs 45,489 players of a 50/50 design
    data = cookie_cats()
    observed = [data.control["retention_1"].size, data.treatment["retention_1"].size]
    # when checking the sample ratio
    srm = check_srm(observed, [0.5, 0.5])
    # then the p-value is gbstats' (about 0.009), and not a mismatch at 0.001
    assert srm.p_value == pytest.approx(gbstats_cookie["srm_p"], abs=TOL)
    assert 0.005 < srm.p_value < 0.01
    assert not srm.mismatch


@pytest.mark.parametrize("difference", DIFFERENCES)
def test_ratio_metric_matches_gbstats(
    gbstats_simulated: dict[str, Any], simulated_payload: dict[str, Any], difference: str
) -> None:
    # given simulated spend and orders per customer (average order value)
    ratio = simulated_payload["ratio"]
    args = (ratio["m_control"], ratio["d_control"], ratio["m_treatment"], ratio["d_treatment"])
    # when comparing the ratios by the delta method
    frequentist = compare_ratios(*args, convention="gbstats")
    bayesian = bayesian_from_summaries(summarize_ratio(*args[:2]), summarize_ratio(*args[2:]))
    # then gbstats' ratio statistic gives the same lift, interval, p-value and posterior
    assert_lift(
        getattr(frequentist, difference), gbstats_simulated["ratio"][difference]["frequentist"]
    )
    assert_bayesian(bayesian, difference, gbstats_simulated["ratio"][difference]["bayesian"])


def test_cuped_matches_gbstats_regression_adjustment(
    gbstats_simulated: dict[str, Any], simulated_payload: dict[str, Any]
) -> None:
    # given a simulated metric with its pre-period value
    cuped = simulated_payload["cuped"]
    # when comparing with CUPED
    result = compare_cuped(
        cuped["y_control"], cuped["x_control"], cuped["y_treatment"], cuped["x_treatment"]
    )
    # then theta and the adjusted absolute lift are gbstats' regression adjustment
    assert result.theta == pytest.approx(gbstats_simulated["cuped"]["theta"], abs=TOL)
    assert_lift(result.adjusted.absolute, gbstats_simulated["cuped"]["absolute"])
