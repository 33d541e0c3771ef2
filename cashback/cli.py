"""The `cashback` command line: one group per resource, each command a thin call into a job."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cashback.errors import CashbackError
from cashback.progress import enable_progress, progress_bar
from cashback.settings import Settings, get_settings
from cashback.vocab import Role

if TYPE_CHECKING:
    from pipelines.kpis.compute import KpiResult
    from pipelines.rates_card import RateCard

if TYPE_CHECKING:
    from collections.abc import Sequence

    from models.experiments.analysis import Verdict

app = typer.Typer(
    name="cashback",
    help="cashback-ml: features, models, experiments and an API for cashback programs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Simulate, import and validate contract data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
features_app = typer.Typer(
    help="Build the feature tables and register them in the Feast repo.", no_args_is_help=True
)
app.add_typer(features_app, name="features")
models_app = typer.Typer(
    help="The model registry: list versions, promote challengers, roll back champions.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
segments_app = typer.Typer(help="Customer segments for marketers.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
customers_app = typer.Typer(help="Customer scores for serving.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")
train_app = typer.Typer(help="Train models and register them as challengers.", no_args_is_help=True)
app.add_typer(train_app, name="train")
fraud_app = typer.Typer(help="Score claims, backtest rules.", no_args_is_help=True)
app.add_typer(fraud_app, name="fraud")
experiments_app = typer.Typer(
    help="Define, start, stop and assign experiments.", no_args_is_help=True
)
app.add_typer(experiments_app, name="experiments")
rates_app = typer.Typer(
    help="The rate card and the budget frontier of the last `cashback train rates`.",
    no_args_is_help=True,
)
app.add_typer(rates_app, name="rates")

out_console = Console()
err_console = Console(stderr=True)


class Preset(StrEnum):
    """Worlds the simulator can build."""

    DEFAULT = "default"
    HARD = "hard"


class Source(StrEnum):
    """Importable sources: built-in mappings, or `mapped` with a YAML mapping."""

    ONLINE_RETAIL = "online_retail"
    HILLSTROM = "hillstrom"
    COOKIE_CATS = "cookie_cats"
    MAPPED = "mapped"


@app.callback()
def _root() -> None:
    enable_progress(sys.stderr.isatty())


@data_app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option(help="directory to write the contract tables and truth/")],
    customers: Annotated[int | None, typer.Option(help="number of customers", min=10)] = None,
    days: Annotated[int | None, typer.Option(help="days simulated", min=14)] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (same seed, same bytes)")] = None,
    preset: Annotated[
        Preset, typer.Option(help="default, or hard: weaker signals")
    ] = Preset.DEFAULT,
    start: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
) -> None:
    """Simulate a cashback program with ground truth (written under OUT/truth)."""
    from pipelines.simulate import run, world_config  # noqa: PLC0415 (keeps --help fast)

    settings = get_settings()
    config = world_config(
        settings, customers=customers, days=days, seed=seed, preset=preset.value, start=start
    )
    summary = run(config, out, settings)
    _print_counts(f"simulated world written to {out}", summary.rows)


@data_app.command("import")
def import_data(
    source: Annotated[Source, typer.Argument(help="which mapping to apply")],
    path: Annotated[Path, typer.Argument(help="the file (or folder) to import")],
    out: Annotated[Path, typer.Option(help="directory to write the contract tables")],
    mapping: Annotated[
        Path | None, typer.Option(help="YAML column mapping (with SOURCE=mapped)")
    ] = None,
) -> None:
    """Import a real data set onto the contract (built-in mappings or a YAML mapping)."""
    from pipelines.data_import import run  # noqa: PLC0415

    with progress_bar(f"importing {path.name} ({source.value})"):
        summary = run(source.value, path, out, get_settings(), mapping=mapping)
    _print_counts(f"imported {path.name} into {out}", summary.rows)
    if summary.left_out:
        _print_counts("rows left out, by reason", summary.left_out)
    for note in summary.notes:
        out_console.print(f"note: {escape(note)}", soft_wrap=True)


@data_app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="a directory of contract tables")],
) -> None:
    """Check every table in DIRECTORY against the contract; exit 1 on any violation."""
    from cashback.tables import validate_directory  # noqa: PLC0415

    with progress_bar(f"validating {directory}"):
        report = validate_directory(directory)
    if report.ok:
        out_console.print(f"{directory}: all tables satisfy the contract")
        return
    table = Table("table", "row", "column", "rule", "message", title=f"{report.total} violation(s)")
    for v in report.violations.iter_rows(named=True):
        cells = (v["table"], str(v["row"] or "-"), v["column"], v["rule"], v["message"])
        table.add_row(*(escape(str(c)) for c in cells))
    out_console.print(table)
    counts = Table("table", "column", "rule", "rows", title="violations per rule")
    for c in report.counts.iter_rows(named=True):
        counts.add_row(*(escape(str(c[k])) for k in ("table", "column", "rule", "n")))
    out_console.print(counts)
    raise typer.Exit(code=1)


def _parse_close(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        msg = f"close {text!r} is not a date: expected YYYY-MM-DD (the close is 00:00 UTC)"
        raise CashbackError(msg) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@features_app.command("build")
def features_build(
    close: Annotated[
        str | None, typer.Option(help="close date YYYY-MM-DD (default: after the last event)")
    ] = None,
) -> None:
    """Compute every batch feature table as of a daily close (00:00 UTC)."""
    from pipelines.build_features import run  # noqa: PLC0415

    built = run(get_settings(), _parse_close(close))
    _print_counts(f"feature tables as of {built.close:%Y-%m-%d %H:%M} UTC", built.rows)


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.store import apply  # noqa: PLC0415

    settings = get_settings()
    with progress_bar("feast apply"):
        names = apply(settings)
    out_console.print(
        f"registered {len(names)} Feast objects in {settings.feature_dir}: {', '.join(names)}",
        soft_wrap=True,
        highlight=False,
    )


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None,
        typer.Option(help="rows up to this time, ISO 8601 (default: the built tables' close)"),
    ] = None,
) -> None:
    """Load the batch tables into the online store, incrementally (newer rows only)."""
    from features.store import materialize_tables  # noqa: PLC0415

    settings = get_settings()
    with progress_bar(f"materializing into the {settings.feature_store.online_store} store"):
        reports = materialize_tables(settings, _parse_time(end) if end else None)
    table = Table("view", "window", "entities", "written", "seconds", title="materialized")
    for r in reports:
        window = (
            f"{r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M}"
            if r.start
            else f".. {r.end:%Y-%m-%d %H:%M}"
        )
        table.add_row(
            r.feature_view, window, f"{r.entities:,}", f"{r.written:,}", f"{r.seconds:.1f}"
        )
    out_console.print(table)


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"time {text!r} is not ISO 8601 (e.g. 2025-12-31T00:00:00+00:00)"
        raise CashbackError(msg) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("demo")
def demo(
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="then serve the API (`cashback serve`)")
    ] = True,
) -> None:
    """Build the demo world (if absent) and every artefact later steps add, then serve the API."""
    from pipelines.demo import run  # noqa: PLC0415

    settings = get_settings()
    for line in run(settings):
        out_console.print(escape(line), soft_wrap=True, highlight=False)
    if serve_api:
        _serve_demo(settings)


ModelName = Annotated[
    str, typer.Argument(help="the model's short name: fraud, churn, clv, segments or rates")
]


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List every registered model version: aliases, primary metric, promotion decisions."""
    from models.registry import list_models  # noqa: PLC0415

    rows = list_models(get_settings())
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if not rows:
        out_console.print("no registered models yet: train one with `cashback train NAME`")
        return
    columns = ("model", "version", "aliases", "created (UTC)", "run", "primary metric", "promotion")
    table = Table(*columns, title="registered models")
    for row in rows:
        metric = "-"
        if row.primary_metric is not None:
            value = "n/a" if row.primary_value is None else f"{row.primary_value:.4g}"
            metric = f"{row.primary_metric} {value}"
        promotion = row.tags.get("promotion.decision", "-")
        if reason := row.tags.get("promotion.reason"):
            promotion = f"{promotion}: {reason}"
        cells = (
            row.name,
            str(row.version),
            ", ".join(row.aliases) or "-",
            f"{row.created:%Y-%m-%d %H:%M}",
            (row.run_id or "-")[:8],
            metric,
            promotion,
        )
        table.add_row(*(escape(c) for c in cells))
    out_console.print(table)


@models_app.command("promote")
def models_promote(
    name: ModelName,
    force: Annotated[
        bool, typer.Option("--force", help="promote even when the gate fails (needs --reason)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="why (recorded with the decision)")] = None,
) -> None:
    """Promote the challenger to champion when it is no worse on the same evaluation set."""
    from models.registry import promote  # noqa: PLC0415

    with progress_bar(f"evaluating the {name} challenger and champion"):
        result = promote(get_settings(), name, force=force, reason=reason)
    was = f"v{result.champion_version}" if result.champion_version is not None else "none"
    if result.promoted:
        how = f"forced: {result.reason}" if result.forced else "gate passed"
        _say(f"{result.name} v{result.challenger_version} is now the champion ({how}; was {was})")
    else:
        _say(f"{result.name} v{result.challenger_version} refused; the champion stays {was}:")
    for check in result.checks:
        mark = "failed" if check in result.failed else "ok"
        _say(f"  {mark}: {check}")
    if not result.promoted:
        raise typer.Exit(code=1)


@models_app.command("rollback")
def models_rollback(name: ModelName) -> None:
    """Move the champion back to the previous champion (repeat to go further back)."""
    from models.registry import rollback  # noqa: PLC0415

    result = rollback(get_settings(), name)
    _say(f"{result.name} champion rolled back: v{result.from_version} -> v{result.to_version}")


def _parse_day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        msg = f"{option} {text!r} is not a date: expected YYYY-MM-DD (00:00 UTC)"
        raise CashbackError(msg) from None


@fraud_app.command("backtest")
def fraud_backtest(
    rules: Annotated[
        Path | None,
        typer.Option(
            help="rules file (default: CASHBACK_FRAUD__RULES_FILE, config/fraud_rules.yaml)"
        ),
    ] = None,
    against: Annotated[
        Path | None, typer.Option(help="baseline rules file: show what the change would do")
    ] = None,
    since: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="end day, excluded, YYYY-MM-DD (UTC)")] = None,
) -> None:
    """What a rules file would have flagged on past claims, with precision and recall."""
    from pipelines.fraud_backtest import run  # noqa: PLC0415

    settings = get_settings()
    path = rules or settings.fraud.rules_file
    if path is None:
        msg = "no rules file: give --rules FILE or set CASHBACK_FRAUD__RULES_FILE"
        raise CashbackError(msg)
    report = run(
        settings,
        path,
        since=_parse_day(since, "--since"),
        until=_parse_day(until, "--until"),
        baseline_rules_path=against,
    )
    for item in report.renderables():
        out_console.print(item, soft_wrap=isinstance(item, str | Text), highlight=False)


@fraud_app.command("score")
def fraud_score(
    since: Annotated[str, typer.Option(help="first day to score, YYYY-MM-DD (UTC)")],
    until: Annotated[
        str | None, typer.Option(help="last day, included (default: the last claim's day)")
    ] = None,
) -> None:
    """Score claims by day with the champion model and the rules (resumable)."""
    from pipelines.score_fraud import run  # noqa: PLC0415

    settings = get_settings()
    first = _parse_day(since, "--since")
    assert first is not None  # a required option
    done = run(settings, first, _parse_day(until, "--until"))
    _say(
        f"scored {done.claims:,} claims over {len(done.written)} days "
        f"({done.flagged:,} sent to review or blocked); {len(done.skipped)} days already "
        f"scored by this model; scores in {settings.data_dir / 'scores' / 'fraud'}"
    )


class ExportFormat(StrEnum):
    """File formats of an export."""

    CSV = "csv"
    PARQUET = "parquet"


@segments_app.command("export")
def segments_export(
    out: Annotated[Path, typer.Option(help="the file to write")],
    file_format: Annotated[
        ExportFormat, typer.Option("--format", help="csv or parquet")
    ] = ExportFormat.CSV,
) -> None:
    """customer_id, segment, lifecycle, churn probability and CLV, one row per customer."""
    from pipelines.export_segments import run  # noqa: PLC0415

    done = run(get_settings(), out, file_format.value)
    _say(f"{done.customers:,} customers as of the close {done.close} written to {done.path}")
    for note in done.notes:
        _say(f"note: {note}")


@customers_app.command("score")
def customers_score(
    materialize: Annotated[
        bool, typer.Option(help="load the scores into the online store afterwards")
    ] = True,
) -> None:
    """Score every customer with the champions (segment, churn, CLV) into the feature store."""
    from pipelines.score_customers import run  # noqa: PLC0415

    settings = get_settings()
    done = run(settings)
    used = ", ".join(f"{k} v{v}" for k, v in done.versions.items() if v is not None)
    _say(
        f"{done.scores.height:,} customers scored as of the close {done.close:%Y-%m-%d} "
        f"({used or 'no champions'}); written to {done.path}"
    )
    for note in done.notes:
        _say(f"note: {note}")
    if materialize:
        from features.store import apply, materialize_tables  # noqa: PLC0415

        apply(settings)
        reports = materialize_tables(settings)
        written = {r.feature_view: r.written for r in reports}
        _say(f"online store: {written.get('customer_scores', 0):,} customer scores written")


@train_app.command("churn")
def train_churn(
    snapshot: Annotated[
        str | None,
        typer.Option(help="validation snapshot, YYYY-MM-DD (default: the latest possible)"),
    ] = None,
) -> None:
    """Train the churn model on monthly snapshots, beside BG/NBD, and register it."""
    from pipelines.train_churn import run  # noqa: PLC0415

    settings = get_settings()
    day = _parse_day(snapshot, "--snapshot")
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) if day else None
    result = run(settings, snapshot=at)
    plan = result.snapshots
    _say(
        f"trained on {len(plan.train)} snapshots ({plan.train[0]:%Y-%m-%d} to "
        f"{plan.train[-1]:%Y-%m-%d}), calibrated on {plan.calibration:%Y-%m-%d}, validated "
        f"on {plan.validation:%Y-%m-%d} ({result.metrics['validation_customers']:,.0f} "
        f"customers, churn rate {result.metrics['validation_churn_rate']:.1%})"
    )
    table = Table("metric", "model", "BG/NBD", title="validation snapshot")
    for metric in ("roc_auc", "pr_auc", "brier", "lift_top_decile"):
        table.add_row(
            metric,
            f"{result.metrics[f'model_{metric}']:.4f}",
            f"{result.metrics[f'bgnbd_{metric}']:.4f}",
        )
    out_console.print(table)
    _say(f"registered cashback-churn version {result.version} as challenger")


@train_app.command("clv")
def train_clv() -> None:
    """Customer value over the next H_v days (BG/NBD x Gamma-Gamma, LightGBM), time split."""
    from pipelines.train_value import run  # noqa: PLC0415

    settings = get_settings()
    result = run(settings)
    _say(
        f"split at {result.snapshot:%Y-%m-%d}; spend over the next {result.horizon.days} days "
        f"of {result.metrics['customers']:,.0f} customers"
    )
    table = Table("predictor", "MAE", "Spearman", title="against the actual later spend")
    for name, label in (
        ("last_period", "last-period spend (baseline)"),
        ("gamma_gamma", "BG/NBD x Gamma-Gamma"),
        ("lightgbm", "LightGBM (cross-fitted by customer)"),
    ):
        table.add_row(
            label,
            f"{result.metrics[f'{name}_mae']:,.2f}",
            f"{result.metrics[f'{name}_spearman']:.3f}",
        )
    out_console.print(table)
    error = result.metrics.get("next_purchase_median_abs_error_days")
    if error is not None:
        _say(f"expected next purchase: median error {error:.1f} days")
    _say(
        f"registered cashback-clv version {result.version} as challenger (held-out customers: "
        f"MAE {result.metrics['mae']:,.2f}, Spearman {result.metrics['spearman']:.3f})"
    )


@train_app.command("fraud")
def train_fraud(
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="train as of this time: labels decided by it, claims mature by it (default: "
            "every label, claims mature by the last claim)"
        ),
    ] = None,
    rules: Annotated[
        Path | None, typer.Option(help="rules file (default: CASHBACK_FRAUD__RULES_FILE)")
    ] = None,
) -> None:
    """Train the claim risk model, evaluate it, and register it as challenger."""
    from pipelines.train_fraud import run  # noqa: PLC0415

    settings = get_settings()
    result = run(settings, cutoff=_parse_time(cutoff) if cutoff else None, rules_path=rules)
    table = Table("metric", "model", "rules alone", "anomaly alone", title="test slice")
    for metric in ("pr_auc", "recall_at_review", "precision_at_review"):
        for group in ("audit", "labelled", "truth"):
            key = f"{group}_{metric}"
            if key in result.metrics:
                table.add_row(
                    key,
                    *(
                        f"{result.metrics.get(prefix + key, float('nan')):.3f}"
                        for prefix in ("", "rules_", "anomaly_")
                    ),
                )
    out_console.print(table)
    limits = result.thresholds
    block = f"{limits.block_probability:.3f}" if limits.block_probability is not None else "none"
    _say(
        f"review from expected loss {limits.review_expected_loss:.2f} "
        f"({limits.review_share:.1%} of claims); block from probability {block}"
    )
    _print_threshold_report(result.report)
    sources = ", ".join(
        f"{name.removeprefix('labels_')} {value:,.0f}"
        for name, value in result.metrics.items()
        if name.startswith("labels_")
    )
    _say(f"learned from {result.labels.height:,} labelled mature claims ({sources})")
    _say(f"registered cashback-fraud version {result.version} as challenger")


@train_app.command("rates")
def train_rates(
    budget_share: Annotated[
        float | None,
        typer.Option(help="budget as a share of the default card's cost (default: the setting)"),
    ] = None,
) -> None:
    """Learn the response to the rate, evaluate it off-policy, and price every customer."""
    from pipelines.train_rates import run  # noqa: PLC0415

    settings = get_settings()
    if budget_share is not None:
        rates = settings.rates.model_copy(update={"budget_share": budget_share})
        settings = settings.model_copy(update={"rates": rates})
    result = run(settings, register=True)
    _say(
        f"learnt from {result.data.train.height:,} randomized exposures before "
        f"{result.data.split:%Y-%m-%d}; {result.data.test.height:,} held out"
    )
    table = Table("policy", "estimator", "net margin / exposure", "95 % CI", title="held out")
    for row in result.ope.iter_rows(named=True):
        if row["estimator"] in {"dr", "mean"}:
            table.add_row(
                row["policy"],
                row["estimator"],
                f"{row['value']:.3f}",
                f"{row['low']:.3f} to {row['high']:.3f}",
            )
    out_console.print(table)
    choice = result.choice
    budget = "no budget" if choice.budget is None else f"budget {choice.budget:,.2f}"
    _say(
        f"{result.customers.height:,} customers priced as of {result.close:%Y-%m-%d}: expected "
        f"incremental margin {choice.value:,.2f} for cashback {choice.cost:,.2f} per "
        f"{settings.exposure_days}-day offer ({budget}, multiplier {choice.multiplier:.3f})"
    )
    for name, path in result.paths.items():
        _say(f"{name}: {path}")
    _say(f"registered cashback-rates version {result.version} as challenger")


@train_app.command("segments")
def train_segments(
    close: Annotated[
        str | None,
        typer.Option(help="close date YYYY-MM-DD (default: the latest close of the data)"),
    ] = None,
) -> None:
    """Cluster customers into named behaviour segments, profile them, and register the model."""
    from pipelines.train_segments import run  # noqa: PLC0415

    settings = get_settings()
    result = run(settings, close=_parse_close(close))
    metrics = result.metrics
    selection = Table("k", "silhouette", "stability (ARI)", "chosen", title="choice of k")
    for row in result.selection.iter_rows(named=True):
        selection.add_row(
            str(row["k"]),
            _ratio(row["silhouette"]),
            _ratio(row["stability"]),
            "yes" if row["chosen"] else "",
        )
    out_console.print(selection)
    profiles = Table(
        "segment",
        "customers",
        "share",
        "spend 365d",
        "purchases 365d",
        "avg basket",
        "days since last",
        "churn rate",
        "avg rate",
        "response / point",
        title=f"segments as of {result.close:%Y-%m-%d}",
    )
    for row in result.profiles.iter_rows(named=True):
        profiles.add_row(
            escape(str(row["segment"])),
            f"{row['customers']:,}",
            f"{row['share']:.1%}",
            _amount(row["spend_365d"]),
            _amount(row["purchases_365d"]),
            _amount(row["avg_basket"]),
            _amount(row["recency_days"]),
            _ratio(row["churn_rate"]),
            _ratio(row["avg_rate_365d"]),
            _ratio(row["rate_response_relative"]),
        )
    out_console.print(profiles)
    truth = (
        f", ARI against the simulator's truth {metrics['truth_ari']:.3f}"
        if "truth_ari" in metrics
        else ""
    )
    _say(
        f"k = {result.model.k}: silhouette {metrics['silhouette']:.3f} on the evaluation set, "
        f"stability (two-halves ARI) {metrics['stability_ari']:.3f}{truth}"
    )
    for note in result.notes:
        _say(f"note: {note}")
    _say(f"segments written to {result.table}")
    _say(f"registered cashback-segments version {result.version} as challenger")


def _amount(value: object) -> str:
    if isinstance(value, int | float) and not math.isnan(value):
        return f"{value:,.1f}"
    return "n/a"


def _ratio(value: object) -> str:
    if isinstance(value, int | float) and not math.isnan(value):
        return f"{value:.3f}"
    return "n/a"


def _print_threshold_report(rows: list[dict[str, object]]) -> None:
    """The decisions on the test slice: audit-sample estimates, and the truth when known."""
    table = Table(
        "decision",
        "claims",
        "share",
        "precision (audit)",
        "recall (audit)",
        "precision (truth)",
        "recall (truth)",
        "cashback caught",
        "honest customers hit",
        title="decisions on the test slice",
    )
    for row in rows:
        table.add_row(
            str(row["decision"]),
            f"{row['claims']:,}",
            f"{row['share']:.2%}",
            _ratio(row["audit_precision"]),
            _ratio(row["audit_recall"]),
            _ratio(row.get("truth_precision")),
            _ratio(row.get("truth_recall")),
            _ratio(row.get("cashback_caught")),
            str(row.get("honest_customers_hit", "n/a")),
        )
    out_console.print(table)


class CardFormat(StrEnum):
    """How `cashback rates card` gives the card: printed, or as a file."""

    TABLE = "table"
    CSV = "csv"
    PARQUET = "parquet"


def _card_format(file_format: CardFormat | None, out: Path | None) -> CardFormat:
    """The format asked for, else the --out file's suffix's, else a printed table."""
    from cashback.tables import export_format  # noqa: PLC0415

    if out is None:
        if file_format is CardFormat.PARQUET:
            msg = "parquet is a binary format: give the file to write with --out PATH"
            raise CashbackError(msg)
        return file_format or CardFormat.TABLE
    if file_format is CardFormat.TABLE:
        msg = "--format table prints the card: write --out PATH as csv or parquet"
        raise CashbackError(msg)
    return file_format or CardFormat(export_format(out))


@rates_app.command("card")
def rates_card(
    file_format: Annotated[
        CardFormat | None,
        typer.Option(
            "--format",
            help="table (printed), csv (to stdout without --out) or parquet "
            "(default: the --out file's suffix, else table)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="write the card here, and the fairness table beside it as NAME_fairness"),
    ] = None,
) -> None:
    """The segment x category rate card with totals, and the average rate by excluded attribute."""
    from pipelines.rates_card import export_card, load_card  # noqa: PLC0415
    from pipelines.rates_frontier import rates_directory  # noqa: PLC0415

    settings = get_settings()
    chosen = _card_format(file_format, out)
    card = load_card(rates_directory(settings))
    if chosen is CardFormat.CSV and out is None:
        typer.echo(card.card.write_csv(), nl=False)
        return
    _print_card(card, settings.currency)
    if out is not None:
        written = export_card(card, out, "csv" if chosen is CardFormat.CSV else "parquet")
        _say(f"rate card written to {written[0]}, average rates by attribute to {written[1]}")


def _print_card(card: RateCard, currency: str) -> None:
    """The card with its totals, the average rate by excluded attribute, and the gaps."""
    from pipelines.rates_card import fairness_gaps  # noqa: PLC0415

    table = Table(
        "segment",
        "category",
        "rate",
        "customers",
        f"incremental margin ({currency})",
        f"cashback ({currency})",
        title="rate card (expected per offer window)",
    )
    for row in card.card.iter_rows(named=True):
        table.add_row(
            escape(str(row["segment"])),
            escape(str(row["category"])),
            f"{row['rate']:.1%}",
            f"{row['customers']:,}",
            f"{row['expected_incremental_margin']:,.2f}",
            f"{row['expected_cashback']:,.2f}",
        )
    totals = card.totals
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        f"{totals['customers']:,.0f}",
        f"{totals['expected_incremental_margin']:,.2f}",
        f"{totals['expected_cashback']:,.2f}",
    )
    out_console.print(table)
    fairness = Table(
        "attribute", "value", "customers", "average rate", "vs all", title="excluded attributes"
    )
    for row in card.fairness.iter_rows(named=True):
        fairness.add_row(
            escape(str(row["attribute"])),
            escape(str(row["value"])),
            f"{row['customers']:,}",
            f"{row['average_rate']:.2%}",
            f"{row['difference'] * 100:+.2f} pts",
        )
    out_console.print(fairness)
    for gap in fairness_gaps(card.fairness).iter_rows(named=True):
        _say(
            f"{gap['attribute']}: average rates differ by {gap['gap'] * 100:.2f} points between "
            f"{gap['lowest']} (lowest) and {gap['highest']} (highest), though the policy never "
            "uses it"
        )


@rates_app.command("simulate-budget")
def rates_simulate_budget(
    budgets: Annotated[
        str | None,
        typer.Option(
            help="budgets separated by commas, as multiples of the default card's cost "
            "(default: the rates.frontier_budgets setting), or amounts with --absolute",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="instead of --budgets: N budgets from the cheapest allowed rates' cost up to "
            "what the unconstrained policy spends",
            min=2,
        ),
    ] = None,
    absolute: Annotated[
        bool, typer.Option("--absolute", help="--budgets are amounts in the currency")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="write the frontier here (.csv or .parquet)")
    ] = None,
) -> None:
    """Expected incremental margin against the budget: the policy re-solved on saved values."""
    from pipelines.rates_frontier import parse_budgets, simulate_budget  # noqa: PLC0415

    if absolute and budgets is None:
        msg = "--absolute says --budgets are amounts: give --budgets"
        raise CashbackError(msg)
    settings = get_settings()
    found = simulate_budget(
        settings,
        budgets=None if budgets is None else parse_budgets(budgets),
        steps=steps,
        absolute=absolute,
        out=out,
    )
    currency, reference = settings.currency, found.default_card_cost
    table = Table(
        "budget (x default card)",
        f"budget ({currency})",
        f"incremental margin ({currency})",
        f"cashback ({currency})",
        "average rate",
        "above default rate",
        "multiplier",
        "",
        title=f"budget frontier: {found.customers:,} customers, one {settings.exposure_days}-day "
        f"offer each; the default card costs {reference:,.2f}",
    )
    for row in found.table.iter_rows(named=True):
        table.add_row(
            _number(row["budget_multiple"], ".3g"),
            f"{row['budget']:,.2f}",
            f"{row['expected_incremental_margin']:,.2f}",
            f"{row['expected_cashback']:,.2f}",
            f"{row['average_rate']:.2%}",
            f"{row['share_above_default']:.1%}",
            f"{row['multiplier']:.3f}",
            "current spend" if row["current"] else "",
        )
    out_console.print(table)
    _say(
        f"the last run's rates: expected incremental margin {found.current_value:,.2f} for "
        f"cashback {found.current_cost:,.2f} per offer window"
    )
    if found.path is not None:
        _say(f"frontier written to {found.path}")


ExperimentKey = Annotated[str, typer.Argument(help="the experiment's key")]


@experiments_app.command("create")
def experiments_create(
    file: Annotated[Path, typer.Argument(help="the YAML definition (see models/experiments)")],
) -> None:
    """Create a draft experiment from a YAML definition."""
    from pipelines.experiments import create  # noqa: PLC0415

    created = create(get_settings(), file)
    _say(
        f"created {created.key} (draft, layer {created.layer}); start it with "
        f"`cashback experiments start {created.key}`"
    )


@experiments_app.command("list")
def experiments_list() -> None:
    """Every experiment: layer, status, window and variants."""
    from pipelines.experiments import list_all  # noqa: PLC0415

    rows = list_all(get_settings())
    if not rows:
        _say("no experiments yet: create one with `cashback experiments create FILE.yaml`")
        return
    table = Table("key", "layer", "status", "start (UTC)", "stop (UTC)", "variants", "defined")
    for row in rows:
        stop = f"{row.end:%Y-%m-%d %H:%M}" if row.end else "-"
        variants = ", ".join(f"{name} {weight:.0%}" for name, weight, _ in row.variants)
        cells = (row.key, row.layer, row.status, f"{row.start:%Y-%m-%d %H:%M}", stop, variants)
        table.add_row(*(escape(str(c)) for c in cells), "yes" if row.defined else "no")
    out_console.print(table)


@experiments_app.command("show")
def experiments_show(key: ExperimentKey) -> None:
    """One experiment's definition, status, layer buckets and assignments per variant."""
    import yaml  # noqa: PLC0415

    from pipelines.experiments import show  # noqa: PLC0415

    shown = show(get_settings(), key)
    document = shown.definition.model_dump(mode="json")
    out_console.print(escape(yaml.safe_dump(document, sort_keys=False)), highlight=False)
    counts = ", ".join(f"{name} {n:,}" for name, n in shown.assigned.items())
    _say(f"assigned so far: {counts}")


@experiments_app.command("start")
def experiments_start(key: ExperimentKey) -> None:
    """Start a draft: refused when a running experiment of its layer overlaps it."""
    from pipelines.experiments import start  # noqa: PLC0415

    started = start(get_settings(), key)
    buckets = started.layer_buckets
    held = f"[{buckets.start}, {buckets.end})" if buckets else "-"
    _say(
        f"{started.key} is running from {started.start:%Y-%m-%d %H:%M} to "
        f"{started.stop:%Y-%m-%d %H:%M} UTC, buckets {held} of layer {started.layer}"
    )


@experiments_app.command("stop")
def experiments_stop(key: ExperimentKey) -> None:
    """Stop a running experiment (its assignments stay)."""
    from pipelines.experiments import stop  # noqa: PLC0415

    stopped = stop(get_settings(), key)
    _say(f"{stopped.key} stopped; its window ends {stopped.stop:%Y-%m-%d %H:%M} UTC")


@experiments_app.command("assign")
def experiments_assign(
    key: ExperimentKey,
    customers: Annotated[
        Path | None,
        typer.Option(
            help="parquet/CSV with customer_id (and segment, lifecycle for targeting); "
            "default: the customers table"
        ),
    ] = None,
) -> None:
    """Assign the customers the experiment takes; first assignments are kept (sticky)."""
    from pipelines.experiments import assign  # noqa: PLC0415

    done = assign(get_settings(), key, customers)
    variants = ", ".join(f"{name} {n:,}" for name, n in sorted(done.variants.items()))
    _say(
        f"{done.customers:,} customers: {done.holdout:,} in the global holdout, "
        f"{done.taken:,} taken by {done.key} ({done.added:,} new, {done.kept:,} kept their "
        f"first assignment); in the table: {variants or 'none'}"
    )


class Correction(StrEnum):
    """Multiple-testing corrections across metrics and variants."""

    HOLM = "holm"
    BH = "bh"


def _number(value: object, spec: str = ",.4g") -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return format(value, spec)
    return "n/a"


def _interval(low: object, high: object, spec: str = ",.4g") -> str:
    if isinstance(low, int | float) and math.isfinite(low):
        return f"{_number(low, spec)} to {_number(high, spec)}"
    return "n/a"


def _lift_cells(row: dict[str, object]) -> tuple[str, ...]:
    cuped = (
        f"{_number(row['cuped_absolute'])} ({_number(row['variance_reduction'], '.0%')} var.)"
        if isinstance(row["cuped_absolute"], float) and math.isfinite(row["cuped_absolute"])
        else "-"
    )
    return (
        _number(row["mean_control"]),
        _number(row["mean_treatment"]),
        _number(row["absolute"], "+,.4g"),
        _interval(row["absolute_ci_low"], row["absolute_ci_high"]),
        _number(row["relative"], "+.1%"),
        _interval(row["relative_ci_low"], row["relative_ci_high"], "+.1%"),
        _number(row["adjusted_p_value"], ".3g"),
        cuped,
        _interval(row["sequential_ci_low"], row["sequential_ci_high"]),
        _number(row["chance_to_win"], ".0%"),
    )


CapOption = Annotated[
    float | None,
    typer.Option(help="cap mean metrics at this pooled quantile, e.g. 0.99 (default: none)"),
]
CorrectionOption = Annotated[
    Correction | None,
    typer.Option(help="multiple-testing correction across metrics x variants"),
]
PrimaryOption = Annotated[
    str | None,
    typer.Option(help="the primary metric (default: the definition's, else the setting)"),
]


def _analysis_options(
    cap: float | None, correction: Correction | None, primary: str | None
) -> dict[str, Any]:
    """The options `analyze` and `report` pass on (a cap outside (0, 1] is refused)."""
    if cap is not None and not 0 < cap <= 1:
        msg = f"--cap is a quantile in (0, 1], e.g. 0.99; got {cap}"
        raise CashbackError(msg)
    return {"cap": cap, "correction": correction.value if correction else None, "primary": primary}


@experiments_app.command("analyze")
def experiments_analyze(
    key: ExperimentKey,
    cap: CapOption = None,
    correction: CorrectionOption = None,
    primary: PrimaryOption = None,
) -> None:
    """Lifts of every metric with CIs, CUPED, SRM, sequential and Bayesian reads, a verdict."""
    from pipelines.experiment_analysis import run  # noqa: PLC0415

    done = run(get_settings(), key, **_analysis_options(cap, correction, primary))
    analysis = done.analysis
    design, srm = analysis.design, analysis.srm
    counts = ", ".join(f"{v} {n:,}" for v, n in zip(design.variants, srm.observed, strict=True))
    _say(
        f"{design.key} ({design.source}): {counts}; window {design.start:%Y-%m-%d} to "
        f"{design.end:%Y-%m-%d} UTC; against the control {design.control!r}"
    )
    status = "MISMATCH: do not trust the results" if srm.mismatch else "ok"
    _say(f"SRM: {status} (chi-square p = {srm.p_value:.3g}, threshold {srm.threshold:g})")
    options = analysis.options
    capped = f", capped at the {options.cap_quantile:g} quantile" if options.cap_quantile else ""
    table = Table(
        "metric",
        "variant",
        "control",
        "variant mean",
        "lift",
        f"{1 - options.alpha:.0%} CI",
        "relative",
        "relative CI",
        f"adj. p ({options.correction})",
        "CUPED lift",
        "always-valid CI",
        "P(beat control)",
        title=f"lifts against {design.control}{capped}",
    )
    for row in analysis.to_frame().iter_rows(named=True):
        role = {"primary": " (primary)", "guardrail": " (guardrail)"}.get(str(row["role"]), "")
        table.add_row(
            escape(f"{row['metric']}{role}"), escape(str(row["variant"])), *_lift_cells(row)
        )
    out_console.print(table)
    _say_verdicts(analysis.verdicts)
    for message in analysis.messages:
        _say(f"note: {message}")
    if done.paths:
        _say(f"results written to {next(iter(done.paths.values())).parent}")


@experiments_app.command("report")
def experiments_report(
    key: ExperimentKey,
    out: Annotated[Path, typer.Option(help="the HTML file to write, e.g. report.html")],
    cap: CapOption = None,
    correction: CorrectionOption = None,
    primary: PrimaryOption = None,
) -> None:
    """One self-contained HTML page of the results for marketers: verdict, lifts, plots."""
    from pipelines.experiment_report import run  # noqa: PLC0415

    done = run(get_settings(), key, out, **_analysis_options(cap, correction, primary))
    _say_verdicts(done.analysis.verdicts)
    _say(f"report written to {done.path}")


@experiments_app.command("power")
def experiments_power(
    baseline: Annotated[
        float, typer.Option(help="the metric's mean in control (a share with --proportion)")
    ],
    daily_customers: Annotated[
        float, typer.Option(help="new customers entering the experiment per day, all variants")
    ],
    sd: Annotated[
        float | None, typer.Option(help="the metric's standard deviation per customer")
    ] = None,
    proportion: Annotated[
        bool, typer.Option("--proportion", help="the metric is a proportion (sd from it)")
    ] = False,
    mde: Annotated[
        float | None,
        typer.Option(help="effect to detect: relative (0.02 = +2 %) unless --absolute"),
    ] = None,
    absolute: Annotated[
        bool, typer.Option("--absolute", help="--mde is in the metric's units")
    ] = False,
    days: Annotated[float | None, typer.Option(help="duration: gives the MDE")] = None,
    cuped_rho: Annotated[
        float, typer.Option(help="correlation of the metric with its pre-period value")
    ] = 0.0,
    treatment_share: Annotated[float, typer.Option(help="share of customers treated")] = 0.5,
) -> None:
    """Minimum detectable effect of a plan, or the days an effect needs, with and without CUPED."""
    from models.experiments.power import plan_experiment  # noqa: PLC0415

    if (sd is None) == (not proportion):
        msg = "give the metric's spread: --sd S for a mean, or --proportion for a share"
        raise CashbackError(msg)
    if (mde is None) == (days is None):
        msg = "give one of --mde (to get the days needed) or --days (to get the MDE)"
        raise CashbackError(msg)
    config = get_settings().experiments
    rhos = [0.0] + ([cuped_rho] if cuped_rho else [])
    try:
        plans = [
            plan_experiment(
                daily_customers=daily_customers,
                baseline_mean=baseline,
                baseline_variance=None if sd is None else sd**2,
                days=days,
                mde=mde,
                relative=not absolute,
                alpha=config.alpha,
                power=config.power,
                treatment_share=treatment_share,
                cuped_rho=rho,
            )
            for rho in rhos
        ]
    except ValueError as error:
        raise CashbackError(str(error)) from None
    table = Table(
        "plan",
        "days",
        "customers (control / treatment)",
        "MDE",
        "MDE relative",
        title=f"alpha {config.alpha:g}, power {config.power:.0%}",
    )
    for rho, found in zip(rhos, plans, strict=True):
        table.add_row(
            f"CUPED, rho {rho:g}" if rho else "without CUPED",
            f"{found.days:,.0f}",
            f"{found.n_control:,.0f} / {found.n_treatment:,.0f}",
            _number(found.mde_absolute),
            _number(found.mde_relative, ".2%"),
        )
    out_console.print(table)


def _say_verdicts(verdicts: Sequence[Verdict]) -> None:
    for verdict in verdicts:
        _say(f"verdict {verdict.variant}: {verdict.decision.replace('_', ' ')}. {verdict.text}")


def _say(line: str) -> None:
    out_console.print(escape(line), soft_wrap=True, highlight=False)


def _print_counts(title: str, counts: dict[str, int]) -> None:
    table = Table("what", "rows", title=title)
    for name, n in counts.items():
        table.add_row(escape(name), f"{n:,}")
    out_console.print(table)


# --------------------------------------------------------------------------- serving

kpis_app = typer.Typer(help="Program KPIs and return on cashback.", no_args_is_help=True)
app.add_typer(kpis_app, name="kpis")


class KpiGroup(StrEnum):
    """How `cashback kpis compute` groups customers."""

    SEGMENT = "segment"
    LIFECYCLE = "lifecycle"
    CHANNEL = "channel"
    CATEGORY = "category"


class KpiPeriod(StrEnum):
    """The reporting period of `cashback kpis compute`."""

    WEEK = "week"
    MONTH = "month"


@kpis_app.command("compute")
def kpis_compute(
    since: Annotated[
        str | None,
        typer.Option("--from", help="first date YYYY-MM-DD (default: the first order)"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--to", help="end date YYYY-MM-DD, exclusive (default: after the last order)"),
    ] = None,
    by: Annotated[KpiGroup | None, typer.Option(help="group by (default: none)")] = None,
    period: Annotated[
        KpiPeriod | None, typer.Option(help="week or month (default: the setting)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="write kpis, cashback and return_on_cashback files in this directory"),
    ] = None,
    file_format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.CSV,
) -> None:
    """KPIs per period and group: activity, retention, participation, cashback, return on it."""
    from pipelines.kpi_compute import run  # noqa: PLC0415

    settings = get_settings()
    done = run(
        settings,
        period=period.value if period else None,
        since=_parse_close(since),
        until=_parse_close(until),
        by=by.value if by else None,
        out=out,
        file_format=file_format.value,
    )
    _print_kpis(done.result, settings.currency)
    for path in done.files:
        _say(f"written {path}")


def _print_kpis(result: KpiResult, currency: str) -> None:
    """Each period and group's KPIs (activity, then cashback), the return on cashback, notes."""
    span = f"{result.window.start:%Y-%m-%d} to {result.window.end:%Y-%m-%d}"
    activity = Table(
        result.window.period,
        "group",
        "active",
        "orders/cust.",
        f"AOV ({currency})",
        "retention",
        "repurchase",
        title=f"customers {span}",
    )
    money = Table(
        result.window.period,
        "group",
        "participation",
        "omnichannel",
        f"paid ({currency})",
        f"clawed back ({currency})",
        f"fraud loss ({currency})",
        title=f"cashback {span}",
    )

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    def amount(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    for row in result.table.iter_rows(named=True):
        head = (f"{row['period']:%Y-%m-%d}", escape(str(row["group"])))
        frequency = row["purchase_frequency"]
        activity.add_row(
            *head,
            f"{row['active_customers']:,}",
            "—" if frequency is None else f"{frequency:.2f}",
            "—" if row["average_order_value"] is None else f"{row['average_order_value']:.2f}",
            share(row["retention_rate"]),
            share(row["repurchase_rate"]),
        )
        money.add_row(
            *head,
            share(row["participation_rate"]),
            share(row["omnichannel_engagement"]),
            amount(row["cashback_paid"]),
            amount(row["cashback_clawed_back"]),
            amount(row["fraud_loss"]),
        )
    out_console.print(activity)
    out_console.print(money)
    if not result.return_on_cashback.is_empty():
        roc = Table(
            "group", "exposures", "return on cashback", "95 % CI", title="return on cashback"
        )
        for row in result.return_on_cashback.iter_rows(named=True):
            roc.add_row(
                escape(str(row["group"])),
                f"{row['exposures']:,}",
                f"{row['return_on_cashback']:.2f}",
                f"{row['low']:.2f} to {row['high']:.2f}",
            )
        out_console.print(roc)
        _say(f"return on cashback: incremental margin per unit of cashback, from {result.source}")
    for note in result.notes:
        _say(f"note: {note}")


keys_app = typer.Typer(help="API keys of the serving API (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The serving API's app database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@keys_app.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="what the key may call")],
    name: Annotated[str | None, typer.Option(help="a label (default: the role)")] = None,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    from serving.auth import create_key  # noqa: PLC0415
    from serving.db import open_database  # noqa: PLC0415

    database = open_database(get_settings())
    try:
        with database.session() as session:
            created = create_key(session, role, name)
    finally:
        database.close()
    _say(f"API key {created.key_id} ({created.name}, role {created.role}): {created.key}")
    _say("Keep it now: it is stored hashed and cannot be shown again.")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, name, role, its first characters, when created and revoked."""
    from serving.auth import KEY_PREFIX, list_keys  # noqa: PLC0415
    from serving.db import open_database  # noqa: PLC0415

    database = open_database(get_settings())
    try:
        with database.session() as session:
            rows = list_keys(session)
    finally:
        database.close()
    table = Table("id", "name", "role", "key", "created", "revoked", title="API keys")
    for row in rows:
        revoked = f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
        table.add_row(
            str(row.id), escape(row.name), row.role, f"{KEY_PREFIX}{row.prefix}...",
            f"{row.created_at:%Y-%m-%d %H:%M}", revoked,
        )  # fmt: skip
    out_console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="the key's id (`keys list`)")]) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    from serving.auth import revoke_key  # noqa: PLC0415
    from serving.db import open_database  # noqa: PLC0415

    database = open_database(get_settings())
    try:
        with database.session() as session:
            row = revoke_key(session, key_id)
    finally:
        database.close()
    _say(f"API key {row.id} ({row.name}) revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the app database's migrations (the API also does when it starts)."""
    from serving.db import open_database  # noqa: PLC0415

    database = open_database(get_settings(), migrate=False)
    try:
        revision = database.upgrade()
    finally:
        database.close()
    _say(f"app database ({database.backend}) at revision {revision}")


decisions_app = typer.Typer(
    help="Decisions of the serving API: what is behind one, and its replay.", no_args_is_help=True
)
app.add_typer(decisions_app, name="decisions")
DecisionId = Annotated[str, typer.Argument(help="the decision_id the API answered with")]

if TYPE_CHECKING:
    from serving.decisions import DecisionRecord


def _found_decision(settings: Settings, decision_id: str) -> DecisionRecord:
    """The stored decision; exit 2 when no decision has this id."""
    from serving.db import open_database  # noqa: PLC0415
    from serving.decisions import find_decision  # noqa: PLC0415

    database = open_database(settings)
    try:
        record = find_decision(database.engine, decision_id)
    finally:
        database.close()
    if record is None:
        err_console.print(
            f"[red]error:[/red] no decision with id {escape(repr(decision_id))} in the app "
            "database",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=2)
    return record


@decisions_app.command("show")
def decisions_show(decision_id: DecisionId) -> None:
    """The inputs, features, model and policy versions and the answer of a decision, as JSON.

    Exits 2 when no decision has this id.
    """
    from serving.decisions import decision_policy  # noqa: PLC0415

    settings = get_settings()
    record = _found_decision(settings, decision_id)
    document = record.to_dict() | {"policy": record.policy | decision_policy(settings, record)}
    typer.echo(json.dumps(document, indent=2, default=str))


@decisions_app.command("replay")
def decisions_replay(decision_id: DecisionId) -> None:
    """Recompute a decision with the model version that made it; say whether it matches.

    Exits 1 when it does not match (each differing field is shown, stored and recomputed),
    2 when no decision has this id.
    """
    from serving.decisions import replay_decision  # noqa: PLC0415

    settings = get_settings()
    result = replay_decision(settings, _found_decision(settings, decision_id))
    for line in result.describe():
        _say(line)
    if not result.matches:
        raise typer.Exit(code=1)


exposures_app = typer.Typer(
    help="Exposures the serving API decided, into the contract tables.", no_args_is_help=True
)
app.add_typer(exposures_app, name="exposures")


@exposures_app.command("export")
def exposures_export() -> None:
    """Copy the API's new exposures and first experiment assignments into the data tables.

    Run it before `cashback train rates` or `cashback experiments analyze` (e.g. daily);
    a second run adds nothing.
    """
    from pipelines import export_exposures  # noqa: PLC0415

    result = export_exposures.run(get_settings())
    _say(f"{result.added:,} of {result.stored:,} stored exposures added to the exposures table")
    for experiment, added in result.assignments.items():
        _say(f"experiment {experiment}: {added:,} first assignments added")


labels_app = typer.Typer(
    help="Claim labels from the risk team's review decisions.", no_args_is_help=True
)
app.add_typer(labels_app, name="labels")


@labels_app.command("export")
def labels_export() -> None:
    """Copy the labels of decided review cases into the claim_labels table.

    approve is legit; reject, partial and clawback are fraud (a hold gives none yet); the
    source is `audit` for audit cases, `review` for flagged ones. Run it before
    `cashback train fraud` (e.g. daily); a second run adds nothing.
    """
    from pipelines import export_labels  # noqa: PLC0415

    result = export_labels.run(get_settings())
    by_source = ", ".join(f"{source} {n:,}" for source, n in result.added.items()) or "none"
    _say(
        f"{result.total_added:,} of {result.decided:,} labelled review decisions added to "
        f"claim_labels ({by_source}); {result.present:,} were there already"
    )
    if result.conflicting:
        _say(
            f"{result.conflicting:,} claims had another label from the same source in the "
            "table; kept as they were"
        )
    if result.pending:
        _say(
            f"{result.pending:,} labels wait for their claims in the claims table: import "
            "the claims, then export again"
        )


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (setting: serving.host)")] = (
        None
    ),
    port: Annotated[int | None, typer.Option(help="port (setting: serving.port)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes (setting: serving.workers)")
    ] = None,
) -> None:
    """Serve the API with uvicorn (OpenAPI docs at /docs) until interrupted."""
    from serving.server import serve as run_server  # noqa: PLC0415

    settings = get_settings()
    config = settings.serving
    address, number = host or config.host, port or config.port
    _say(f"serving the API on http://{address}:{number} (docs: /docs, probes: /healthz /readyz)")
    run_server(settings, address, number, workers or config.workers)


def _serve_demo(settings: Settings) -> None:
    """Serve the demo's API, with an admin key printed when none exists yet."""
    from serving.server import demo_key  # noqa: PLC0415
    from serving.server import serve as run_server  # noqa: PLC0415

    created = demo_key(settings) if settings.environment == "dev" else None
    if created is not None:
        _say(f"demo admin API key (shown once, stored hashed): {created.key}")
    else:
        _say("no demo key made (keys exist, or not dev): `cashback keys create --role engine`")
    config = settings.serving
    _say(f"serving the API on http://{config.host}:{config.port} (docs: /docs); Ctrl-C stops")
    run_server(settings, config.host, config.port, config.workers)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except (CashbackError, FileNotFoundError, PermissionError, ValidationError) as error:
        message = " ".join(str(error).split()) if isinstance(error, ValidationError) else error
        err_console.print(
            f"[red]error:[/red] {escape(str(message))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
