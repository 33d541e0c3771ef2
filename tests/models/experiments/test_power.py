"""Power and duration: against statsmodels, by simulation, and with CUPED."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.experiments.power import days_needed, minimum_detectable_effect, plan_experiment
from models.experiments.stats import Summary, compare_summaries
from tests.models.experiments.references import run_reference

NORMAL_POWER = """
    from statsmodels.stats.power import NormalIndPower

    result = {"cases": []}
    for case in payload["cases"]:
        power = NormalIndPower().power
        common = {"effect_size": case["effect"], "nobs1": case["n_control"],
                  "ratio": case["ratio"]}
        one_sided = power(alpha=case["alpha"] / 2, alternative="larger", **common)
        two_sided = power(alpha=case["alpha"], alternative="two-sided", **common)
        result["cases"].append({"one_sided": float(one_sided), "two_sided": float(two_sided)})
"""

PLANS = [
    # daily customers, days, baseline mean, variance (None: proportion), alpha, power, share
    (1000, 14, 0.12, None, 0.05, 0.8, 0.5),
    (250, 30, 42.0, 900.0, 0.05, 0.9, 0.5),
    (5000, 7, 0.03, None, 0.01, 0.8, 0.2),
    (80, 21, 120.0, 1.6e4, 0.1, 0.8, 0.7),
]


def test_the_mde_has_the_promised_power_in_statsmodels(tmp_path: Path) -> None:
    # given several plans: traffic, duration, baseline, alpha, power, allocation
    plans = [
        minimum_detectable_effect(
            daily_customers=daily,
            days=days,
            baseline_mean=mean,
            baseline_variance=variance,
            alpha=alpha,
            power=power,
            treatment_share=share,
        )
        for daily, days, mean, variance, alpha, power, share in PLANS
    ]
    # when statsmodels computes the power of the same samples at the MDE (in sd units)
    payload = [
        {
            "effect": plan.mde_absolute / math.sqrt(plan.variance),
            "n_control": plan.n_control,
            "ratio": plan.n_treatment / plan.n_control,
            "alpha": plan.alpha,
        }
        for plan in plans
    ]
    reference = run_reference(NORMAL_POWER, {"cases": payload}, tmp_path)
    for plan, theirs in zip(plans, reference["cases"], strict=True):
        # then it is the promised power for the one-sided test at alpha / 2
        assert theirs["one_sided"] == pytest.approx(plan.power, abs=1e-9)
        # and barely more for the two-sided test, which also counts the far tail
        assert plan.power <= theirs["two_sided"] <= plan.power + 1e-4


def test_a_proportion_takes_p_one_minus_p_and_a_relative_mde() -> None:
    # given 1,000 customers a day for 14 days on a 12% conversion, 50/50
    plan = minimum_detectable_effect(daily_customers=1000, days=14, baseline_mean=0.12)
    # then the MDE is (1.96 + 0.84) sqrt(0.12 x 0.88 x 4 / 14,000)
    expected = (1.959964 + 0.841621) * math.sqrt(0.12 * 0.88 * 4 / 14_000)
    assert plan.mde_absolute == pytest.approx(expected, rel=1e-6)
    assert plan.mde_relative == pytest.approx(expected / 0.12)
    assert plan.n_control == plan.n_treatment == 7000


def test_cuped_shrinks_the_mde_by_sqrt_one_minus_rho_squared_and_the_days_by_that_squared() -> None:
    # given a plan on spend with and without a covariate correlated 0.6
    common = {"daily_customers": 300, "baseline_mean": 40.0, "baseline_variance": 2500.0}
    raw = minimum_detectable_effect(days=28, **common)
    cuped = minimum_detectable_effect(days=28, cuped_rho=0.6, **common)
    # then the MDE shrinks by sqrt(1 - 0.36) = 0.8
    assert cuped.mde_absolute == pytest.approx(0.8 * raw.mde_absolute)
    # and a 5% lift needs about 64% of the days
    days_raw = days_needed(0.05, relative=True, **common).days
    days_cuped = days_needed(0.05, relative=True, cuped_rho=0.6, **common).days
    assert days_cuped == pytest.approx(0.64 * days_raw, abs=1)


def test_days_needed_is_the_first_day_that_detects_the_effect() -> None:
    # given a target of +2 on a metric with variance 400 and 150 customers a day
    common = {"daily_customers": 150, "baseline_mean": 50.0, "baseline_variance": 400.0}
    # when asking for the days needed
    plan = days_needed(2.0, relative=False, **common)
    # then its MDE is at most 2, and one day less would not do
    assert plan.mde_absolute <= 2.0
    shorter = minimum_detectable_effect(days=plan.days - 1, **common)
    assert shorter.mde_absolute > 2.0


def test_a_plan_detects_its_mde_with_the_promised_power() -> None:
    # given a plan of 20 days at 100 customers a day on a skewed metric (mean 5, variance 25)
    plan = minimum_detectable_effect(
        daily_customers=100, days=20, baseline_mean=5.0, baseline_variance=25.0
    )
    n = int(plan.n_control)
    # when simulating 2,000 experiments whose true lift is the MDE
    rng = np.random.default_rng(9)
    control = rng.exponential(5.0, (2000, n))
    treatment = rng.exponential(5.0, (2000, n)) + plan.mde_absolute
    significant = [
        compare_summaries(
            Summary(n, c.mean(), c.var(ddof=1)), Summary(n, t.mean(), t.var(ddof=1))
        ).absolute.p_value
        < 0.05
        for c, t in zip(control, treatment, strict=True)
    ]
    # then Welch's test finds it in about 80% of them
    assert np.mean(significant) == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline_mean": 1.5}, "proportion"),
        ({"baseline_mean": 5.0, "baseline_variance": -1.0}, "variance"),
        ({"baseline_mean": 0.1, "treatment_share": 1.0}, "treatment_share"),
        ({"baseline_mean": 0.1, "cuped_rho": 1.0}, "cuped_rho"),
        ({"baseline_mean": 0.1, "power": 0.0}, "power"),
    ],
)
def test_impossible_plans_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        minimum_detectable_effect(daily_customers=100, days=10, **kwargs)


def test_one_entry_point_gives_the_mde_or_the_days() -> None:
    given = {"daily_customers": 500.0, "baseline_mean": 0.1, "cuped_rho": 0.3}
    by_days = plan_experiment(days=21, **given)
    assert by_days == minimum_detectable_effect(days=21, **given)
    by_mde = plan_experiment(mde=0.1, **given)
    assert by_mde == days_needed(0.1, relative=True, **given)
    absolute = plan_experiment(mde=0.01, relative=False, **given)
    assert absolute == days_needed(0.01, relative=False, **given)
    with pytest.raises(ValueError, match="exactly one of days"):
        plan_experiment(days=21, mde=0.1, **given)
