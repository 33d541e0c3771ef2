"""Bayesian reading of a lift: chance to beat control and expected loss (as gbstats 0.8).

GrowthBook's effect-prior engine with its default flat (improper) prior: the lift's posterior
is the normal approximation N(estimate, se^2) of its sampling distribution, with the same
estimate and standard error as the frequentist path (`stats`), on the absolute scale
(treatment - control) and on the relative one (treatment / control - 1, delta method).
Proportions take the Bernoulli variance p (1 - p), as gbstats does.

- chance to win: P(lift > 0) (P(lift < 0) for a metric where lower is better);
- expected loss of shipping the treatment: E[max(-lift, 0)] (the lift's sign flipped for
  lower-is-better metrics), what is lost on average if the treatment is in fact worse;
  `expected_loss_control` is the same for keeping the control. gbstats reports both as
  `risk = [control, treatment]`;
- credible interval: the central 1 - alpha interval of the posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy.typing as npt
from scipy import special

from models.experiments.stats import (
    Summary,
    as_values,
    cap_at_percentile,
    check_alpha,
    relative_standard_error,
    summarize,
    summarize_proportion,
)


@dataclass(frozen=True)
class Posterior:
    """Normal posterior of a lift and the decision quantities read from it.

    Attributes:
        mean: posterior mean (the estimate, under the flat prior).
        sd: posterior standard deviation (the standard error).
        ci_low: lower end of the central 1 - alpha credible interval.
        ci_high: upper end.
        chance_to_win: probability that the treatment is better than the control.
        expected_loss: expected loss of shipping the treatment.
        expected_loss_control: expected loss of keeping the control.
    """

    mean: float
    sd: float
    ci_low: float
    ci_high: float
    chance_to_win: float
    expected_loss: float
    expected_loss_control: float

    @classmethod
    def undefined(cls) -> Posterior:
        """A posterior that cannot be formed (a relative lift over a zero control mean)."""
        return cls(*(math.nan,) * 7)


@dataclass(frozen=True)
class BayesianComparison:
    """Posteriors of the absolute and relative lifts of treatment over control.

    Attributes:
        control: the control's summary.
        treatment: the treatment's summary.
        alpha: 1 - the credible level.
        lower_is_better: whether a decrease of the metric is a win (e.g. fraud loss).
        absolute: posterior of treatment mean - control mean.
        relative: posterior of treatment / control - 1; NaN if the control mean is 0.
    """

    control: Summary
    treatment: Summary
    alpha: float
    lower_is_better: bool
    absolute: Posterior
    relative: Posterior


def expected_positive_part(mean: float, sd: float) -> float:
    """E[max(X, 0)] for X ~ N(mean, sd^2), in closed form."""
    if sd == 0:
        return max(mean, 0.0)
    z = mean / sd
    density = math.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return float(mean * special.ndtr(z) + sd * density)


def normal_posterior(mean: float, sd: float, *, alpha: float, lower_is_better: bool) -> Posterior:
    """Decision quantities of a N(mean, sd^2) posterior of the lift.

    Args:
        mean: posterior mean of the lift.
        sd: posterior standard deviation (>= 0).
        alpha: 1 - the credible level.
        lower_is_better: whether a negative lift is a win.

    Returns:
        The posterior's summary. With sd = 0 (a relative lift over a treatment constant at
        0 is exactly -1) the posterior is a point mass at `mean`.
    """
    z_half = float(special.ndtri(1 - alpha / 2))
    ci_low, ci_high = mean - z_half * sd, mean + z_half * sd
    gain = expected_positive_part(mean, sd)  # E[max(lift, 0)]
    drop = expected_positive_part(-mean, sd)  # E[max(-lift, 0)]
    # P(lift > 0)
    up = float(special.ndtr(mean / sd)) if sd > 0 else 0.5 if mean == 0 else float(mean > 0)
    if lower_is_better:
        return Posterior(mean, sd, ci_low, ci_high, 1 - up, gain, drop)
    return Posterior(mean, sd, ci_low, ci_high, up, drop, gain)


def bayesian_from_summaries(
    control: Summary,
    treatment: Summary,
    *,
    alpha: float = 0.05,
    lower_is_better: bool = False,
) -> BayesianComparison:
    """Flat-prior normal posteriors of the absolute and relative lifts.

    Args:
        control: the control's summary.
        treatment: the treatment's summary.
        alpha: 1 - the credible level.
        lower_is_better: whether a decrease of the metric is a win.

    Returns:
        Both posteriors with chance to win and expected losses.
    """
    check_alpha(alpha)
    variance = control.variance / control.n + treatment.variance / treatment.n
    if variance <= 0:
        raise ValueError("both variants are constant: the lift has no uncertainty")
    absolute = normal_posterior(
        treatment.mean - control.mean,
        math.sqrt(variance),
        alpha=alpha,
        lower_is_better=lower_is_better,
    )
    relative = (
        normal_posterior(
            treatment.mean / control.mean - 1,
            relative_standard_error(control, treatment),
            alpha=alpha,
            lower_is_better=lower_is_better,
        )
        if control.mean != 0
        else Posterior.undefined()
    )
    return BayesianComparison(control, treatment, alpha, lower_is_better, absolute, relative)


def bayesian_means(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    lower_is_better: bool = False,
    cap_percentile: float | None = None,
) -> BayesianComparison:
    """Bayesian comparison of per-customer means (sample variances, n - 1).

    Args:
        control: one value per control customer.
        treatment: one value per treatment customer.
        alpha: 1 - the credible level.
        lower_is_better: whether a decrease of the metric is a win.
        cap_percentile: if given, winsorize both at this pooled percentile first (e.g. 99).

    Returns:
        Both posteriors with chance to win and expected losses.
    """
    c = as_values("control", control)
    t = as_values("treatment", treatment)
    if cap_percentile is not None:
        c, t = cap_at_percentile(c, t, percentile=cap_percentile).samples
    return bayesian_from_summaries(
        summarize(c), summarize(t), alpha=alpha, lower_is_better=lower_is_better
    )


def bayesian_proportions(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    lower_is_better: bool = False,
) -> BayesianComparison:
    """Bayesian comparison of proportions (Bernoulli variance p (1 - p), as gbstats).

    Args:
        control: one 0/1 value per control customer.
        treatment: one 0/1 value per treatment customer.
        alpha: 1 - the credible level.
        lower_is_better: whether a decrease of the metric is a win.

    Returns:
        Both posteriors with chance to win and expected losses.
    """
    return bayesian_from_summaries(
        summarize_proportion(control, convention="gbstats", name="control"),
        summarize_proportion(treatment, convention="gbstats", name="treatment"),
        alpha=alpha,
        lower_is_better=lower_is_better,
    )
