"""`cashback fraud backtest`: what a rules file would have done on the claims of a period.

The claims in [since, until) get their `fraud_v1` features point in time (what serving saw
at each claim), their labels (every label in `claim_labels`: fraud when any says fraud, with
the sources that labelled it) and, in a simulated world, the truth
(`<data_dir>/truth/claims.parquet`). The rules are then backtested on them, and compared
with a baseline rules file when one is given.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.progress import progress_bar
from cashback.settings import Settings
from cashback.tables import present_tables, read_table
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.fraud.backtest import BacktestReport, backtest, compare
from models.fraud.rules import RuleSet, load_rules

SERVICE = "fraud_v1"
TRUTH_FILE = Path("truth") / "claims.parquet"


def _instant(when: date | datetime | None) -> datetime | None:
    """A date as its 00:00 UTC; a naive datetime as UTC."""
    if when is None or isinstance(when, datetime):
        return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)
    return datetime.combine(when, time.min, tzinfo=UTC)


def labels(directory: Path) -> pl.LazyFrame | None:
    """One label per claim, from every label known (None without a claim_labels table).

    Returns:
        claim_id, `label` (fraud when any label says fraud, else legit) and `label_source`
        (the sources that labelled it, sorted, joined by `+`).
    """
    if "claim_labels" not in present_tables(directory):
        return None
    return (
        read_table(directory, "claim_labels")
        .group_by("claim_id")
        .agg(
            pl.when((pl.col("label") == "fraud").any())
            .then(pl.lit("fraud"))
            .otherwise(pl.lit("legit"))
            .alias("label"),
            pl.col("source").unique().sort().str.join("+").alias("label_source"),
        )
    )


def truth(directory: Path) -> pl.LazyFrame | None:
    """The simulator's `is_fraud` per claim, when the data directory has its truth."""
    path = directory / TRUTH_FILE
    if not path.exists():
        return None
    return pl.scan_parquet(path).select("claim_id", pl.col("is_fraud").cast(pl.Boolean))


def scored_claims(
    settings: Settings, since: datetime | None, until: datetime | None
) -> tuple[pl.DataFrame, tuple[datetime, datetime]]:
    """The claims of [since, until) with features, labels and (simulator) truth.

    Returns:
        The claims, and the period (defaults: the first claim's day, the day after the last).

    Raises:
        CashbackError: when the period holds no claim.
    """
    directory = settings.data_dir
    sources = FeatureSources.from_directory(directory)
    claims = sources.claims
    if since is not None:
        claims = claims.filter(pl.col("ts") >= since)
    if until is not None:
        claims = claims.filter(pl.col("ts") < until)
    span = claims.select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b"))
    first, last = span.collect().row(0)
    if first is None:
        bounds = (f"{t:%Y-%m-%d}" if t else "..." for t in (since, until))
        window = "[{}, {})".format(*bounds)
        msg = f"{directory}: no claims in {window} to backtest"
        raise CashbackError(msg)
    start = since or datetime.combine(first.date(), time.min, tzinfo=UTC)
    end = until or datetime.combine(last.date(), time.min, tzinfo=UTC) + timedelta(days=1)
    frame = training_frame(sources, claims, SERVICE, settings.features)
    known = labels(directory)
    if known is None:
        frame = frame.with_columns(
            pl.lit(None, pl.String).alias("label"), pl.lit(None, pl.String).alias("label_source")
        )
    else:
        frame = frame.join(known, on="claim_id", how="left", maintain_order="left")
    true = truth(directory)
    if true is not None:
        frame = frame.join(true, on="claim_id", how="left", maintain_order="left")
    return frame.collect(), (start, end)


def run(
    settings: Settings,
    rules_path: Path,
    *,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
    baseline_rules_path: Path | None = None,
) -> BacktestReport:
    """Backtest a rules file on the claims of [since, until).

    Args:
        settings: service settings (data_dir, features).
        rules_path: the rules file.
        since: first day (a date is 00:00 UTC; default: the first claim).
        until: end, excluded (default: after the last claim).
        baseline_rules_path: rules in place; the report then carries the comparison.

    Raises:
        RulesError: for a rules file that does not load (checked before any feature work).
        CashbackError: when the period holds no claim.
    """
    rules = load_rules(rules_path)
    baseline: RuleSet | None = load_rules(baseline_rules_path) if baseline_rules_path else None
    start, end = _instant(since), _instant(until)
    if start is not None and end is not None and end <= start:
        msg = f"until ({end:%Y-%m-%d}) must be after since ({start:%Y-%m-%d})"
        raise CashbackError(msg)
    with progress_bar("computing claim features"):
        scored, period = scored_claims(settings, start, end)
    if baseline is None:
        return backtest(rules, scored, period=period)
    comparison = compare(baseline, rules, scored, period=period)
    return replace(comparison.new, comparison=comparison)
