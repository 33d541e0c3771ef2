"""`cashback experiments analyze KEY`: the analysis of an experiment from the contract tables.

The experiment is found by key or experiment_id in the experiments table; its stored
definition (if it was created with `cashback experiments create`) names the primary and
guardrail metrics, otherwise the settings do (`experiments.primary_metric`,
`experiments.guardrail_metrics`). The control is the first variant.

- An imported experiment with rows in the `outcomes` table (Cookie Cats, Hillstrom) is
  analysed on those outcomes, one metric per outcome name. Outcomes named in
  `experiments.outcome_covariates` (Hillstrom's `history`: the spend of the year before)
  are pre-experiment values: they are not analysed but used as the CUPED covariate of
  every outcome; without one, CUPED is skipped and the result says so.
- Any other experiment is analysed on the events: per customer from the assignment to the
  experiment's end (or the data's end), with the metrics of `models.experiments.metrics`,
  CUPED on each metric's pre-period value, the primary metric day by day, and segments from
  the `customer_scores` feature table when it exists, else the lifecycle stage at the
  assignment.

Results are written to `<data_dir>/<experiments.results_subdirectory>/<key>/` as parquet
(lifts, srm, verdicts, messages, cumulative, segments, customers), swapped in whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import present_tables, read_table, staged_directory, write_parquet_atomic
from cashback.vocab import ExperimentMetric
from features.asof import elapsed_days
from features.lifecycle import lifecycle_stage
from features.store import EVENT_TS, batch_table_path
from models.experiments.analysis import (
    ALL_SEGMENTS,
    AnalysisOptions,
    Design,
    ExperimentAnalysis,
    MetricKind,
    MetricSpec,
    Source,
    analyze,
)
from models.experiments.metrics import (
    GROSS_SPEND,
    LAST_PURCHASE,
    PRE,
    PURCHASES_YEAR,
    RETENTION_DAYS,
    additive_increments,
    claim_events,
    cumulative_moments,
    customer_metrics,
    fraud_claims,
    retention_increments,
    transaction_events,
    window_end,
)
from models.experiments.multiple_testing import Method
from models.experiments.store import ExperimentStore

KEY = "customer_id"
TICK = timedelta(microseconds=1)
CLAIM_METRICS = (
    ExperimentMetric.PARTICIPATION_RATE.value,
    ExperimentMetric.CASHBACK_PAID.value,
    ExperimentMetric.FRAUD_LOSS.value,
)
LOWER_IS_BETTER = {ExperimentMetric.CASHBACK_PAID.value, ExperimentMetric.FRAUD_LOSS.value}
PROPORTIONS = {
    ExperimentMetric.PARTICIPATION_RATE.value,
    ExperimentMetric.RETENTION_7D.value,
    ExperimentMetric.RETENTION_30D.value,
}
IMPORTED_WEIGHTS = (
    "the weights of an imported experiment are its observed shares (the importer's "
    "convention): the SRM check compares the counts with their own rounded shares"
)


@dataclass(frozen=True)
class Analyzed:
    """The analysis and the files it was written to (empty when not written)."""

    analysis: ExperimentAnalysis
    paths: Mapping[str, Path]


@dataclass(frozen=True)
class _Experiment:
    """The experiments-table row of the experiment, and its metrics."""

    experiment_id: str
    key: str
    variants: tuple[str, ...]
    weights: tuple[float, ...]
    start: datetime
    end: datetime | None
    primary: str
    guardrails: tuple[str, ...]

    def design(self, source: Source, end: datetime, data_end: datetime | None) -> Design:
        """The design analysed: these variants, from the start to `end`."""
        return Design(
            key=self.key,
            experiment_id=self.experiment_id,
            source=source,
            variants=self.variants,
            weights=self.weights,
            start=self.start,
            end=end,
            data_end=data_end,
        )


def event_specs() -> list[MetricSpec]:
    """The event metrics, in `ExperimentMetric` order, each with its pre-period covariate."""
    specs = []
    for metric in ExperimentMetric:
        name = metric.value
        if metric == ExperimentMetric.AVERAGE_ORDER_VALUE:
            denominator = ExperimentMetric.PURCHASES_PER_CUSTOMER.value
            specs.append(MetricSpec(name, "ratio", GROSS_SPEND, denominator=denominator))
            continue
        kind: MetricKind = "proportion" if name in PROPORTIONS else "mean"
        lower = name in LOWER_IS_BETTER
        specs.append(MetricSpec(name, kind, name, covariate=name + PRE, lower_is_better=lower))
    return specs


def results_dir(settings: Settings, key: str) -> Path:
    """Where the results of experiment `key` are written."""
    return settings.data_dir / settings.experiments.results_subdirectory / key


def _find(settings: Settings, key: str) -> _Experiment:
    directory = settings.data_dir
    if "experiments" not in present_tables(directory):
        msg = f"{directory}: no experiments table: nothing to analyse"
        raise CashbackError(msg)
    table = read_table(directory, "experiments").collect()
    found = table.filter((pl.col("key") == key) | (pl.col("experiment_id") == key))
    if found.is_empty():
        known = ", ".join(sorted(table["key"].to_list())) or "none"
        msg = f"no experiment {key!r} (known: {known})"
        raise CashbackError(msg)
    row = found.row(0, named=True)
    primary = settings.experiments.primary_metric
    guardrails = settings.experiments.guardrail_metrics
    store = ExperimentStore.from_settings(settings)
    defined = {r.key: r.defined for r in store.list_experiments()}
    if defined.get(row["key"]):
        definition = store.get(row["key"])
        primary = definition.primary_metric.value
        guardrails = tuple(g.value for g in definition.guardrail_metrics)
    return _Experiment(
        experiment_id=row["experiment_id"],
        key=row["key"],
        variants=tuple(v["name"] for v in row["variants"]),
        weights=tuple(float(v["weight"]) for v in row["variants"]),
        start=row["start_ts"],
        end=row["end_ts"],
        primary=primary,
        guardrails=tuple(guardrails),
    )


def _assignments(settings: Settings, experiment: _Experiment) -> pl.DataFrame:
    directory = settings.data_dir
    if "assignments" not in present_tables(directory):
        rows = pl.DataFrame()
    else:
        rows = (
            read_table(directory, "assignments")
            .filter(pl.col("experiment_id") == experiment.experiment_id)
            .select(KEY, "variant", "ts")
            .collect()
        )
    if rows.is_empty():
        msg = (
            f"experiment {experiment.key!r} has no assignments: nothing to analyse yet "
            f"(`cashback experiments assign {experiment.key}` assigns customers)"
        )
        raise CashbackError(msg)
    return rows


def _known_variants(
    assignments: pl.DataFrame, experiment: _Experiment
) -> tuple[pl.DataFrame, list[str]]:
    """The assignments to the experiment's variants, and a note on any others."""
    known = assignments.filter(pl.col("variant").is_in(experiment.variants))
    unknown = assignments.height - known.height
    notes = []
    if unknown:
        others = sorted(set(assignments["variant"].to_list()) - set(experiment.variants))
        notes.append(
            f"{unknown:,} assignments to variants the experiment does not define "
            f"({', '.join(others)}) are left out"
        )
    if known.filter(pl.col("variant") == experiment.variants[0]).is_empty():
        msg = (
            f"experiment {experiment.key!r}: no customer in the control {experiment.variants[0]!r}"
        )
        raise CashbackError(msg)
    return known, notes


def _options(settings: Settings, cap: float | None, correction: Method | None) -> AnalysisOptions:
    config = settings.experiments
    return AnalysisOptions(
        alpha=config.alpha,
        correction=correction or config.correction,
        cap_quantile=cap if cap is not None else config.cap_quantile,
        srm_threshold=config.srm_threshold,
        tuning_n=config.sequential_tuning_n,
    )


# ----------------------------------------------------------------------------- outcomes


def _outcome_metrics(outcomes: pl.LazyFrame) -> dict[str, bool]:
    """Each outcome metric, and whether all its values are 0/1 (a proportion)."""
    kinds = (
        outcomes.group_by("metric")
        .agg(pl.col("value").is_in([0.0, 1.0]).all().alias("binary"))
        .sort("metric")
        .collect()
    )
    return dict(kinds.iter_rows())


def _outcome_frame(
    outcomes: pl.LazyFrame, assignments: pl.DataFrame, metrics: list[str]
) -> pl.DataFrame:
    wide = outcomes.group_by(KEY).agg(
        pl.col("value").filter(pl.col("metric") == m).first().alias(m) for m in metrics
    )
    return (
        assignments.lazy()
        .select(KEY, "variant", pl.lit(ALL_SEGMENTS).alias("segment"))
        .join(wide, on=KEY, how="left")
        .collect()
    )


def _outcome_specs(
    kinds: Mapping[str, bool], covariate: str | None
) -> tuple[list[MetricSpec], list[str]]:
    specs = [
        MetricSpec(m, "proportion" if binary else "mean", m, covariate=covariate)
        for m, binary in kinds.items()
        if m != covariate
    ]
    notes = [
        IMPORTED_WEIGHTS,
        f"CUPED uses the outcome {covariate!r} (a pre-experiment value) as covariate"
        if covariate
        else "CUPED skipped: the imported outcomes have no pre-experiment covariate",
    ]
    return specs, notes


def _analyze_outcomes(
    settings: Settings,
    experiment: _Experiment,
    assignments: pl.DataFrame,
    options: AnalysisOptions,
    primary: str | None,
) -> ExperimentAnalysis:
    outcomes = read_table(settings.data_dir, "outcomes").filter(
        pl.col("experiment_id") == experiment.experiment_id
    )
    kinds = _outcome_metrics(outcomes)
    present = [c for c in settings.experiments.outcome_covariates if c in kinds]
    covariate = present[0] if present else None
    specs, notes = _outcome_specs(kinds, covariate)
    names = [s.name for s in specs]
    chosen = primary or (experiment.primary if experiment.primary in names else names[0])
    _check_primary(chosen, names)
    frame = _outcome_frame(outcomes, assignments, [*names, *([covariate] if covariate else [])])
    if covariate and frame[covariate].null_count():
        notes.append(
            f"CUPED skipped: {frame[covariate].null_count():,} customers lack {covariate!r}"
        )
        specs = [replace(s, covariate=None) for s in specs]
    missing = {
        s.name: "no outcome rows for this metric"
        for s in specs
        if frame[s.column].null_count() == frame.height
    }
    design = experiment.design("outcomes", experiment.end or experiment.start, None)
    guardrails = [g for g in experiment.guardrails if g in names]
    return analyze(
        design,
        frame,
        specs,
        options,
        primary_metric=chosen,
        guardrail_metrics=guardrails,
        missing=missing,
        notes=notes,
    )


def _check_primary(primary: str, names: list[str]) -> None:
    if primary not in names:
        msg = (
            f"primary metric {primary!r} is not among this experiment's metrics: {', '.join(names)}"
        )
        raise CashbackError(msg)


# ----------------------------------------------------------------------------- events


def _optional(directory: Path, name: str) -> pl.LazyFrame | None:
    return read_table(directory, name) if name in present_tables(directory) else None


def _data_end(transactions: pl.LazyFrame, claims: pl.LazyFrame | None) -> datetime:
    """Just after the latest transaction or claim: the first instant the data do not cover."""
    frames = [transactions.select(pl.col("ts").max())]
    if claims is not None:
        frames.append(claims.select(pl.col("ts").max()))
    latest = pl.concat(frames).select(pl.col("ts").max()).collect().item()
    if latest is None:
        msg = "the transactions table is empty: no event to analyse"
        raise CashbackError(msg)
    end: datetime = latest + TICK
    return end


def _events(
    settings: Settings, transactions: pl.LazyFrame, data_end: datetime
) -> tuple[pl.LazyFrame, dict[str, str], list[str]]:
    """Component events before the data's end, metrics without data, and notes."""
    directory = settings.data_dir
    missing: dict[str, str] = {}
    notes = []
    merchants = _optional(directory, "merchants")
    if merchants is None:
        notes.append(
            f"no merchants table: margins use the default margin rate "
            f"{settings.default_margin_rate:.0%}"
        )
        merchants = pl.LazyFrame(schema={"merchant_id": pl.String, "margin_rate": pl.Float64})
    frames = [transaction_events(transactions, merchants, settings.default_margin_rate)]
    claims = _optional(directory, "claims")
    labels = _optional(directory, "claim_labels")
    if claims is None:
        missing |= dict.fromkeys(CLAIM_METRICS, "no claims table: no cashback data")
        notes.append("no claims table: net_incremental_margin counts no cashback")
    else:
        fraud = (
            fraud_claims(labels, data_end)
            if labels is not None
            else pl.LazyFrame(schema={"claim_id": pl.String})
        )
        frames.append(claim_events(claims, fraud))
        if labels is None:
            missing[ExperimentMetric.FRAUD_LOSS.value] = "no claim_labels table: fraud is unknown"
    events = pl.concat(frames, how="vertical").filter(pl.col("ts") < data_end)
    return events, missing, notes


def _units(
    assignments: pl.DataFrame, experiment: _Experiment, end: datetime
) -> tuple[pl.DataFrame, list[str]]:
    """Customers assigned before `end`, each from max(assignment, start) to `end`."""
    units = assignments.filter(pl.col("ts") < end).select(
        KEY,
        "variant",
        pl.max_horizontal(pl.col("ts"), pl.lit(experiment.start)).alias("start"),
        pl.lit(end).cast(pl.Datetime("us", "UTC")).alias("end"),
    )
    later = assignments.height - units.height
    notes = [f"{later:,} customers assigned after {end:%Y-%m-%d %H:%M} UTC are not counted"]
    return units, notes if later else []


def _scores(settings: Settings, start: datetime) -> pl.LazyFrame | None:
    """Each customer's scored segment nearest the start: the last before it, else the first."""
    path = batch_table_path(settings, "customer_scores")
    if not path.exists():
        return None
    scored = pl.col(EVENT_TS)
    nearest = pl.col("segment").sort_by(scored <= start, -(scored - start).abs()).last()
    return pl.scan_parquet(path).group_by(KEY).agg(nearest)


def _with_segments(
    settings: Settings, customers: pl.LazyFrame, start: datetime
) -> tuple[pl.LazyFrame, str]:
    """The segment of each customer: scored segment if any, else lifecycle at its start."""
    scores = _scores(settings, start)
    if scores is not None:
        joined = customers.join(scores, on=KEY, how="left")
        return joined.with_columns(pl.col("segment").fill_null("unscored")), "segment"
    signups = _optional(settings.data_dir, "customers")
    signup = (
        signups.select(KEY, "signup_ts")
        if signups is not None
        else pl.LazyFrame(schema={KEY: pl.String, "signup_ts": pl.Datetime("us", "UTC")})
    )
    stage = (
        customers.join(signup, on=KEY, how="left")
        .with_columns(
            elapsed_days(pl.col("start") - pl.col("signup_ts")).clip(0).alias("tenure_days"),
            elapsed_days(pl.col("start") - pl.col(LAST_PURCHASE)).alias("days_since_last_purchase"),
            pl.col(PURCHASES_YEAR).alias("purchases_365d"),
        )
        .with_columns(lifecycle_stage(settings.features).alias("segment"))
        .drop("signup_ts", "tenure_days", "days_since_last_purchase", "purchases_365d")
    )
    return stage, "lifecycle"


def _retention_missing(customers: pl.DataFrame, data_end: datetime) -> dict[str, str]:
    return {
        name: f"no customer's {n}-day window has elapsed by the data's end "
        f"({data_end:%Y-%m-%d %H:%M} UTC)"
        for name, n in RETENTION_DAYS.items()
        if customers[name].null_count() == customers.height
    }


def _cumulative(
    spec: MetricSpec,
    units: pl.DataFrame,
    customers: pl.DataFrame,
    events: pl.LazyFrame,
    design: Design,
) -> pl.DataFrame:
    if spec.name in RETENTION_DAYS:
        increments = retention_increments(customers.lazy(), spec.name, origin=design.start)
    else:
        increments = additive_increments(
            units.lazy(),
            events,
            spec.column,
            origin=design.start,
            denominator=spec.denominator,
        )
    days = max(math.ceil((design.end - design.start) / timedelta(days=1)), 1)
    return cumulative_moments(increments, list(design.variants), days)


def _analyze_events(
    settings: Settings,
    experiment: _Experiment,
    assignments: pl.DataFrame,
    options: AnalysisOptions,
    primary: str | None,
    as_of: datetime | None,
) -> ExperimentAnalysis:
    directory = settings.data_dir
    transactions = _optional(directory, "transactions")
    if transactions is None:
        msg = (
            f"experiment {experiment.key!r} has no outcomes and {directory} has no "
            "transactions table: nothing to measure it on"
        )
        raise CashbackError(msg)
    data_end = as_of or _data_end(transactions, _optional(directory, "claims"))
    end = window_end(experiment.end, data_end)
    if end <= experiment.start:
        msg = (
            f"experiment {experiment.key!r} starts {experiment.start:%Y-%m-%d %H:%M} UTC, "
            f"after the data's end ({data_end:%Y-%m-%d %H:%M} UTC): nothing to analyse yet"
        )
        raise CashbackError(msg)
    units, notes = _units(assignments, experiment, end)
    if units.is_empty():
        msg = f"experiment {experiment.key!r}: no customer was assigned before {end:%Y-%m-%d}"
        raise CashbackError(msg)
    events, missing, event_notes = _events(settings, transactions, data_end)
    metrics = customer_metrics(units.lazy(), events, data_end=data_end)
    segmented, segment_source = _with_segments(settings, metrics, experiment.start)
    customers = segmented.collect()
    missing |= _retention_missing(customers, data_end)
    specs = event_specs()
    chosen = primary or experiment.primary
    _check_primary(chosen, [s.name for s in specs])
    design = experiment.design("events", end, data_end)
    spec = next(s for s in specs if s.name == chosen)
    cumulative = (
        _cumulative(spec, units, customers, events, design) if chosen not in missing else None
    )
    notes += [*event_notes, f"segments: {segment_source}"]
    return analyze(
        design,
        customers,
        specs,
        options,
        primary_metric=chosen,
        guardrail_metrics=experiment.guardrails,
        cumulative=cumulative,
        missing=missing,
        notes=notes,
    )


# ----------------------------------------------------------------------------- writing


def write_results(analysis: ExperimentAnalysis, directory: Path) -> dict[str, Path]:
    """Write every table of the analysis under `directory`, swapped in whole.

    Returns:
        Table name to file.
    """
    tables = {
        "lifts": analysis.to_frame(),
        "srm": analysis.srm_frame(),
        "verdicts": analysis.verdict_frame(),
        "messages": analysis.messages_frame(),
        "cumulative": analysis.cumulative,
        "segments": analysis.segments,
        "customers": analysis.customers,
    }
    with staged_directory(directory) as staging:
        for name, frame in tables.items():
            write_parquet_atomic(frame, staging / f"{name}.parquet")
    return {name: directory.resolve() / f"{name}.parquet" for name in tables}


def run(
    settings: Settings,
    key: str,
    *,
    cap: float | None = None,
    correction: Method | None = None,
    primary: str | None = None,
    as_of: datetime | None = None,
    write: bool = True,
) -> Analyzed:
    """Analyse experiment `key` and write its results.

    Args:
        settings: the data directory and `experiments` settings.
        key: the experiment's key (or experiment_id).
        cap: cap mean metrics at this pooled quantile (e.g. 0.99); default: the setting.
        correction: "holm" or "bh"; default: the setting.
        primary: the primary metric; default: the definition's, else the setting's (for
            imported outcomes: the first outcome in name order when the setting's is absent).
        as_of: analyse the data before this time only (default: all of it).
        write: whether to write the results.

    Returns:
        The analysis and the files written.

    Raises:
        CashbackError: for an unknown key, an experiment without assignments or without
            data to measure it on, or an unknown primary metric.
    """
    experiment = _find(settings, key)
    raw = _assignments(settings, experiment)
    assignments, notes = _known_variants(raw, experiment)
    options = _options(settings, cap, correction)
    outcomes = _optional(settings.data_dir, "outcomes")
    has_outcomes = outcomes is not None and (
        outcomes.filter(pl.col("experiment_id") == experiment.experiment_id)
        .head(1)
        .collect()
        .height
        > 0
    )
    analysis = (
        _analyze_outcomes(settings, experiment, assignments, options, primary)
        if has_outcomes
        else _analyze_events(settings, experiment, assignments, options, primary, as_of)
    )
    if notes:
        analysis = replace(analysis, messages=(*notes, *analysis.messages))
    paths = write_results(analysis, results_dir(settings, experiment.key)) if write else {}
    return Analyzed(analysis, paths)
