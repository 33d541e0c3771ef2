"""The experiment report: one self-contained HTML page a marketer can read.

Built from an `ExperimentAnalysis` with `cashback.reports`; nothing is re-estimated here but
the power plan, which reads the primary metric's observed traffic and variance. Sections:

1. the verdict in plain words per variant, with the key numbers (customers per variant, the
   primary metric's lift with its interval, the chance to beat control) and a warning box
   when the split is broken (sample ratio mismatch);
2. the split: customers per variant against the design (SRM chi-square test);
3. the primary metric day by day, with the fixed-horizon interval and the always-valid
   bounds (imported outcomes have no time: the page says so);
4. the lift of every metric: a forest plot and tables (absolute and relative lifts,
   CUPED, adjusted p-values, always-valid intervals, chance to beat control, expected
   loss), guardrails marked;
5. the primary metric by segment;
6. the power plan: the smallest lift the traffic could detect, with and without CUPED, and
   the days the observed lift would need;
7. the notes of the analysis and how the numbers were computed.

Numbers are shown as the analysis words them (`analysis.lift_words`): a relative lift as
"+7.7%", its interval as "95 % CI -14.7% to +30.1%", a chance as "76%".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from cashback.reports import (
    PALETTE,
    Block,
    KeyNumber,
    KeyNumbers,
    Note,
    Plot,
    Report,
    Section,
    Table,
    Tone,
    Verdict,
    format_number,
)
from models.experiments.analysis import ExperimentAnalysis, MetricLift, lift_words
from models.experiments.analysis import Verdict as Decision
from models.experiments.planning import VariantPlan, experiment_plans
from models.experiments.power import PowerPlan
from models.experiments.report_figures import (
    ForestRow,
    PowerCurve,
    cumulative_plot,
    forest_plot,
    power_plot,
)
from models.experiments.stats import FloatArray

HEADLINES: dict[str, tuple[str, Tone]] = {
    "ship": ("Ship {variant}", "positive"),
    "do_not_ship": ("Do not ship {variant}", "negative"),
    "inconclusive": ("No clear effect of {variant} yet", "neutral"),
    "invalid": ("{variant}: results not valid, fix the split first", "caution"),
}
NA = "n/a"
CORRECTIONS = {"holm": "Holm's method", "bh": "Benjamini-Hochberg"}


# ----------------------------------------------------------------------------- words


def label(metric: str) -> str:
    """A metric's name for people: 'net_incremental_margin' -> 'net incremental margin'."""
    return metric.replace("_", " ")


def signed(value: float) -> str:
    """A difference with its sign, in the style of `format_number` ('+12.30', '-0.0452')."""
    if not math.isfinite(value):
        return NA
    sign = "+" if value > 0 else "-" if value < 0 else ""
    return sign + format_number(abs(value))


def percent(value: float, spec: str = "+.1%") -> str:
    """A share as a percentage ('+7.7%'); 'n/a' when undefined."""
    return format(value, spec) if math.isfinite(value) else NA


def loss(value: float) -> str:
    """An expected loss: '≈ 0' when negligible (below 1e-6), else as `format_number`."""
    return "≈ 0" if 0 <= value < 1e-6 else format_number(value)


def interval(low: float, high: float, words: Callable[[float], str] = signed) -> str:
    """'low to high', or 'n/a'."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return NA
    return f"{words(low)} to {words(high)}"


def p_value(value: float) -> str:
    """A p-value for a table: '< 0.001' below that, else three decimals."""
    if not math.isfinite(value):
        return NA
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def level(analysis: ExperimentAnalysis) -> str:
    """The intervals' level in words: '95 %'."""
    return f"{(1 - analysis.options.alpha) * 100:g} %"


def variant_color(analysis: ExperimentAnalysis, variant: str) -> str:
    """Each variant's colour in the plots (the palette after the control's)."""
    index = analysis.design.treatments.index(variant)
    return PALETTE[(index + 2) % len(PALETTE)]


def lift_label(lift: MetricLift, *, variants: int, role: bool = False) -> str:
    """'fraud loss · treatment (guardrail, lower is better)'.

    Args:
        lift: the lift named.
        variants: how many variants are compared with the control (the variant is named
            only when there are several).
        role: whether to say "primary" or "guardrail".

    Returns:
        The name.
    """
    name = label(lift.metric) + (f" · {lift.variant}" if variants > 1 else "")
    notes: list[str] = [lift.role] if role and lift.role != "secondary" else []
    notes += ["lower is better"] if lift.lower_is_better else []
    return name + (f" ({', '.join(notes)})" if notes else "")


def text_table(
    caption: str, columns: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]]
) -> Table:
    """A table of formatted cells; `columns` gives each header and whether it is numeric."""
    return Table(
        caption=caption,
        columns=tuple(name for name, _ in columns),
        rows=tuple(tuple(row) for row in rows),
        numeric=tuple(numeric for _, numeric in columns),
    )


# ----------------------------------------------------------------------------- verdict


def verdict_block(decision: Decision) -> Verdict:
    """The analysis' verdict on a variant as a call-out: a headline and its reasons."""
    headline, tone = HEADLINES[decision.decision]
    return Verdict(headline.format(variant=decision.variant), decision.text, tone)


def srm_note(analysis: ExperimentAnalysis) -> Note:
    """The sample ratio check in words: a warning box on a mismatch."""
    srm = analysis.srm
    if srm.mismatch:
        return Note(
            f"Sample ratio mismatch: the customers per variant are not the designed split "
            f"(chi-square p = {srm.p_value:.2g}, below {srm.threshold:g}). Assignment or "
            "logging is broken: do not act on these results before the cause is found.",
            tone="negative",
        )
    return Note(
        f"The split is as designed: chi-square p = {srm.p_value:.2g} (a mismatch is flagged "
        f"below {srm.threshold:g}).",
        tone="positive",
    )


def key_numbers(analysis: ExperimentAnalysis) -> KeyNumbers:
    """Customers per variant, then per variant the primary lift and its chance to win."""
    design, srm = analysis.design, analysis.srm
    items = [
        KeyNumber(f"Customers in {variant}", f"{n:,}", f"designed share {weight:.1%}")
        for variant, n, weight in zip(design.variants, srm.observed, design.weights, strict=True)
    ]
    primary = label(analysis.primary_metric)
    for variant in design.treatments:
        lift = analysis.lift(analysis.primary_metric, variant)
        if lift.comparison is None:
            items.append(KeyNumber(f"{primary}, {variant}", NA, lift.message or ""))
            continue
        estimate, words = lift_words(lift)
        items.append(KeyNumber(f"{primary} lift, {variant}", estimate, words))
        if lift.bayesian is not None:
            posterior = lift.bayesian.absolute
            items.append(
                KeyNumber(
                    f"Chance {variant} beats {design.control}",
                    f"{posterior.chance_to_win:.0%}",
                    f"expected loss if shipped {loss(posterior.expected_loss)}",
                )
            )
    return KeyNumbers(items)


def verdict_section(analysis: ExperimentAnalysis) -> Section:
    """What to do, first: the verdicts, the SRM warning if any, the key numbers."""
    blocks: list[Block] = [verdict_block(v) for v in analysis.verdicts]
    if analysis.srm.mismatch:
        blocks.insert(0, srm_note(analysis))
    blocks.append(key_numbers(analysis))
    return Section("Verdict", blocks)


def srm_section(analysis: ExperimentAnalysis) -> Section:
    """Customers per variant against the design."""
    design, srm = analysis.design, analysis.srm
    rows = [
        (variant, f"{weight:.1%}", f"{n:,}", f"{expected:,.1f}")
        for variant, weight, n, expected in zip(
            design.variants, design.weights, srm.observed, srm.expected, strict=True
        )
    ]
    columns = [("Variant", False), ("Designed share", True), ("Customers", True)]
    table = text_table("Customers per variant", [*columns, ("Expected", True)], rows)
    intro = (
        "Before reading any lift: did each variant get the share of customers it was "
        "designed to get? A gap larger than chance (a sample ratio mismatch) means that "
        "assignment or logging is broken, and every number below may be biased."
    )
    return Section("Is the split as designed?", [intro, srm_note(analysis), table])


# ----------------------------------------------------------------------------- over time


def cumulative_section(analysis: ExperimentAnalysis) -> Section:
    """The primary metric's lift day by day, or why there is none."""
    metric = label(analysis.primary_metric)
    heading = "The primary metric day by day"
    series = analysis.cumulative
    if series.is_empty():
        reason = (
            "imported outcomes carry no timestamps"
            if analysis.design.source == "outcomes"
            else "the primary metric has no data in the window"
        )
        note = Note(
            f"No day-by-day series: {reason}, so the effect over time cannot be shown. "
            "Read the lifts below at the end of the experiment.",
            tone="neutral",
        )
        return Section(heading, [note])
    words = level(analysis)
    intro = (
        f"The lift in {metric} (variant minus control, per customer) with the customers "
        f"and days seen so far. The shaded band is the fixed-horizon {words} interval: it is "
        "only valid on the day the experiment was planned to end, and looking at it every "
        "day and stopping at the first 'significant' day finds effects that are not there. "
        "The dashed always-valid bounds hold on every day at once: when they exclude 0, the "
        "experiment may be stopped, whenever that is."
    )
    return Section(
        heading,
        [
            intro,
            cumulative_plot(
                series, metric=metric, level=words, description=_series_words(series, metric)
            ),
        ],
    )


def _series_words(series: pl.DataFrame, metric: str) -> str:
    parts = []
    for (variant,), rows in series.partition_by("variant", as_dict=True).items():
        last = rows.sort("day").row(-1, named=True)
        parts.append(
            f"{variant}: after {last['day'] + 1} days the lift in {metric} is "
            f"{signed(last['absolute'])}, fixed interval "
            f"{interval(last['ci_low'], last['ci_high'])}, always-valid bounds "
            f"{interval(last['sequential_ci_low'], last['sequential_ci_high'])}."
        )
    return " ".join(parts)


# ----------------------------------------------------------------------------- lifts


def _adjusted(lift: MetricLift) -> tuple[float, float, float] | None:
    if lift.cuped is None or lift.cuped_message is not None:
        return None
    relative = lift.cuped.adjusted.relative
    return relative.estimate, relative.ci_low, relative.ci_high


def _plotted(lift: MetricLift) -> bool:
    relative = lift.relative
    return math.isfinite(relative.estimate) and math.isfinite(relative.ci_low)


ROLE_PANELS = (
    ("primary", "Primary metric"),
    ("guardrail", "Guardrails"),
    ("secondary", "Other metrics"),
)


def lift_plot(analysis: ExperimentAnalysis) -> Plot | None:
    """Every metric's relative lift with its interval, CUPED's below, a panel per role.

    Returns:
        The plot; None when no relative lift was estimated.
    """
    lifts = [x for x in analysis.lifts if _plotted(x)]
    if not lifts:
        return None
    variants = len(analysis.design.treatments)
    groups = [
        (
            title,
            [
                ForestRow(
                    lift_label(x, variants=variants),
                    x.relative.estimate,
                    x.relative.ci_low,
                    x.relative.ci_high,
                    variant_color(analysis, x.variant),
                    _adjusted(x),
                )
                for x in lifts
                if x.role == role
            ],
        )
        for role, title in ROLE_PANELS
    ]
    control = analysis.design.control
    described = "; ".join(
        f"{label(x.metric)}, {x.variant}: {' '.join(lift_words(x))}" for x in lifts
    )
    return forest_plot(
        [(title, rows) for title, rows in groups if rows],
        title="Relative lift per metric",
        description=f"Relative lift against {control} with its {level(analysis)} interval, "
        f"each panel on its own scale. {described}.",
        xlabel=f"relative lift against {control}",
        legend=[(variant_color(analysis, v), v) for v in analysis.design.treatments],
    )


def lift_rows(analysis: ExperimentAnalysis) -> list[tuple[str, ...]]:
    """Means, absolute and relative lifts with intervals, and the adjusted p-value."""
    rows: list[tuple[str, ...]] = []
    variants = len(analysis.design.treatments)
    for x in analysis.lifts:
        name = lift_label(x, variants=variants, role=True)
        if x.comparison is None:
            rows.append((name, *(NA,) * 7))
            continue
        rows.append(
            (
                name,
                format_number(x.comparison.control.mean),
                format_number(x.comparison.treatment.mean),
                signed(x.absolute.estimate),
                interval(x.absolute.ci_low, x.absolute.ci_high),
                percent(x.relative.estimate),
                interval(x.relative.ci_low, x.relative.ci_high, percent),
                p_value(x.adjusted_p_value),
            )
        )
    return rows


def read_rows(analysis: ExperimentAnalysis) -> list[tuple[str, ...]]:
    """CUPED, always-valid and Bayesian reads of every lift."""
    rows: list[tuple[str, ...]] = []
    variants = len(analysis.design.treatments)
    for x in analysis.lifts:
        cuped = x.cuped if x.cuped and x.cuped_message is None else None
        adjusted = cuped.adjusted.absolute if cuped else None
        sequential = x.sequential.absolute if x.sequential else None
        posterior = x.bayesian.absolute if x.bayesian else None
        rows.append(
            (
                lift_label(x, variants=variants, role=True),
                signed(adjusted.estimate) if adjusted else NA,
                interval(adjusted.ci_low, adjusted.ci_high) if adjusted else NA,
                percent(cuped.variance_reduction, ".0%") if cuped else NA,
                interval(sequential.ci_low, sequential.ci_high) if sequential else NA,
                percent(posterior.chance_to_win, ".0%") if posterior else NA,
                loss(posterior.expected_loss) if posterior else NA,
            )
        )
    return rows


def guardrail_blocks(analysis: ExperimentAnalysis) -> list[Block]:
    """A warning per guardrail that got worse, else one sentence saying none did."""
    guardrails = [x for x in analysis.lifts if x.role == "guardrail"]
    if not guardrails:
        return ["No guardrail metric is set for this experiment."]
    harmed = [x for x in guardrails if x.comparison is not None and x.harmful]
    names = ", ".join(sorted({label(x.metric) for x in guardrails}))
    if not harmed:
        return [
            (
                f"Guardrails ({names}): none got worse (no {level(analysis)} interval lies "
                "wholly on the bad side of 0)."
            )
        ]
    return [
        Note(
            f"Guardrail {label(x.metric)} got worse with {x.variant}: "
            + " (".join(lift_words(x))
            + ").",
            tone="negative",
        )
        for x in harmed
    ]


def lift_section(analysis: ExperimentAnalysis) -> Section:
    """Every metric: the forest plot, the lift table, the other reads, guardrails."""
    words = level(analysis)
    options = analysis.options
    correction = CORRECTIONS[options.correction]
    intro = (
        f"Each metric per customer, variant against {analysis.design.control}: the mean per "
        f"customer in each, and the lift with its {words} interval, absolute (in the metric's "
        "units) and relative. The p-values "
        f"are adjusted for the {len(analysis.lifts)} comparisons together ({correction}). "
        "Hollow squares are the CUPED-adjusted lifts: the same lift, with the noise that "
        "each customer's pre-period value explains removed. Guardrails must not get worse."
    )
    blocks: list[Block] = [intro]
    figure = lift_plot(analysis)
    if figure is not None:
        blocks.append(figure)
    lift_columns = [
        ("Metric", False),
        ("Control", True),
        ("Variant", True),
        ("Lift", True),
        (f"{words} CI", True),
        ("Relative", True),
        ("Relative CI", True),
        ("Adjusted p", True),
    ]
    read_columns = [
        ("Metric", False),
        ("CUPED lift", True),
        (f"CUPED {words} CI", True),
        ("Variance removed", True),
        ("Always-valid CI", True),
        ("Chance to win", True),
        ("Expected loss", True),
    ]
    blocks += [
        text_table("Lift per metric", lift_columns, lift_rows(analysis)),
        *guardrail_blocks(analysis),
        text_table("CUPED, always-valid and Bayesian reads", read_columns, read_rows(analysis)),
    ]
    return Section("Lift per metric", blocks)


# ----------------------------------------------------------------------------- segments


SEGMENT_COLUMNS = (
    "Segment",
    "Customers",
    "Lift",
    "CI",
    "Relative",
    "Relative CI",
    "p",
)


def segment_cells(row: dict[str, Any], variants: int) -> tuple[str, ...]:
    """One segment's row of the table: its name (and variant), customers, lifts, p."""
    name = str(row["segment"]) + (f" · {row['variant']}" if variants > 1 else "")
    return (
        name,
        f"{row['n_control']:,} / {row['n_treatment']:,}",
        signed(row["absolute"]),
        interval(row["ci_low"], row["ci_high"]),
        percent(row["relative"]),
        interval(row["relative_ci_low"], row["relative_ci_high"], percent),
        p_value(row["p_value"]),
    )


def segment_plot(
    analysis: ExperimentAnalysis, rows: list[dict[str, Any]], cells: list[tuple[str, ...]]
) -> Plot:
    """The primary metric's relative lift per segment (rows with a relative lift only)."""
    metric = label(analysis.primary_metric)
    forest = [
        ForestRow(
            cell[0],
            row["relative"],
            row["relative_ci_low"],
            row["relative_ci_high"],
            variant_color(analysis, row["variant"]),
        )
        for row, cell in zip(rows, cells, strict=True)
        if math.isfinite(row["relative"]) and math.isfinite(row["relative_ci_low"])
    ]
    return forest_plot(
        [("", forest)],
        title=f"{metric} by segment",
        description=f"Relative lift in {metric} per segment: "
        + "; ".join(f"{c[0]}: {c[4]} ({c[5]})" for c in cells),
        xlabel=f"relative lift in {metric}",
    )


def segment_section(analysis: ExperimentAnalysis) -> Section:
    """The primary metric's lift within each segment (Welch, no CUPED)."""
    heading = "By segment"
    metric = label(analysis.primary_metric)
    frame = analysis.segments.filter(pl.col("metric") == analysis.primary_metric)
    if frame["segment"].n_unique() <= 1:
        note = Note(
            "These customers carry no segment (imported outcomes are analysed as one group): "
            "the lifts above are the only breakdown.",
            tone="neutral",
        )
        return Section(heading, [note])
    intro = (
        f"The lift in {metric} within each segment. Segments are smaller than the whole "
        "experiment, so their intervals are wider, and with many segments one will look "
        "different by chance: read them as hints for the next experiment, not as decisions."
    )
    variants = len(analysis.design.treatments)
    ordered = frame.sort("segment", "variant")
    rows = ordered.filter(pl.col("message").is_null()).to_dicts()
    cells = [segment_cells(row, variants) for row in rows]
    blocks: list[Block] = [intro]
    if rows:
        columns = [(c, i > 0) for i, c in enumerate(SEGMENT_COLUMNS)]
        columns[3] = (f"{level(analysis)} CI", True)
        blocks += [
            segment_plot(analysis, rows, cells),
            text_table(f"{metric} by segment (customers: control / variant)", columns, cells),
        ]
    skipped = ordered.filter(pl.col("message").is_not_null()).to_dicts()
    if skipped:
        blocks.append(
            "Too few customers for a lift in: "
            + "; ".join(
                f"{segment_cells(r, variants)[0]} ({r['n_control']:,} / {r['n_treatment']:,})"
                for r in skipped
            )
            + "."
        )
    return Section(heading, blocks)


# ----------------------------------------------------------------------------- power


def _mde_words(plan: PowerPlan | None, relative: bool) -> str:
    if plan is None:
        return NA
    if relative:
        return f"±{plan.mde_relative:.1%}"
    return f"±{format_number(plan.mde_absolute)}"


def _days_words(plan: PowerPlan | None) -> str:
    return NA if plan is None else f"{plan.days:,.0f}"


def power_curve(plan: VariantPlan, relative: bool) -> PowerCurve:
    """The MDE over durations from a quarter of the experiment's to twice it."""
    days = np.linspace(max(plan.days / 4, 1.0), max(plan.days * 2, 2.0), 60)
    scale = abs(plan.baseline) if relative else 1.0

    def curve(at_days: PowerPlan) -> FloatArray:
        # at a fixed daily traffic the MDE scales as 1 / sqrt(days)
        mde: FloatArray = at_days.mde_absolute * np.sqrt(plan.days / days) / scale
        return mde

    return PowerCurve(
        variant=plan.variant,
        days=days,
        mde=curve(plan.plain),
        mde_cuped=curve(plan.cuped) if plan.cuped else None,
        observed=plan.observed / scale,
    )


def _plan_cells(plan: VariantPlan, relative: bool) -> tuple[str, ...]:
    return (
        plan.variant,
        f"{plan.customers:,}",
        f"{plan.days:,.0f}",
        _mde_words(plan.plain, relative),
        _mde_words(plan.cuped, relative),
        f"{plan.rho:.2f}",
        _days_words(plan.needed),
        _days_words(plan.needed_cuped),
    )


PLAN_COLUMNS = (
    ("Variant", False),
    ("Customers", True),
    ("Days", True),
    ("MDE", True),
    ("MDE with CUPED", True),
    ("CUPED rho", True),
    ("Days for the lift seen", True),
    ("with CUPED", True),
)


def power_section(analysis: ExperimentAnalysis, power: float) -> Section:
    """What the traffic could detect on the primary metric, with and without CUPED."""
    heading = "Could this experiment detect the effect?"
    metric = label(analysis.primary_metric)
    plans = experiment_plans(analysis, power)
    if not plans:
        return Section(
            heading, [Note(f"No plan: {metric} has no estimated lift to plan on.", "neutral")]
        )
    relative = all(p.baseline != 0 for p in plans)
    intro = (
        f"The smallest lift in {metric} that this traffic detects {power:.0%} of the time "
        f"(the minimum detectable effect, MDE, of a two-sided test at "
        f"{analysis.options.alpha:g}), from the customers and days of this experiment and "
        "the control's variance. CUPED shrinks it by sqrt(1 - rho^2), rho being the "
        "correlation of the metric with its pre-period value. A lift smaller than the MDE "
        "can be real and still be missed: 'no significant difference' then means 'too small "
        "to see with this traffic', not 'no effect'. The last columns give the days the lift "
        "seen here would need to be detected at the same daily traffic."
    )
    rows = [_plan_cells(p, relative) for p in plans]
    figure = power_plot(
        [power_curve(p, relative) for p in plans],
        duration=plans[0].days,
        percent=relative,
        ylabel="smallest detectable lift" + (" (relative)" if relative else ""),
        description=f"Minimum detectable lift in {metric} against the duration. "
        + "; ".join(f"{r[0]}: {r[3]} at {r[2]} days, {r[4]} with CUPED" for r in rows),
    )
    return Section(
        heading, [intro, figure, text_table(f"Power plan for {metric}", PLAN_COLUMNS, rows)]
    )


# ----------------------------------------------------------------------------- notes


def method_words(analysis: ExperimentAnalysis) -> str:
    """How the numbers were computed, in one paragraph."""
    options = analysis.options
    cap = (
        f" Mean metrics are capped at their pooled {options.cap_quantile:g} quantile."
        if options.cap_quantile
        else ""
    )
    return (
        "The unit is the customer: every assigned customer counts once, whether they bought "
        f"or not. Intervals are Welch's at {level(analysis)}; relative lifts and ratio "
        "metrics (such as the average order value) use the delta method. CUPED adjusts each "
        "metric by the customer's value before the experiment. The always-valid intervals "
        f"are a normal-mixture confidence sequence, tightest at {options.tuning_n:,.0f} "
        "customers. The chance to beat control and the expected loss (what is lost on "
        "average by shipping a variant that is in fact worse) come from a flat-prior normal "
        f"posterior of the lift. P-values are adjusted with {CORRECTIONS[options.correction]}."
        f"{cap}"
    )


def notes_section(analysis: ExperimentAnalysis) -> Section:
    """The analysis' notes on the data, then the method."""
    blocks: list[Block] = [Note(m, tone="neutral") for m in analysis.messages]
    blocks.append(method_words(analysis))
    return Section("Notes and method", blocks)


# ----------------------------------------------------------------------------- the page


def experiment_report(
    analysis: ExperimentAnalysis, *, power: float, hypothesis: str | None = None
) -> Report:
    """The whole page of one experiment.

    Args:
        analysis: the analysis (`pipelines.experiment_analysis.run`).
        power: the power of the planning calculator (`ExperimentSettings.power`).
        hypothesis: the definition's hypothesis, shown under the title when known.

    Returns:
        The report, to render with `cashback.reports.write_report`.
    """
    design = analysis.design
    window = f"{design.start:%Y-%m-%d} to {design.end:%Y-%m-%d} UTC"
    data_end = f"{design.data_end:%Y-%m-%d %H:%M} UTC" if design.data_end else "imported outcomes"
    treatments = ", ".join(design.treatments)
    subtitle = hypothesis or (
        f"{treatments} against {design.control}, on {label(analysis.primary_metric)}"
    )
    return Report(
        title=f"Experiment {design.key}: results",
        subtitle=subtitle,
        meta=[
            ("Window", window),
            ("Data until", data_end),
            ("Primary metric", label(analysis.primary_metric)),
            ("Guardrails", ", ".join(label(g) for g in analysis.guardrail_metrics) or "none"),
        ],
        sections=[
            verdict_section(analysis),
            srm_section(analysis),
            cumulative_section(analysis),
            lift_section(analysis),
            segment_section(analysis),
            power_section(analysis, power),
            notes_section(analysis),
        ],
    )
