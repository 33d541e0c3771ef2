"""Frequentist comparison of two variants: Welch, proportions, ratios (delta method), capping.

Every function takes one array per variant holding one value per customer (the unit of
analysis is the customer, not the exposure) and returns a frozen dataclass. The absolute
lift is treatment minus control; the relative lift is treatment / control - 1.

Where reference tools differ, `convention` picks one:

- ``"standard"``: per-customer variances with n - 1 for every metric (Welch's t-test, as
  ``scipy.stats.ttest_ind(equal_var=False)``); the relative lift gets a delta-method standard
  error and interval, and the p-value of the absolute test, since "no lift" is one null
  hypothesis on either scale. (Near the threshold its interval and p-value may disagree.)
- ``"gbstats"``: GrowthBook's gbstats 0.8: proportions take the Bernoulli variance
  p (1 - p) (n, not n - 1), and the relative lift gets its own p-value, from the
  delta-method t statistic of the relative lift with the Welch degrees of freedom.

Intervals use the t quantile at the Welch-Satterthwaite degrees of freedom, on both scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
Convention = Literal["standard", "gbstats"]


@dataclass(frozen=True)
class Summary:
    """Sufficient statistics of one metric in one variant.

    Attributes:
        n: customers.
        mean: mean per customer; for a ratio metric, the ratio of the sums.
        variance: variance per customer; for a ratio metric, that of its delta-method
            linearization, so that `variance / n` is the variance of `mean` either way.
    """

    n: int
    mean: float
    variance: float

    @property
    def standard_error(self) -> float:
        """Standard error of the mean, `sqrt(variance / n)`."""
        return math.sqrt(self.variance / self.n)

    @classmethod
    def from_sums(cls, n: int, total: float, total_squares: float, *, ddof: int = 1) -> Self:
        """A summary from pre-aggregated sums (as a SQL query returns them).

        Args:
            n: customers (> ddof).
            total: sum of the values.
            total_squares: sum of the squared values.
            ddof: 1 for the sample variance, 0 for the population (Bernoulli) variance.

        Returns:
            The summary.
        """
        if n <= ddof:
            raise ValueError(f"n must exceed ddof={ddof}, got n={n}")
        mean = total / n
        # clipped at 0: the shortcut formula can go a hair negative for constant values
        variance = max((total_squares - total * mean) / (n - ddof), 0.0)
        return cls(n=n, mean=mean, variance=variance)


@dataclass(frozen=True)
class Lift:
    """An estimated lift with its standard error, interval and two-sided p-value.

    Attributes:
        estimate: the point estimate.
        standard_error: its standard error.
        ci_low: lower end of the interval at level 1 - alpha.
        ci_high: upper end.
        p_value: two-sided p-value of "no lift".
    """

    estimate: float
    standard_error: float
    ci_low: float
    ci_high: float
    p_value: float

    @classmethod
    def undefined(cls) -> Self:
        """A lift that cannot be estimated (a relative lift over a zero control mean)."""
        return cls(math.nan, math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class MeanComparison:
    """Treatment against control on one metric.

    Attributes:
        control: the control's summary.
        treatment: the treatment's summary.
        alpha: 1 - the interval level.
        df: Welch-Satterthwaite degrees of freedom.
        statistic: Welch t statistic of the absolute lift.
        absolute: treatment mean - control mean.
        relative: treatment mean / control mean - 1 (delta method); NaN if the control
            mean is 0.
    """

    control: Summary
    treatment: Summary
    alpha: float
    df: float
    statistic: float
    absolute: Lift
    relative: Lift


@dataclass(frozen=True)
class ProportionComparison:
    """Two proportions: the Welch path and the pooled two-proportion z-test.

    Attributes:
        welch: the comparison of means of the 0/1 values.
        z_statistic: pooled z statistic (variance from the pooled proportion under the null).
        z_p_value: its two-sided p-value.
        pooled_proportion: the proportion over both variants.
    """

    welch: MeanComparison
    z_statistic: float
    z_p_value: float
    pooled_proportion: float


@dataclass(frozen=True, eq=False)
class Capped:
    """Samples winsorized at a pooled upper percentile.

    Attributes:
        samples: the capped samples, in the order given.
        cap: the threshold, the pooled percentile of all samples together.
        n_capped: values that were above the cap.
    """

    samples: tuple[FloatArray, ...]
    cap: float
    n_capped: int


def as_values(name: str, values: npt.ArrayLike, *, minimum: int = 2) -> FloatArray:
    """One finite float per customer, at least `minimum` of them.

    Raises:
        ValueError: naming the argument.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must hold one value per customer (1-D), got {array.shape}")
    if array.size < minimum:
        raise ValueError(f"{name} needs at least {minimum} customers, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has missing or infinite values")
    return array


def check_alpha(alpha: float) -> None:
    """Refuse an alpha outside (0, 1)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def summarize(values: npt.ArrayLike, *, ddof: int = 1, name: str = "values") -> Summary:
    """Summary of per-customer values.

    Args:
        values: one value per customer.
        ddof: 1 for the sample variance, 0 for the population variance.
        name: the argument's name in error messages.

    Returns:
        n, mean and variance.
    """
    array = as_values(name, values)
    return Summary(n=array.size, mean=float(array.mean()), variance=float(array.var(ddof=ddof)))


def summarize_proportion(
    values: npt.ArrayLike, *, convention: Convention = "standard", name: str = "values"
) -> Summary:
    """Summary of per-customer 0/1 values.

    Args:
        values: one 0/1 (or boolean) value per customer.
        convention: "standard" for the sample variance (n - 1), "gbstats" for p (1 - p).
        name: the argument's name in error messages.

    Returns:
        n, the proportion, and the variance per customer.
    """
    array = as_values(name, values)
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{name} must be 0/1 values for a proportion")
    return summarize(array, ddof=0 if convention == "gbstats" else 1, name=name)


def summarize_ratio(
    numerator: npt.ArrayLike, denominator: npt.ArrayLike, *, name: str = "ratio"
) -> Summary:
    """Summary of a ratio metric (sum of numerators / sum of denominators) by the delta method.

    Customers, not orders, are the independent units: the ratio of means R = mean(m) /
    mean(d) is linearized around the means, R_hat - R ~ mean(m - R d) / mean(d), so its
    variance per customer is var(m - R d) / mean(d)^2 (sample variance, n - 1), which equals
    var(m) / mu_d^2 - 2 cov(m, d) mu_m / mu_d^3 + mu_m^2 var(d) / mu_d^4.

    Args:
        numerator: per-customer numerator (e.g. spend).
        denominator: per-customer denominator (e.g. orders), same customers.
        name: the metric's name in error messages.

    Returns:
        n, the ratio as `mean`, and the linearization's variance.
    """
    m = as_values(f"{name} numerator", numerator)
    d = as_values(f"{name} denominator", denominator)
    if m.size != d.size:
        raise ValueError(f"{name}: numerator and denominator differ in length ({m.size}, {d.size})")
    mean_d = float(d.mean())
    if mean_d == 0:
        raise ValueError(f"{name}: the denominator sums to 0, the ratio is undefined")
    ratio = float(m.sum() / d.sum())
    linearized = (m - ratio * d) / mean_d
    return Summary(n=m.size, mean=ratio, variance=float(linearized.var(ddof=1)))


def welch_df(control: Summary, treatment: Summary) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means."""
    v_c = control.variance / control.n
    v_t = treatment.variance / treatment.n
    return (v_c + v_t) ** 2 / (v_c**2 / (control.n - 1) + v_t**2 / (treatment.n - 1))


def t_lift(estimate: float, standard_error: float, df: float, alpha: float) -> Lift:
    """Lift with a t interval and two-sided t p-value at `df` degrees of freedom."""
    # scipy.special's t functions are those behind scipy.stats.t, at a hundredth of the cost
    half_width = float(special.stdtrit(df, 1 - alpha / 2)) * standard_error
    p_value = float(2 * special.stdtr(df, -abs(estimate / standard_error)))
    return Lift(estimate, standard_error, estimate - half_width, estimate + half_width, p_value)


def relative_standard_error(control: Summary, treatment: Summary) -> float:
    """Delta-method standard error of treatment mean / control mean, variants independent."""
    mean_c, mean_t = control.mean, treatment.mean
    variance = treatment.variance / (treatment.n * mean_c**2) + control.variance * mean_t**2 / (
        control.n * mean_c**4
    )
    return math.sqrt(variance)


def relative_lift(
    control: Summary,
    treatment: Summary,
    *,
    df: float,
    alpha: float,
    absolute_p_value: float,
    convention: Convention,
) -> Lift:
    """Relative lift treatment / control - 1 with a delta-method interval (see the module)."""
    if control.mean == 0:
        return Lift.undefined()
    estimate = treatment.mean / control.mean - 1
    standard_error = relative_standard_error(control, treatment)
    if standard_error == 0:
        # only when the treatment is constant at 0: the relative scale carries no test
        return Lift(estimate, 0.0, estimate, estimate, absolute_p_value)
    lift = t_lift(estimate, standard_error, df, alpha)
    if convention == "gbstats":
        return lift
    return Lift(lift.estimate, lift.standard_error, lift.ci_low, lift.ci_high, absolute_p_value)


def compare_summaries(
    control: Summary,
    treatment: Summary,
    *,
    alpha: float = 0.05,
    convention: Convention = "standard",
) -> MeanComparison:
    """Welch comparison of two summaries, absolute and relative.

    Args:
        control: the control's summary.
        treatment: the treatment's summary.
        alpha: 1 - the interval level.
        convention: how the relative lift's p-value is computed (see the module).

    Returns:
        The comparison.

    Raises:
        ValueError: when both variances are 0 (the difference has no standard error).
    """
    check_alpha(alpha)
    if min(control.n, treatment.n) < 2:
        raise ValueError("each variant needs at least 2 customers")
    variance = control.variance / control.n + treatment.variance / treatment.n
    if variance <= 0:
        raise ValueError("both variants are constant: the difference has no standard error")
    df = welch_df(control, treatment)
    absolute = t_lift(treatment.mean - control.mean, math.sqrt(variance), df, alpha)
    relative = relative_lift(
        control,
        treatment,
        df=df,
        alpha=alpha,
        absolute_p_value=absolute.p_value,
        convention=convention,
    )
    statistic = absolute.estimate / absolute.standard_error
    return MeanComparison(control, treatment, alpha, df, statistic, absolute, relative)


def compare_means(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    convention: Convention = "standard",
    cap_percentile: float | None = None,
) -> MeanComparison:
    """Welch's unequal-variance comparison of per-customer means.

    Args:
        control: one value per control customer.
        treatment: one value per treatment customer.
        alpha: 1 - the interval level.
        convention: how the relative lift's p-value is computed (see the module).
        cap_percentile: if given, winsorize both at this pooled percentile first (e.g. 99).

    Returns:
        The comparison; `statistic`, `df` and `absolute.p_value` are those of
        `scipy.stats.ttest_ind(treatment, control, equal_var=False)`.
    """
    c = as_values("control", control)
    t = as_values("treatment", treatment)
    if cap_percentile is not None:
        c, t = cap_at_percentile(c, t, percentile=cap_percentile).samples
    return compare_summaries(summarize(c), summarize(t), alpha=alpha, convention=convention)


def compare_proportions(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    convention: Convention = "standard",
) -> ProportionComparison:
    """Two proportions (0/1 per customer): Welch's path and the pooled z-test.

    Args:
        control: one 0/1 value per control customer.
        treatment: one 0/1 value per treatment customer.
        alpha: 1 - the interval level.
        convention: "standard" (n - 1 variances) or "gbstats" (p (1 - p)); see the module.

    Returns:
        The comparison.
    """
    c = summarize_proportion(control, convention=convention, name="control")
    t = summarize_proportion(treatment, convention=convention, name="treatment")
    welch = compare_summaries(c, t, alpha=alpha, convention=convention)
    z, p_value, pooled = pooled_z_test(c.mean * c.n, c.n, t.mean * t.n, t.n)
    return ProportionComparison(welch, z, p_value, pooled)


def pooled_z_test(
    successes_control: float, n_control: int, successes_treatment: float, n_treatment: int
) -> tuple[float, float, float]:
    """Pooled two-proportion z-test of treatment - control.

    Returns:
        (z statistic, two-sided p-value, pooled proportion).
    """
    pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
    variance = pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment)
    if variance <= 0:
        raise ValueError("the pooled proportion is 0 or 1: the z-test is undefined")
    difference = successes_treatment / n_treatment - successes_control / n_control
    z = difference / math.sqrt(variance)
    return z, float(2 * special.ndtr(-abs(z))), pooled


def compare_ratios(
    numerator_control: npt.ArrayLike,
    denominator_control: npt.ArrayLike,
    numerator_treatment: npt.ArrayLike,
    denominator_treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    convention: Convention = "standard",
) -> MeanComparison:
    """Ratio metrics (e.g. average order value = spend / orders) by the delta method.

    Args:
        numerator_control: per-customer numerator in control.
        denominator_control: per-customer denominator in control.
        numerator_treatment: per-customer numerator in treatment.
        denominator_treatment: per-customer denominator in treatment.
        alpha: 1 - the interval level.
        convention: how the relative lift's p-value is computed (see the module).

    Returns:
        The comparison, whose summaries hold the ratios as `mean` (see `summarize_ratio`).
    """
    control = summarize_ratio(numerator_control, denominator_control, name="control")
    treatment = summarize_ratio(numerator_treatment, denominator_treatment, name="treatment")
    return compare_summaries(control, treatment, alpha=alpha, convention=convention)


def cap_at_percentile(*samples: npt.ArrayLike, percentile: float = 99.0) -> Capped:
    """Winsorize samples at their pooled upper percentile (linear interpolation).

    Only the upper tail is capped: spend-like metrics have a heavy right tail and a floor
    at 0. The threshold is computed over all variants together, so that capping treats
    every variant alike.

    Args:
        *samples: per-customer values, one array per variant.
        percentile: in (0, 100].

    Returns:
        The capped samples, the cap and how many values it cut.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    arrays = [as_values(f"sample {i}", s, minimum=1) for i, s in enumerate(samples)]
    if not arrays:
        raise ValueError("give at least one sample to cap")
    cap = float(np.percentile(np.concatenate(arrays), percentile))
    n_capped = sum(int(np.count_nonzero(a > cap)) for a in arrays)
    return Capped(tuple(np.minimum(a, cap) for a in arrays), cap, n_capped)
