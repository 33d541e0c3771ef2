"""Always-valid confidence intervals for those who peek (a normal-mixture confidence sequence).

A fixed-horizon interval covers the truth with probability 1 - alpha at one pre-set sample
size; looked at after every batch of customers and stopped at the first "significant"
look, it excludes a true zero far more often than alpha. A confidence sequence covers the
truth at *all* sample sizes at once with probability 1 - alpha, so it may be looked at as
often as wished and the experiment stopped at any time.

This is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
("Time-uniform central limit theory and asymptotic confidence sequences", arXiv:2103.06476,
eq. 9), the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (2021, Annals of
Statistics) applied to the lift's estimate, as GrowthBook's gbstats does. With N customers
in total and the lift's standard error se, the half-width is

    se * sqrt(2 (N rho^2 + 1) / (N rho^2) * log(sqrt(N rho^2 + 1) / alpha))

and the always-valid p-value, the smallest alpha at which the interval excludes 0, is
min(1, sqrt(N rho^2 + 1) * exp(-N rho^2 z^2 / (2 (N rho^2 + 1)))) with z = estimate / se.

Tuning parameter: `tuning_n`, the total sample size (all variants) at which the interval is
tightest; it sets the mixture's precision rho^2 = (-2 log alpha + log(1 - 2 log alpha)) /
tuning_n (eq. 161 there). Set it near the sample size expected at the end: a smaller value
favours early stops on large effects, a larger one the final looks. Any value keeps the
guarantee; it only moves where the interval is narrowest. gbstats' default is 5000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy.typing as npt

from models.experiments.stats import (
    Lift,
    Summary,
    check_alpha,
    relative_standard_error,
    summarize,
    summarize_proportion,
)


@dataclass(frozen=True)
class SequentialComparison:
    """Always-valid lifts of treatment over control at the current cumulative sample size.

    Attributes:
        control: the control's summary so far.
        treatment: the treatment's summary so far.
        alpha: the sequence's error rate over all looks.
        tuning_n: total sample size at which the interval is tightest.
        absolute: treatment mean - control mean, with its always-valid interval and p-value.
        relative: treatment / control - 1 (delta-method standard error), likewise; NaN if
            the control mean is 0.
    """

    control: Summary
    treatment: Summary
    alpha: float
    tuning_n: float
    absolute: Lift
    relative: Lift


def mixture_rho(alpha: float, tuning_n: float) -> float:
    """Mixture precision rho minimizing the half-width at `tuning_n` total customers."""
    log_alpha = math.log(alpha)
    return math.sqrt((-2 * log_alpha + math.log(1 - 2 * log_alpha)) / tuning_n)


def always_valid_lift(
    estimate: float, standard_error: float, n_total: int, *, alpha: float, tuning_n: float
) -> Lift:
    """Always-valid interval and p-value of an asymptotically normal estimate.

    Args:
        estimate: the lift's estimate after `n_total` customers.
        standard_error: its (fixed-horizon) standard error.
        n_total: customers so far, all variants together.
        alpha: the error rate over all looks.
        tuning_n: total sample size at which the interval is tightest.

    Returns:
        The lift with the confidence sequence's interval and always-valid p-value.
    """
    check_alpha(alpha)
    if tuning_n <= 0 or n_total <= 0:
        raise ValueError(f"tuning_n and n_total must be > 0, got {tuning_n}, {n_total}")
    n_rho2 = n_total * mixture_rho(alpha, tuning_n) ** 2
    multiplier = math.sqrt(2 * (n_rho2 + 1) / n_rho2 * math.log(math.sqrt(n_rho2 + 1) / alpha))
    half_width = multiplier * standard_error
    z = estimate / standard_error if standard_error > 0 else math.inf
    # log of 1 / e-value, kept in logs so that huge z gives 0 rather than overflow
    log_p = 0.5 * math.log(n_rho2 + 1) - n_rho2 * z**2 / (2 * (n_rho2 + 1))
    p_value = math.exp(min(log_p, 0.0))
    return Lift(estimate, standard_error, estimate - half_width, estimate + half_width, p_value)


def sequential_from_summaries(
    control: Summary, treatment: Summary, *, alpha: float = 0.05, tuning_n: float = 5000.0
) -> SequentialComparison:
    """Always-valid comparison from the cumulative summaries of both variants.

    Args:
        control: the control's summary of all customers so far.
        treatment: the treatment's summary of all customers so far.
        alpha: the error rate over all looks.
        tuning_n: total sample size at which the interval is tightest (see the module).

    Returns:
        The absolute and relative always-valid lifts.
    """
    n_total = control.n + treatment.n
    variance = control.variance / control.n + treatment.variance / treatment.n
    if variance <= 0:
        raise ValueError("both variants are constant: the difference has no standard error")
    absolute = always_valid_lift(
        treatment.mean - control.mean,
        math.sqrt(variance),
        n_total,
        alpha=alpha,
        tuning_n=tuning_n,
    )
    relative = (
        always_valid_lift(
            treatment.mean / control.mean - 1,
            relative_standard_error(control, treatment),
            n_total,
            alpha=alpha,
            tuning_n=tuning_n,
        )
        if control.mean != 0
        else Lift.undefined()
    )
    return SequentialComparison(control, treatment, alpha, tuning_n, absolute, relative)


def sequential_means(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    tuning_n: float = 5000.0,
) -> SequentialComparison:
    """Always-valid comparison of per-customer means, from all customers so far.

    Args:
        control: one value per control customer so far.
        treatment: one value per treatment customer so far.
        alpha: the error rate over all looks.
        tuning_n: total sample size at which the interval is tightest (see the module).

    Returns:
        The absolute and relative always-valid lifts.
    """
    return sequential_from_summaries(
        summarize(control, name="control"),
        summarize(treatment, name="treatment"),
        alpha=alpha,
        tuning_n=tuning_n,
    )


def sequential_proportions(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    tuning_n: float = 5000.0,
) -> SequentialComparison:
    """Always-valid comparison of proportions (Bernoulli variance p (1 - p), as gbstats).

    Args:
        control: one 0/1 value per control customer so far.
        treatment: one 0/1 value per treatment customer so far.
        alpha: the error rate over all looks.
        tuning_n: total sample size at which the interval is tightest (see the module).

    Returns:
        The absolute and relative always-valid lifts.
    """
    return sequential_from_summaries(
        summarize_proportion(control, convention="gbstats", name="control"),
        summarize_proportion(treatment, convention="gbstats", name="treatment"),
        alpha=alpha,
        tuning_n=tuning_n,
    )
