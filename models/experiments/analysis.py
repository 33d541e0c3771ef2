"""The analysis of an experiment: every metric, every variant against control, and a verdict.

Input: one row per assigned customer (the unit of analysis) with its variant, its segment
and one column per metric (see `models.experiments.metrics` for the event metrics; an
imported experiment brings its own outcomes), plus the metrics' specifications.

For each metric and each variant other than the control:

- absolute and relative lifts with 95 % intervals (Welch; the relative one by the delta
  method; proportions also get the pooled z-test's p-value; a ratio metric such as the
  average order value is linearized by the delta method, customers being the units);
- the CUPED-adjusted lift with the metric's pre-period value as covariate, and the share of
  the lift's variance it removed (ratio metrics and metrics without a covariate: skipped,
  with the reason);
- the always-valid (sequential) interval, safe to look at every day;
- the Bayesian chance to beat control and the expected loss of shipping the variant;
- p-values adjusted across all metrics x variants (Holm or Benjamini-Hochberg);
- optional capping of the mean metrics at a pooled upper percentile (all variants
  together; proportions and ratios are not capped).

Beside them: the SRM check of the assignment counts against the weights, the cumulative
series of the primary metric day by day (lift with its fixed-horizon and sequential
bounds), the breakdown by segment, and a verdict in plain words per variant. Nothing fails
for a metric without data: its row carries the reason in `message`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

from models.experiments.bayes import BayesianComparison, Posterior, bayesian_from_summaries
from models.experiments.cuped import CupedComparison, compare_cuped
from models.experiments.multiple_testing import Method, adjust_p_values
from models.experiments.sequential import SequentialComparison, sequential_from_summaries
from models.experiments.srm import SrmCheck, check_srm
from models.experiments.stats import (
    FloatArray,
    Lift,
    MeanComparison,
    Summary,
    cap_at_percentile,
    compare_means,
    compare_proportions,
    compare_ratios,
    compare_summaries,
)

MetricKind = Literal["mean", "proportion", "ratio"]
Role = Literal["primary", "guardrail", "secondary"]
Decision = Literal["ship", "do_not_ship", "inconclusive", "invalid"]
Source = Literal["events", "outcomes"]
ALL_SEGMENTS = "all"
NO_COVARIATE = "no pre-period covariate for this metric"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the analysis.

    Attributes:
        name: the metric's name.
        kind: "mean", "proportion" (0/1 per customer) or "ratio" (sum / sum).
        column: the per-customer column (a ratio's numerator).
        denominator: a ratio's per-customer denominator column.
        covariate: the pre-period column used by CUPED (None: no CUPED).
        lower_is_better: whether a decrease is a win (costs, fraud loss).
        role: "primary", "guardrail" or "secondary".
    """

    name: str
    kind: MetricKind
    column: str
    denominator: str | None = None
    covariate: str | None = None
    lower_is_better: bool = False
    role: Role = "secondary"


@dataclass(frozen=True)
class Design:
    """What is analysed: the experiment, its variants and its window.

    Attributes:
        key: the experiment's key.
        experiment_id: its id in the contract tables.
        source: "events" (metrics from transactions and claims) or "outcomes" (imported).
        variants: every variant, the control first.
        weights: the designed share of each variant, same order.
        start: the experiment's start.
        end: the end of the analysis window.
        data_end: the end of the data (retention windows must elapse by then); None for
            imported outcomes.
    """

    key: str
    experiment_id: str
    source: Source
    variants: tuple[str, ...]
    weights: tuple[float, ...]
    start: datetime
    end: datetime
    data_end: datetime | None

    @property
    def control(self) -> str:
        """The control variant."""
        return self.variants[0]

    @property
    def treatments(self) -> tuple[str, ...]:
        """Every variant compared with the control."""
        return self.variants[1:]


@dataclass(frozen=True)
class AnalysisOptions:
    """How the statistics are computed (from `ExperimentSettings`).

    Attributes:
        alpha: 1 - the interval level, and the family-wise level of the correction.
        correction: "holm" or "bh" across metrics x variants.
        cap_quantile: cap the mean metrics at this pooled quantile (e.g. 0.99); None: no cap.
        srm_threshold: flag a sample ratio mismatch below this p-value.
        tuning_n: the sequential intervals are tightest at this many customers.
    """

    alpha: float = 0.05
    correction: Method = "holm"
    cap_quantile: float | None = None
    srm_threshold: float = 0.001
    tuning_n: float = 5000.0


@dataclass(frozen=True)
class MetricLift:
    """One metric, one variant against the control.

    Attributes:
        metric: the metric's name.
        variant: the variant compared with the control.
        kind: mean, proportion or ratio.
        role: primary, guardrail or secondary.
        lower_is_better: whether a decrease is a win.
        comparison: the Welch comparison (None when it could not be made: see `message`).
        z_p_value: a proportion's pooled z-test p-value (NaN otherwise).
        cuped: the CUPED comparison (None when skipped: see `cuped_message`).
        sequential: the always-valid comparison.
        bayesian: the Bayesian comparison.
        adjusted_p_value: the p-value adjusted across metrics x variants.
        significant: adjusted_p_value < alpha.
        cap: the cap applied to the metric (None when not capped).
        n_capped: values lowered to the cap, all variants together.
        message: why the lift could not be estimated (None when it was).
        cuped_message: why CUPED was skipped (None when applied).
    """

    metric: str
    variant: str
    kind: MetricKind
    role: Role
    lower_is_better: bool
    comparison: MeanComparison | None = None
    z_p_value: float = math.nan
    cuped: CupedComparison | None = None
    sequential: SequentialComparison | None = None
    bayesian: BayesianComparison | None = None
    adjusted_p_value: float = math.nan
    significant: bool = False
    cap: float | None = None
    n_capped: int = 0
    message: str | None = None
    cuped_message: str | None = None

    @property
    def absolute(self) -> Lift:
        """Treatment - control, with its interval (NaN when not estimated)."""
        return self.comparison.absolute if self.comparison else Lift.undefined()

    @property
    def relative(self) -> Lift:
        """Treatment / control - 1, with its delta-method interval (NaN when not estimated)."""
        return self.comparison.relative if self.comparison else Lift.undefined()

    @property
    def harmful(self) -> bool:
        """Whether the 95 % interval (unadjusted) lies wholly on the bad side of 0."""
        lift = self.absolute
        return lift.ci_low > 0 if self.lower_is_better else lift.ci_high < 0

    @property
    def beneficial(self) -> bool:
        """Whether the lift is significant after correction, and on the good side."""
        good = self.absolute.estimate < 0 if self.lower_is_better else self.absolute.estimate > 0
        return self.significant and good


@dataclass(frozen=True)
class Verdict:
    """What to do with one variant, in plain words.

    Attributes:
        variant: the variant.
        decision: "ship", "do_not_ship", "inconclusive" or "invalid" (the split is broken).
        text: one or two sentences for a marketer.
    """

    variant: str
    decision: Decision
    text: str


LIFT_COLUMNS = pl.Schema(
    {
        "metric": pl.String(),
        "variant": pl.String(),
        "control": pl.String(),
        "role": pl.String(),
        "kind": pl.String(),
        "lower_is_better": pl.Boolean(),
        "n_control": pl.Int64(),
        "n_treatment": pl.Int64(),
        "mean_control": pl.Float64(),
        "mean_treatment": pl.Float64(),
        "absolute": pl.Float64(),
        "absolute_se": pl.Float64(),
        "absolute_ci_low": pl.Float64(),
        "absolute_ci_high": pl.Float64(),
        "relative": pl.Float64(),
        "relative_ci_low": pl.Float64(),
        "relative_ci_high": pl.Float64(),
        "p_value": pl.Float64(),
        "z_p_value": pl.Float64(),
        "adjusted_p_value": pl.Float64(),
        "significant": pl.Boolean(),
        "cuped_absolute": pl.Float64(),
        "cuped_ci_low": pl.Float64(),
        "cuped_ci_high": pl.Float64(),
        "cuped_relative": pl.Float64(),
        "cuped_relative_ci_low": pl.Float64(),
        "cuped_relative_ci_high": pl.Float64(),
        "cuped_p_value": pl.Float64(),
        "cuped_theta": pl.Float64(),
        "variance_reduction": pl.Float64(),
        "sequential_ci_low": pl.Float64(),
        "sequential_ci_high": pl.Float64(),
        "sequential_p_value": pl.Float64(),
        "sequential_relative_ci_low": pl.Float64(),
        "sequential_relative_ci_high": pl.Float64(),
        "chance_to_win": pl.Float64(),
        "expected_loss": pl.Float64(),
        "expected_loss_control": pl.Float64(),
        "expected_loss_relative": pl.Float64(),
        "cap": pl.Float64(),
        "n_capped": pl.Int64(),
        "message": pl.String(),
        "cuped_message": pl.String(),
    }
)


def _lift_row(lift: MetricLift, control: str) -> dict[str, object]:
    comparison, cuped = lift.comparison, lift.cuped
    sequential, bayesian = lift.sequential, lift.bayesian
    absolute, relative = lift.absolute, lift.relative
    adjusted = cuped.adjusted if cuped else None
    seq_abs = sequential.absolute if sequential else Lift.undefined()
    seq_rel = sequential.relative if sequential else Lift.undefined()
    post = bayesian.absolute if bayesian else Posterior.undefined()
    post_rel = bayesian.relative if bayesian else Posterior.undefined()
    return {
        "metric": lift.metric,
        "variant": lift.variant,
        "control": control,
        "role": lift.role,
        "kind": lift.kind,
        "lower_is_better": lift.lower_is_better,
        "n_control": comparison.control.n if comparison else None,
        "n_treatment": comparison.treatment.n if comparison else None,
        "mean_control": comparison.control.mean if comparison else math.nan,
        "mean_treatment": comparison.treatment.mean if comparison else math.nan,
        "absolute": absolute.estimate,
        "absolute_se": absolute.standard_error,
        "absolute_ci_low": absolute.ci_low,
        "absolute_ci_high": absolute.ci_high,
        "relative": relative.estimate,
        "relative_ci_low": relative.ci_low,
        "relative_ci_high": relative.ci_high,
        "p_value": absolute.p_value,
        "z_p_value": lift.z_p_value,
        "adjusted_p_value": lift.adjusted_p_value,
        "significant": lift.significant,
        "cuped_absolute": adjusted.absolute.estimate if adjusted else math.nan,
        "cuped_ci_low": adjusted.absolute.ci_low if adjusted else math.nan,
        "cuped_ci_high": adjusted.absolute.ci_high if adjusted else math.nan,
        "cuped_relative": adjusted.relative.estimate if adjusted else math.nan,
        "cuped_relative_ci_low": adjusted.relative.ci_low if adjusted else math.nan,
        "cuped_relative_ci_high": adjusted.relative.ci_high if adjusted else math.nan,
        "cuped_p_value": adjusted.absolute.p_value if adjusted else math.nan,
        "cuped_theta": cuped.theta if cuped else math.nan,
        "variance_reduction": cuped.variance_reduction if cuped else math.nan,
        "sequential_ci_low": seq_abs.ci_low,
        "sequential_ci_high": seq_abs.ci_high,
        "sequential_p_value": seq_abs.p_value,
        "sequential_relative_ci_low": seq_rel.ci_low,
        "sequential_relative_ci_high": seq_rel.ci_high,
        "chance_to_win": post.chance_to_win,
        "expected_loss": post.expected_loss,
        "expected_loss_control": post.expected_loss_control,
        "expected_loss_relative": post_rel.expected_loss,
        "cap": lift.cap,
        "n_capped": lift.n_capped,
        "message": lift.message,
        "cuped_message": lift.cuped_message,
    }


@dataclass(frozen=True, eq=False)
class ExperimentAnalysis:
    """The analysis of one experiment.

    Attributes:
        design: the experiment, its variants and window.
        options: how the statistics were computed.
        primary_metric: the metric the decision is made on.
        guardrail_metrics: metrics that must not get worse.
        srm: the sample ratio mismatch check (variants in `design.variants` order).
        lifts: one per metric and variant against the control, metrics in analysis order.
        verdicts: one per variant against the control.
        messages: notes on the data (metrics without data, skipped steps), in words.
        customers: one row per customer: customer_id, variant, segment and the metric
            columns (uncapped).
        cumulative: the primary metric day by day (see `CUMULATIVE_COLUMNS`); empty for
            imported outcomes, which have no time.
        segments: lifts per segment (see `SEGMENT_COLUMNS`).
    """

    design: Design
    options: AnalysisOptions
    primary_metric: str
    guardrail_metrics: tuple[str, ...]
    srm: SrmCheck
    lifts: tuple[MetricLift, ...]
    verdicts: tuple[Verdict, ...]
    messages: tuple[str, ...]
    customers: pl.DataFrame
    cumulative: pl.DataFrame
    segments: pl.DataFrame

    def to_frame(self) -> pl.DataFrame:
        """The lifts, one row per metric and variant (columns: `LIFT_COLUMNS`)."""
        rows = [_lift_row(lift, self.design.control) for lift in self.lifts]
        return pl.DataFrame(rows, schema=LIFT_COLUMNS, orient="row")

    def srm_frame(self) -> pl.DataFrame:
        """variant, weight, observed and expected customers, chi-square p-value and flag."""
        n = len(self.design.variants)
        return pl.DataFrame(
            {
                "variant": list(self.design.variants),
                "weight": list(self.design.weights),
                "observed": list(self.srm.observed),
                "expected": list(self.srm.expected),
                "statistic": [self.srm.statistic] * n,
                "p_value": [self.srm.p_value] * n,
                "mismatch": [self.srm.mismatch] * n,
            }
        )

    def verdict_frame(self) -> pl.DataFrame:
        """variant, decision and text of each verdict."""
        return pl.DataFrame(
            [(v.variant, v.decision, v.text) for v in self.verdicts],
            schema={"variant": pl.String, "decision": pl.String, "text": pl.String},
            orient="row",
        )

    def messages_frame(self) -> pl.DataFrame:
        """The notes, one row each."""
        return pl.DataFrame({"message": list(self.messages)}, schema={"message": pl.String})

    def lift(self, metric: str, variant: str) -> MetricLift:
        """The lift of one metric for one variant.

        Raises:
            KeyError: when there is no such metric or variant.
        """
        for lift in self.lifts:
            if lift.metric == metric and lift.variant == variant:
                return lift
        raise KeyError(f"no lift for metric {metric!r} and variant {variant!r}")


# ----------------------------------------------------------------------------- per metric


def _values(frame: pl.DataFrame, variant: str, columns: Sequence[str]) -> list[FloatArray]:
    """Per-customer arrays of `columns` for one variant, customers with every value only."""
    rows = frame.filter(pl.col("variant") == variant).drop_nulls(list(columns))
    return [rows[c].to_numpy().astype(np.float64) for c in columns]


def _capped(frame: pl.DataFrame, column: str, quantile: float) -> tuple[pl.DataFrame, float, int]:
    """Winsorize one column at its pooled upper quantile (all variants together)."""
    values = frame[column].drop_nulls().to_numpy().astype(np.float64)
    if values.size == 0:
        return frame, math.nan, 0
    capped = cap_at_percentile(values, percentile=quantile * 100)
    return (
        frame.with_columns(pl.col(column).clip(upper_bound=capped.cap)),
        capped.cap,
        capped.n_capped,
    )


def _compare(
    spec: MetricSpec, control: list[FloatArray], treatment: list[FloatArray], alpha: float
) -> tuple[MeanComparison, float]:
    """The Welch comparison of a metric, and a proportion's pooled z p-value (else NaN)."""
    if spec.kind == "ratio":
        return compare_ratios(
            control[0], control[1], treatment[0], treatment[1], alpha=alpha
        ), math.nan
    if spec.kind == "proportion":
        both = compare_proportions(control[0], treatment[0], alpha=alpha)
        return both.welch, both.z_p_value
    return compare_means(control[0], treatment[0], alpha=alpha), math.nan


def _same_everywhere(control: list[FloatArray], treatment: list[FloatArray]) -> str | None:
    """Words for a metric every customer has at the same value (no lift can be estimated)."""
    values = np.concatenate([control[0], treatment[0]])
    if not values.size or np.any(values != values[0]):
        return None
    if values[0] == 0:
        return "every customer has 0 (nothing of it in the window yet): no difference to estimate"
    return f"every customer has the same value ({values[0]:g}): no difference to estimate"


def _cuped(
    spec: MetricSpec, frame: pl.DataFrame, variants: tuple[str, str], alpha: float
) -> tuple[CupedComparison | None, str | None]:
    if spec.kind == "ratio":
        return None, "not applied to a ratio metric"
    if spec.covariate is None:
        return None, NO_COVARIATE
    control = _values(frame, variants[0], [spec.column, spec.covariate])
    treatment = _values(frame, variants[1], [spec.column, spec.covariate])
    try:
        cuped = compare_cuped(*control, *treatment, alpha=alpha)
    except ValueError as error:
        return None, str(error)
    if cuped.theta == 0:
        return cuped, "the pre-period covariate is constant: no variance removed"
    return cuped, None


def compare_metric(
    frame: pl.DataFrame, spec: MetricSpec, variants: tuple[str, str], options: AnalysisOptions
) -> MetricLift:
    """One metric for one variant against the control.

    Args:
        frame: per-customer values (variant and the spec's columns), capped if asked.
        spec: the metric.
        variants: (control, treatment).
        options: alpha, sequential tuning.

    Returns:
        The lift; when it cannot be estimated, `message` says why and the numbers are NaN.
    """
    base = MetricLift(spec.name, variants[1], spec.kind, spec.role, spec.lower_is_better)
    columns = [spec.column] + ([spec.denominator] if spec.denominator else [])
    control = _values(frame, variants[0], columns)
    treatment = _values(frame, variants[1], columns)
    fewest = min(control[0].size, treatment[0].size)
    if fewest < 2:
        return replace(
            base,
            message=f"{spec.name}: {fewest} customer(s) with a value in the smaller variant; "
            "at least 2 per variant are needed",
        )
    same = _same_everywhere(control, treatment)
    if same:
        return replace(base, message=f"{spec.name}: {same}")
    try:
        comparison, z_p_value = _compare(spec, control, treatment, options.alpha)
    except ValueError as error:
        return replace(base, message=f"{spec.name}: {error}")
    cuped, cuped_message = _cuped(spec, frame, variants, options.alpha)
    return replace(
        base,
        comparison=comparison,
        z_p_value=z_p_value,
        cuped=cuped,
        cuped_message=cuped_message,
        sequential=sequential_from_summaries(
            comparison.control,
            comparison.treatment,
            alpha=options.alpha,
            tuning_n=options.tuning_n,
        ),
        bayesian=bayesian_from_summaries(
            comparison.control,
            comparison.treatment,
            alpha=options.alpha,
            lower_is_better=spec.lower_is_better,
        ),
    )


def cap_metrics(
    frame: pl.DataFrame, specs: Sequence[MetricSpec], quantile: float | None
) -> tuple[pl.DataFrame, dict[str, tuple[float, int]]]:
    """Cap the mean metrics (and their covariates) at their pooled upper quantile.

    Returns:
        The capped frame, and per capped metric its cap and how many values it lowered.
    """
    caps: dict[str, tuple[float, int]] = {}
    if quantile is None:
        return frame, caps
    if not 0 < quantile <= 1:
        raise ValueError(f"the cap is a quantile in (0, 1], e.g. 0.99; got {quantile}")
    for spec in specs:
        if spec.kind != "mean":
            continue
        frame, cap, n = _capped(frame, spec.column, quantile)
        caps[spec.name] = (cap, n)
        if spec.covariate:
            frame, _, _ = _capped(frame, spec.covariate, quantile)
    return frame, caps


def adjust(lifts: Sequence[MetricLift], options: AnalysisOptions) -> list[MetricLift]:
    """Adjusted p-values (Holm or BH) across every estimated lift; others keep NaN."""
    estimated = [i for i, lift in enumerate(lifts) if math.isfinite(lift.absolute.p_value)]
    out = list(lifts)
    if not estimated:
        return out
    raw = [lifts[i].absolute.p_value for i in estimated]
    adjusted = adjust_p_values(raw, method=options.correction, alpha=options.alpha)
    for i, p, rejected in zip(estimated, adjusted.adjusted, adjusted.rejected, strict=True):
        out[i] = replace(lifts[i], adjusted_p_value=float(p), significant=bool(rejected))
    return out


# ----------------------------------------------------------------------------- SRM


def srm_check(frame: pl.DataFrame, design: Design, threshold: float) -> tuple[SrmCheck, list[str]]:
    """SRM of the customers per variant against the design's weights, with notes.

    Variants of weight 0 are left out of the test (a customer in one is noted).
    """
    counts = dict(frame.group_by("variant").len().iter_rows())
    notes = []
    weighted = [(v, w) for v, w in zip(design.variants, design.weights, strict=True) if w > 0]
    for variant, weight in zip(design.variants, design.weights, strict=True):
        if weight <= 0 and counts.get(variant, 0):
            notes.append(f"variant {variant!r} has weight 0 but {counts[variant]:,} customers")
    check = check_srm(
        [counts.get(v, 0) for v, _ in weighted], [w for _, w in weighted], threshold=threshold
    )
    if len(weighted) < len(design.variants):
        observed = [counts.get(v, 0) for v in design.variants]
        expected = iter(check.expected)
        full = [next(expected) if w > 0 else 0.0 for w in design.weights]
        check = replace(check, observed=tuple(observed), expected=tuple(full))
    return check, notes


# ----------------------------------------------------------------------------- moments


def summary_from_moments(kind: MetricKind, moments: Mapping[str, float]) -> Summary:
    """A variant's summary from n and sums (m: values or numerator, d: a ratio's denominator).

    For a ratio R = sum(m) / sum(d), the delta-method variance per customer is
    sum((m - R d)^2) / (n - 1) / mean(d)^2, as `stats.summarize_ratio` computes it.

    Raises:
        ValueError: when n < 2, or a ratio's denominator sums to 0.
    """
    n = int(moments["n"])
    if n < 2:
        raise ValueError(f"{n} customer(s): at least 2 are needed")
    if kind != "ratio":
        return Summary.from_sums(n, moments["m"], moments["m2"])
    if moments["d"] == 0:
        raise ValueError("the denominator sums to 0, the ratio is undefined")
    ratio = moments["m"] / moments["d"]
    squares = moments["m2"] - 2 * ratio * moments["md"] + ratio**2 * moments["d2"]
    variance = max(squares, 0.0) / (n - 1) / (moments["d"] / n) ** 2
    return Summary(n=n, mean=ratio, variance=variance)


def moment_columns(spec: MetricSpec) -> list[pl.Expr]:
    """Aggregations giving n, m, m2, d, d2, md of a metric over customers with a value."""
    m = pl.col(spec.column)
    d = pl.col(spec.denominator) if spec.denominator else pl.lit(0.0)
    has = m.is_not_null() & (d.is_not_null() if spec.denominator else pl.lit(value=True))
    return [
        has.sum().cast(pl.Float64).alias("n"),
        m.filter(has).sum().alias("m"),
        (m**2).filter(has).sum().alias("m2"),
        d.filter(has).sum().alias("d"),
        (d**2).filter(has).sum().alias("d2"),
        (m * d).filter(has).sum().alias("md"),
    ]


def _lift_from_moments(
    kind: MetricKind,
    control: Mapping[str, float],
    treatment: Mapping[str, float],
    options: AnalysisOptions,
) -> tuple[MeanComparison | None, SequentialComparison | None, str | None]:
    try:
        c, t = summary_from_moments(kind, control), summary_from_moments(kind, treatment)
        fixed = compare_summaries(c, t, alpha=options.alpha)
        sequential = sequential_from_summaries(c, t, alpha=options.alpha, tuning_n=options.tuning_n)
    except ValueError as error:
        return None, None, str(error)
    return fixed, sequential, None


CUMULATIVE_COLUMNS = pl.Schema(
    {
        "day": pl.Int64(),
        "date": pl.Date(),
        "cutoff": pl.Datetime("us", "UTC"),
        "metric": pl.String(),
        "variant": pl.String(),
        "n_control": pl.Int64(),
        "n_treatment": pl.Int64(),
        "mean_control": pl.Float64(),
        "mean_treatment": pl.Float64(),
        "absolute": pl.Float64(),
        "ci_low": pl.Float64(),
        "ci_high": pl.Float64(),
        "sequential_ci_low": pl.Float64(),
        "sequential_ci_high": pl.Float64(),
        "relative": pl.Float64(),
        "relative_ci_low": pl.Float64(),
        "relative_ci_high": pl.Float64(),
        "sequential_relative_ci_low": pl.Float64(),
        "sequential_relative_ci_high": pl.Float64(),
        "p_value": pl.Float64(),
        "sequential_p_value": pl.Float64(),
    }
)


def _comparison_cells(
    fixed: MeanComparison | None, sequential: SequentialComparison | None
) -> dict[str, float]:
    absolute = fixed.absolute if fixed else Lift.undefined()
    relative = fixed.relative if fixed else Lift.undefined()
    seq_abs = sequential.absolute if sequential else Lift.undefined()
    seq_rel = sequential.relative if sequential else Lift.undefined()
    return {
        "mean_control": fixed.control.mean if fixed else math.nan,
        "mean_treatment": fixed.treatment.mean if fixed else math.nan,
        "absolute": absolute.estimate,
        "ci_low": absolute.ci_low,
        "ci_high": absolute.ci_high,
        "sequential_ci_low": seq_abs.ci_low,
        "sequential_ci_high": seq_abs.ci_high,
        "relative": relative.estimate,
        "relative_ci_low": relative.ci_low,
        "relative_ci_high": relative.ci_high,
        "sequential_relative_ci_low": seq_rel.ci_low,
        "sequential_relative_ci_high": seq_rel.ci_high,
        "p_value": absolute.p_value,
        "sequential_p_value": seq_abs.p_value,
    }


def cumulative_series(
    moments: pl.DataFrame, spec: MetricSpec, design: Design, options: AnalysisOptions
) -> pl.DataFrame:
    """The primary metric's lift day by day, with fixed-horizon and sequential bounds.

    Args:
        moments: cumulative n and sums per variant and day (`metrics.cumulative_moments`).
        spec: the metric.
        design: the experiment (its start sets day 0, its end the last cut-off).
        options: alpha and the sequential tuning.

    Returns:
        One row per day and variant against the control (`CUMULATIVE_COLUMNS`); a day where
        a lift cannot be estimated yet has NaN numbers.
    """
    by_variant = {
        variant: rows.sort("day").to_dicts()
        for (variant,), rows in moments.partition_by("variant", as_dict=True).items()
    }
    control = by_variant.get(design.control, [])
    rows: list[dict[str, object]] = []
    for variant in design.treatments:
        for c, t in zip(control, by_variant.get(variant, []), strict=True):
            cutoff = min(design.start + timedelta(days=int(c["day"]) + 1), design.end)
            fixed, sequential, _ = _lift_from_moments(spec.kind, c, t, options)
            rows.append(
                {
                    "day": c["day"],
                    "date": (design.start + timedelta(days=int(c["day"]))).date(),
                    "cutoff": cutoff,
                    "metric": spec.name,
                    "variant": variant,
                    "n_control": int(c["n"]),
                    "n_treatment": int(t["n"]),
                    **_comparison_cells(fixed, sequential),
                }
            )
    return pl.DataFrame(rows, schema=CUMULATIVE_COLUMNS, orient="row")


SEGMENT_COLUMNS = pl.Schema(
    {
        "segment": pl.String(),
        "metric": pl.String(),
        "variant": pl.String(),
        "n_control": pl.Int64(),
        "n_treatment": pl.Int64(),
        **{
            name: dtype
            for name, dtype in CUMULATIVE_COLUMNS.items()
            if name
            not in {"day", "date", "cutoff", "metric", "variant", "n_control", "n_treatment"}
        },
        "message": pl.String(),
    }
)


def segment_breakdown(
    frame: pl.DataFrame, specs: Sequence[MetricSpec], design: Design, options: AnalysisOptions
) -> pl.DataFrame:
    """Every metric's lift within each segment (Welch, no CUPED), per variant.

    Args:
        frame: per-customer values with variant and segment (capped if asked).
        specs: the metrics.
        design: the variants.
        options: alpha and the sequential tuning.

    Returns:
        One row per segment, metric and variant against the control (`SEGMENT_COLUMNS`);
        a segment too small for a lift has NaN numbers and the reason in `message`.
    """
    rows: list[dict[str, object]] = []
    for spec in specs:
        grouped = frame.group_by("segment", "variant").agg(moment_columns(spec))
        cells = {(r["segment"], r["variant"]): r for r in grouped.iter_rows(named=True)}
        empty = dict.fromkeys(("n", "m", "m2", "d", "d2", "md"), 0.0)
        for segment in sorted({s for s, _ in cells}):
            c = cells.get((segment, design.control), empty)
            for variant in design.treatments:
                t = cells.get((segment, variant), empty)
                fixed, sequential, problem = _lift_from_moments(spec.kind, c, t, options)
                rows.append(
                    {
                        "segment": segment,
                        "metric": spec.name,
                        "variant": variant,
                        "n_control": int(c["n"]),
                        "n_treatment": int(t["n"]),
                        **_comparison_cells(fixed, sequential),
                        "message": problem,
                    }
                )
    return pl.DataFrame(rows, schema=SEGMENT_COLUMNS, orient="row")


# ----------------------------------------------------------------------------- verdicts


def lift_words(lift: MetricLift) -> tuple[str, str]:
    """('+3.1%', '95 % CI +1.0% to +5.2%'): relative when defined, else absolute.

    The verdicts and the report show a lift in these words (the level is 1 - alpha).
    """
    level = f"{(1 - lift.comparison.alpha) * 100:g} % CI" if lift.comparison else "CI"
    relative = lift.relative
    if math.isfinite(relative.estimate) and math.isfinite(relative.ci_low):
        return (
            f"{relative.estimate:+.1%}",
            f"{level} {relative.ci_low:+.1%} to {relative.ci_high:+.1%}",
        )
    absolute = lift.absolute
    return (
        f"{absolute.estimate:+,.3g}",
        f"{level} {absolute.ci_low:+,.3g} to {absolute.ci_high:+,.3g}",
    )


def _describe(lift: MetricLift) -> str:
    """'+3.1% (95 % CI +1.0% to +5.2%)', relative when defined, else absolute."""
    estimate, interval = lift_words(lift)
    return f"{estimate} ({interval})"


def _guardrail_words(harmed: Sequence[MetricLift]) -> str:
    if not harmed:
        return "no guardrail is worse."
    worse = "; ".join(f"{g.metric} {_describe(g)}" for g in harmed)
    return f"but guardrail{'s' if len(harmed) > 1 else ''} got worse: {worse}."


def verdict(
    primary: MetricLift, guardrails: Sequence[MetricLift], srm: SrmCheck, alpha: float
) -> Verdict:
    """The decision on one variant from its primary metric, its guardrails and the SRM check.

    Ship when the primary metric improved significantly (after correction) and no guardrail
    is worse (its 95 % interval wholly on the bad side, uncorrected: guardrails are read to
    catch harm); do not ship when the primary got significantly worse or a guardrail did;
    otherwise inconclusive. A sample ratio mismatch makes every verdict invalid.
    """
    name, variant = primary.metric, primary.variant
    if srm.mismatch:
        text = (
            f"Do not trust these results: sample ratio mismatch (chi-square p = "
            f"{srm.p_value:.2g} < {srm.threshold:g}); the split of customers is not the one "
            "designed. Find the cause in assignment or logging first."
        )
        return Verdict(variant, "invalid", text)
    if primary.comparison is None:
        return Verdict(variant, "inconclusive", f"No verdict on {name}: {primary.message}")
    harmed = [g for g in guardrails if g.comparison is not None and g.harmful]
    effect = _describe(primary)
    chance = (
        f"chance to beat control {primary.bayesian.absolute.chance_to_win:.0%}"
        if primary.bayesian
        else ""
    )
    if primary.beneficial:
        decision: Decision = "do_not_ship" if harmed else "ship"
        text = f"{variant} improves {name}: {effect}, {chance}; {_guardrail_words(harmed)}"
        return Verdict(variant, decision, text)
    if primary.significant:
        text = f"{variant} makes {name} worse: {effect}; keep the control."
        return Verdict(variant, "do_not_ship", text)
    p = primary.adjusted_p_value
    text = (
        f"No significant difference on {name} yet: {effect}, adjusted p = {p:.2g} "
        f"(alpha {alpha:g}), {chance}; "
    )
    if harmed:
        return Verdict(variant, "do_not_ship", text + _guardrail_words(harmed))
    return Verdict(
        variant, "inconclusive", text + "keep collecting, or stop and call it no effect."
    )


# ----------------------------------------------------------------------------- the whole


def _role(spec: MetricSpec, primary: str, guardrails: Sequence[str]) -> Role:
    if spec.name == primary:
        return "primary"
    return "guardrail" if spec.name in guardrails else "secondary"


def analyze(
    design: Design,
    customers: pl.DataFrame,
    specs: Sequence[MetricSpec],
    options: AnalysisOptions,
    *,
    primary_metric: str,
    guardrail_metrics: Sequence[str] = (),
    cumulative: pl.DataFrame | None = None,
    missing: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> ExperimentAnalysis:
    """Analyse every metric for every variant against the control.

    Args:
        design: the experiment, its variants and window.
        customers: one row per customer: customer_id, variant, segment and the columns the
            specs name.
        specs: the metrics, in the order to report them.
        options: alpha, correction, cap, SRM threshold, sequential tuning.
        primary_metric: the metric the decision is made on (one of the specs).
        guardrail_metrics: metrics that must not get worse.
        cumulative: the primary metric's cumulative moments per variant and day
            (`metrics.cumulative_moments`); None: no series.
        missing: metrics without data, to the reason: reported, not estimated.
        notes: notes on the data, passed through to `messages`.

    Returns:
        The analysis.

    Raises:
        ValueError: when the primary metric is not among the specs, or the control has no
            customers.
    """
    names = [s.name for s in specs]
    if primary_metric not in names:
        raise ValueError(f"primary metric {primary_metric!r} is not analysed (metrics: {names})")
    missing = dict(missing or {})
    specs = [replace(s, role=_role(s, primary_metric, guardrail_metrics)) for s in specs]
    srm, srm_notes = srm_check(customers, design, options.srm_threshold)
    capped, caps = cap_metrics(customers, specs, options.cap_quantile)
    lifts = []
    for spec in specs:
        for variant in design.treatments:
            if spec.name in missing:
                lift = MetricLift(spec.name, variant, spec.kind, spec.role, spec.lower_is_better)
                lifts.append(replace(lift, message=f"{spec.name}: {missing[spec.name]}"))
                continue
            lift = compare_metric(capped, spec, (design.control, variant), options)
            cap, n_capped = caps.get(spec.name, (None, 0))
            lifts.append(replace(lift, cap=cap, n_capped=n_capped))
    lifts = adjust(lifts, options)
    verdicts = tuple(
        verdict(
            next(x for x in lifts if x.metric == primary_metric and x.variant == variant),
            [x for x in lifts if x.variant == variant and x.role == "guardrail"],
            srm,
            options.alpha,
        )
        for variant in design.treatments
    )
    messages = [*notes, *srm_notes]
    messages += sorted({x.message for x in lifts if x.message})
    messages += sorted(
        {
            f"{x.metric}: CUPED {x.cuped_message}"
            for x in lifts
            if x.cuped_message and x.comparison and x.cuped_message != NO_COVARIATE
        }
    )
    spec = next(s for s in specs if s.name == primary_metric)
    series = (
        cumulative_series(cumulative, spec, design, options)
        if cumulative is not None
        else pl.DataFrame(schema=CUMULATIVE_COLUMNS)
    )
    return ExperimentAnalysis(
        design=design,
        options=options,
        primary_metric=primary_metric,
        guardrail_metrics=tuple(g for g in guardrail_metrics if g in names),
        srm=srm,
        lifts=tuple(lifts),
        verdicts=verdicts,
        messages=tuple(messages),
        customers=customers,
        cumulative=series,
        segments=segment_breakdown(
            capped, [s for s in specs if s.name not in missing], design, options
        ),
    )
