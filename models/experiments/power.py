"""Power and duration: the minimum detectable effect of a plan, and the days a target needs.

The normal approximation of a two-sided test of the difference of means at level alpha:

    MDE = (z_{1 - alpha/2} + z_{power}) * sqrt(sigma^2 / (N w (1 - w)))

with N = customers entering per day x days (each day brings new customers, the unit of
analysis; repeat visitors do not add to N), w the treatment's share, and sigma^2 the
per-customer variance of the metric: given, or p (1 - p) for a proportion p. CUPED with a
covariate correlated rho with the metric multiplies sigma^2 by 1 - rho^2. The far tail's
tiny contribution to power (a significant result of the wrong sign) is ignored, as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from models.experiments.stats import check_alpha


@dataclass(frozen=True)
class PowerPlan:
    """An experiment plan and the effect it can detect.

    Attributes:
        days: duration.
        n_control: customers in control over the duration.
        n_treatment: customers in treatment.
        variance: per-customer variance used, after CUPED.
        mde_absolute: minimum detectable effect, in the metric's units.
        mde_relative: the same over the baseline mean (NaN for a zero baseline).
        alpha: two-sided level of the test.
        power: probability of detecting an effect of exactly the MDE.
    """

    days: float
    n_control: float
    n_treatment: float
    variance: float
    mde_absolute: float
    mde_relative: float
    alpha: float
    power: float


def metric_variance(
    baseline_mean: float, baseline_variance: float | None, cuped_rho: float
) -> float:
    """Per-customer variance after CUPED; a proportion's p (1 - p) when no variance is given."""
    if not -1 < cuped_rho < 1:
        raise ValueError(f"cuped_rho must be in (-1, 1), got {cuped_rho}")
    if baseline_variance is None:
        if not 0 < baseline_mean < 1:
            raise ValueError(f"a proportion's baseline must be in (0, 1), got {baseline_mean}")
        baseline_variance = baseline_mean * (1 - baseline_mean)
    if baseline_variance <= 0:
        raise ValueError(f"baseline_variance must be > 0, got {baseline_variance}")
    return baseline_variance * (1 - cuped_rho**2)


def z_sum(alpha: float, power: float) -> float:
    """z_{1 - alpha/2} + z_{power}: the effect in standard errors that a plan detects."""
    check_alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


def check_share(treatment_share: float) -> None:
    """Refuse a treatment share outside (0, 1)."""
    if not 0 < treatment_share < 1:
        raise ValueError(f"treatment_share must be in (0, 1), got {treatment_share}")


def minimum_detectable_effect(
    *,
    daily_customers: float,
    days: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    treatment_share: float = 0.5,
    cuped_rho: float = 0.0,
) -> PowerPlan:
    """Minimum detectable effect of a plan.

    Args:
        daily_customers: new customers entering the experiment per day (all variants).
        days: duration.
        baseline_mean: the metric's mean in control (a proportion if no variance is given).
        baseline_variance: per-customer variance; None for a proportion (p (1 - p)).
        alpha: two-sided level.
        power: probability of detecting an effect of the MDE.
        treatment_share: share of customers in treatment (the rest in control).
        cuped_rho: correlation of the metric with its CUPED covariate (0: no CUPED).

    Returns:
        The plan with its absolute and relative MDE.
    """
    check_share(treatment_share)
    if daily_customers <= 0 or days <= 0:
        raise ValueError(f"daily_customers and days must be > 0, got {daily_customers}, {days}")
    variance = metric_variance(baseline_mean, baseline_variance, cuped_rho)
    n_total = daily_customers * days
    shares = treatment_share * (1 - treatment_share)
    mde = z_sum(alpha, power) * math.sqrt(variance / (n_total * shares))
    return PowerPlan(
        days=days,
        n_control=n_total * (1 - treatment_share),
        n_treatment=n_total * treatment_share,
        variance=variance,
        mde_absolute=mde,
        mde_relative=mde / abs(baseline_mean) if baseline_mean != 0 else math.nan,
        alpha=alpha,
        power=power,
    )


def days_needed(
    mde: float,
    *,
    relative: bool,
    daily_customers: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    treatment_share: float = 0.5,
    cuped_rho: float = 0.0,
) -> PowerPlan:
    """Whole days needed to detect a given effect, and the plan they give.

    Args:
        mde: the effect to detect (> 0).
        relative: whether `mde` is relative to the baseline mean (0.02 = +2%) or absolute.
        daily_customers: new customers entering the experiment per day (all variants).
        baseline_mean: the metric's mean in control (a proportion if no variance is given).
        baseline_variance: per-customer variance; None for a proportion (p (1 - p)).
        alpha: two-sided level.
        power: probability of detecting an effect of the MDE.
        treatment_share: share of customers in treatment.
        cuped_rho: correlation of the metric with its CUPED covariate (0: no CUPED).

    Returns:
        The plan at the smallest whole number of days whose MDE is at most `mde`.
    """
    check_share(treatment_share)
    if mde <= 0 or daily_customers <= 0:
        raise ValueError(f"mde and daily_customers must be > 0, got {mde}, {daily_customers}")
    if relative and baseline_mean == 0:
        raise ValueError("a relative mde needs a non-zero baseline mean")
    absolute = mde * abs(baseline_mean) if relative else mde
    variance = metric_variance(baseline_mean, baseline_variance, cuped_rho)
    shares = treatment_share * (1 - treatment_share)
    n_total = (z_sum(alpha, power) / absolute) ** 2 * variance / shares
    # the small epsilon keeps an exact whole number of days from rounding up a day
    days = max(math.ceil(n_total / daily_customers - 1e-9), 1)
    return minimum_detectable_effect(
        daily_customers=daily_customers,
        days=days,
        baseline_mean=baseline_mean,
        baseline_variance=baseline_variance,
        alpha=alpha,
        power=power,
        treatment_share=treatment_share,
        cuped_rho=cuped_rho,
    )


def plan_experiment(
    *,
    daily_customers: float,
    baseline_mean: float,
    baseline_variance: float | None = None,
    days: float | None = None,
    mde: float | None = None,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    treatment_share: float = 0.5,
    cuped_rho: float = 0.0,
) -> PowerPlan:
    """The MDE of a duration, or the days an effect needs: exactly one of `days` and `mde`.

    The CLI's and the report's single entry point to `minimum_detectable_effect` (given
    `days`) and `days_needed` (given `mde`, relative to the baseline unless `relative` is
    False); every other argument means what it means there.

    Returns:
        The plan.

    Raises:
        ValueError: when both or neither of `days` and `mde` are given, or an input is out
            of range.
    """
    if (days is None) == (mde is None):
        raise ValueError("give exactly one of days (for the MDE) and mde (for the days)")
    shared = {
        "daily_customers": daily_customers,
        "baseline_mean": baseline_mean,
        "alpha": alpha,
        "power": power,
        "treatment_share": treatment_share,
        "cuped_rho": cuped_rho,
    }
    if days is not None:
        return minimum_detectable_effect(days=days, baseline_variance=baseline_variance, **shared)
    return days_needed(mde or 0.0, relative=relative, baseline_variance=baseline_variance, **shared)
