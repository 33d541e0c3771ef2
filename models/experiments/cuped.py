"""CUPED (Deng, Xu, Kohavi & Walker 2013): variance reduction with a pre-period covariate.

Each customer's metric y is replaced by y - theta (x - mean(x)), with x the same metric (or
any covariate unaffected by the treatment) measured before the experiment. theta =
cov(y, x) / var(x) over all customers of all variants pooled (as gbstats does), so that it
does not depend on the assignment; the adjusted values then go through Welch. With
correlation rho between y and x the variance of each mean shrinks by about rho^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.experiments.stats import (
    Convention,
    FloatArray,
    MeanComparison,
    as_values,
    compare_summaries,
    summarize,
)


@dataclass(frozen=True)
class CupedComparison:
    """A CUPED-adjusted comparison beside the unadjusted one.

    Attributes:
        theta: the pooled regression coefficient of the metric on its covariate.
        variance_reduction: share of the variance of the absolute lift removed,
            1 - SE_adjusted^2 / SE_unadjusted^2 (about rho^2).
        adjusted: Welch on the adjusted values.
        unadjusted: Welch on the raw metric.
    """

    theta: float
    variance_reduction: float
    adjusted: MeanComparison
    unadjusted: MeanComparison


def paired(name: str, metric: npt.ArrayLike, covariate: npt.ArrayLike) -> tuple[FloatArray, ...]:
    """Metric and covariate of the same customers, checked to be aligned."""
    y = as_values(f"{name} metric", metric)
    x = as_values(f"{name} covariate", covariate)
    if y.size != x.size:
        raise ValueError(f"{name}: metric and covariate differ in length ({y.size}, {x.size})")
    return y, x


def cuped_theta(metrics: Sequence[FloatArray], covariates: Sequence[FloatArray]) -> float:
    """The CUPED coefficient cov(y, x) / var(x), all variants pooled; 0 for a constant x.

    Args:
        metrics: per-variant metric arrays.
        covariates: per-variant covariate arrays, aligned with `metrics`.

    Returns:
        theta.
    """
    y = np.concatenate(metrics)
    x = np.concatenate(covariates)
    variance = float(x.var(ddof=1))
    if variance == 0:
        # a constant covariate carries no information: fall back to the raw metric
        return 0.0
    covariance = float(np.cov(y, x, ddof=1)[0, 1])
    return covariance / variance


def compare_cuped(
    metric_control: npt.ArrayLike,
    covariate_control: npt.ArrayLike,
    metric_treatment: npt.ArrayLike,
    covariate_treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    convention: Convention = "standard",
) -> CupedComparison:
    """Welch on CUPED-adjusted values, with the variance reduction it bought.

    Args:
        metric_control: per-customer metric in control (experiment period).
        covariate_control: the same customers' pre-period covariate.
        metric_treatment: per-customer metric in treatment.
        covariate_treatment: the same customers' pre-period covariate.
        alpha: 1 - the interval level.
        convention: how the relative lift's p-value is computed (see `stats`).

    Returns:
        theta, the variance reduction, and both comparisons. The adjusted relative lift is
        over the adjusted control mean (the centred adjustment keeps it near the raw one).
    """
    y_c, x_c = paired("control", metric_control, covariate_control)
    y_t, x_t = paired("treatment", metric_treatment, covariate_treatment)
    theta = cuped_theta([y_c, y_t], [x_c, x_t])
    # centring on the pooled covariate mean keeps the adjusted means on the metric's scale
    center = float(np.concatenate([x_c, x_t]).mean())
    adjusted = compare_summaries(
        summarize(y_c - theta * (x_c - center)),
        summarize(y_t - theta * (x_t - center)),
        alpha=alpha,
        convention=convention,
    )
    unadjusted = compare_summaries(
        summarize(y_c), summarize(y_t), alpha=alpha, convention=convention
    )
    reduction = 1 - (adjusted.absolute.standard_error / unadjusted.absolute.standard_error) ** 2
    return CupedComparison(theta, reduction, adjusted, unadjusted)
