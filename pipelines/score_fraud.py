"""`cashback fraud score --since DATE`: score claims in batch with the champion model.

Claims are scored by day: each day's scores go to one parquet file,
`<data_dir>/scores/fraud/day=YYYY-MM-DD.parquet`, written to a temp file and renamed. A run
skips the days already scored by the same model version, so an interrupted run resumes
where it stopped and never writes a claim twice; a new champion rescores (each day's file is
replaced whole). Features are computed a week of claims at a time, point in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.progress import progress_bar
from cashback.settings import Settings
from cashback.tables import write_parquet_atomic
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.fraud.scorer import SCORE_COLUMNS, FraudScorer, flagged
from pipelines.train_fraud import configured_rules

SERVICE = "fraud_v1"
DAYS_PER_BATCH = 7
OUTPUT_COLUMNS = (
    "claim_id",
    "ts",
    "cashback_amount",
    *SCORE_COLUMNS,
    "abuse_type",
    "reasons",
    "model_version",
)


@dataclass
class ScoreRun:
    """What a scoring run did.

    Attributes:
        written: days scored now.
        skipped: days already scored by this model version.
        claims: claims scored now.
        flagged: of them, sent to review or blocked.
    """

    written: list[date] = field(default_factory=list)
    skipped: list[date] = field(default_factory=list)
    claims: int = 0
    flagged: int = 0


def day_path(directory: Path, day: date) -> Path:
    """The scores file of one day."""
    return directory / f"day={day.isoformat()}.parquet"


def _done(path: Path, version: str) -> bool:
    if not path.exists():
        return False
    versions = pl.scan_parquet(path).select(pl.col("model_version").unique()).collect()
    return versions.height <= 1 and (versions.height == 0 or versions.item() == version)


def _explained(scorer: FraudScorer, scored: pl.DataFrame) -> pl.DataFrame:
    """Reasons and abuse type for the flagged claims (null for the others)."""
    indexed = scored.with_row_index("__row")
    hits = indexed.filter(flagged(pl.col("decision")))
    explanations = scorer.explain_frame(hits) if hits.height else []
    extra = pl.DataFrame(
        {
            "__row": hits["__row"],
            "abuse_type": [e.abuse_type for e in explanations],
            "reasons": [list(e.reasons) for e in explanations],
        },
        schema={"__row": pl.UInt32, "abuse_type": pl.String, "reasons": pl.List(pl.String)},
    )
    return indexed.join(extra, on="__row", how="left", maintain_order="left").drop("__row")


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _batches(days: list[date]) -> list[list[date]]:
    return [days[i : i + DAYS_PER_BATCH] for i in range(0, len(days), DAYS_PER_BATCH)]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def score_days(
    settings: Settings,
    scorer: FraudScorer,
    version: str,
    since: date,
    until: date | None = None,
) -> ScoreRun:
    """Score the claims of each day in [since, until] not yet scored by `version`.

    Args:
        settings: service settings (data_dir, features).
        scorer: the model, thresholds and rules.
        version: the model version written beside each score.
        since: first day.
        until: last day (default: the day of the last claim).
    """
    sources = FeatureSources.from_directory(settings.data_dir)
    last = sources.claims.select(pl.col("ts").max()).collect().item()
    if last is None:
        msg = f"{settings.data_dir}: no claims to score"
        raise CashbackError(msg)
    out = settings.data_dir / "scores" / "fraud"
    out.mkdir(parents=True, exist_ok=True)
    run = ScoreRun()
    todo: list[date] = []
    for day in _days(since, until or last.date()):
        (run.skipped if _done(day_path(out, day), version) else todo).append(day)
    with progress_bar("scoring claims", total=len(todo)) as advance:
        for batch in _batches(todo):
            window = pl.col("ts").is_between(
                _midnight(batch[0]), _midnight(batch[-1] + timedelta(days=1)), closed="left"
            )
            claims = sources.claims.filter(window & pl.col("ts").dt.date().is_in(batch))
            frame = training_frame(sources, claims, SERVICE, settings.features).collect()
            scored = _explained(scorer, scorer.score_frame(frame)).with_columns(
                pl.lit(version).alias("model_version")
            )
            for day in batch:
                rows = scored.filter(pl.col("ts").dt.date() == day).select(OUTPUT_COLUMNS)
                write_parquet_atomic(rows, day_path(out, day))
                run.written.append(day)
                run.claims += rows.height
                run.flagged += int(rows.select(flagged(pl.col("decision")).sum()).item())
                advance(1)
    return run


def run(settings: Settings, since: date, until: date | None = None) -> ScoreRun:
    """Score claims with the champion fraud model and the configured rules."""
    from models.fraud.lifecycle import champion_scorer  # noqa: PLC0415 - MLflow is slow to import

    scorer, version = champion_scorer(settings, configured_rules(settings))
    return score_days(settings, scorer, version, since, until)
