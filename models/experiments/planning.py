"""The power plan of an analysed experiment: what its traffic could detect, and in how long.

For each variant's primary lift: customers per day in the comparison (control and variant)
over the analysis window, the control's mean and per-customer variance, and the treatment's
share give, through `power.plan_experiment`:

- the minimum detectable effect at the experiment's duration, without CUPED and with it
  (rho = sqrt of the variance reduction CUPED achieved on this metric);
- the days the observed lift would need to be detected with the planned power.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from models.experiments.analysis import ExperimentAnalysis, MetricLift
from models.experiments.power import PowerPlan, plan_experiment


@dataclass(frozen=True)
class VariantPlan:
    """What one variant's traffic could detect on a metric.

    Attributes:
        variant: the variant compared with the control.
        days: the experiment's duration.
        customers: customers in the comparison (control and variant, with a value).
        baseline: the control's mean.
        plain: the plan at this duration without CUPED.
        cuped: the same with CUPED at the observed correlation (None: no CUPED).
        needed: the plan that detects the observed lift, without CUPED (None: no lift).
        needed_cuped: the same with CUPED.
        observed: the size of the observed absolute lift.
        rho: the correlation CUPED found (sqrt of its variance reduction; 0 without).
    """

    variant: str
    days: float
    customers: int
    baseline: float
    plain: PowerPlan
    cuped: PowerPlan | None
    needed: PowerPlan | None
    needed_cuped: PowerPlan | None
    observed: float
    rho: float


def duration_days(analysis: ExperimentAnalysis) -> float:
    """The analysis window in days (at least 1)."""
    design = analysis.design
    return max((design.end - design.start).total_seconds() / 86_400, 1.0)


def cuped_rho(lift: MetricLift) -> float:
    """The correlation CUPED worked with: sqrt of its variance reduction (0 without CUPED)."""
    if lift.cuped is None or lift.cuped_message is not None:
        return 0.0
    return min(math.sqrt(max(lift.cuped.variance_reduction, 0.0)), 0.999)


def variant_plan(lift: MetricLift, days: float, alpha: float, power: float) -> VariantPlan | None:
    """The power plan of one variant's lift (None when it was not estimated).

    Args:
        lift: the metric's lift for the variant.
        days: the experiment's duration.
        alpha: two-sided level of the test.
        power: the power to plan for.

    Returns:
        The plan, or None when the lift was not estimated or the control has no variance.
    """
    if lift.comparison is None or lift.comparison.control.variance <= 0:
        return None
    control, treatment = lift.comparison.control, lift.comparison.treatment
    customers = control.n + treatment.n
    plan = functools.partial(
        plan_experiment,
        daily_customers=customers / days,
        baseline_mean=control.mean,
        baseline_variance=control.variance,
        alpha=alpha,
        power=power,
        treatment_share=treatment.n / customers,
    )
    observed = abs(lift.absolute.estimate)
    rho = cuped_rho(lift)
    with_cuped = rho > 0
    detectable = observed > 0
    return VariantPlan(
        variant=lift.variant,
        days=days,
        customers=customers,
        baseline=control.mean,
        plain=plan(days=days),
        cuped=plan(days=days, cuped_rho=rho) if with_cuped else None,
        needed=plan(mde=observed, relative=False) if detectable else None,
        needed_cuped=(
            plan(mde=observed, relative=False, cuped_rho=rho) if detectable and with_cuped else None
        ),
        observed=observed,
        rho=rho,
    )


def experiment_plans(analysis: ExperimentAnalysis, power: float) -> list[VariantPlan]:
    """The plan of every variant's primary lift (variants without an estimate left out)."""
    days = duration_days(analysis)
    plans = (
        variant_plan(
            analysis.lift(analysis.primary_metric, variant), days, analysis.options.alpha, power
        )
        for variant in analysis.design.treatments
    )
    return [p for p in plans if p is not None]
