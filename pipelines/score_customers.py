"""`cashback customers score`: the champions' view of every customer, for the feature store.

As of the latest close, per customer signed up by then:
- segment: the champion segment model (`cashback-segments`) on the segments_v1 features;
- churn_probability: the champion churn model, for the scored population (a purchase within
  `customers.inactive_limit_days`); null outside it;
- clv: expected spend over the next `customers.value_horizon_days`, from the champion value
  model (`cashback-clv`), else BG/NBD x Gamma-Gamma fitted on the whole history; null for
  customers who never bought;
- next_purchase_days: the expected days from the close to the next purchase (BG/NBD median
  wait; null when the customer is more likely gone than alive).

Written to `<feature dir>/tables/customer_scores.parquet` with Feast's event timestamp: the
`customer_scores` feature view (model outputs) that serving reads with the lifecycle stage.
A model without a champion leaves its column null and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from cashback.settings import Settings
from cashback.tables import write_parquet_atomic
from features.catalog import SCORES_VIEW, output_views
from features.customer_frame import FeatureSources
from features.store import EVENT_TS, batch_table_path
from features.training import training_frame
from models.customers.snapshots import KEY
from models.fraud.dataset import encode
from pipelines.build_features import latest_close
from pipelines.train_churn import BGNBD_FEATURES, bgnbd_columns
from pipelines.train_value import COLUMNS as VALUE_COLUMNS
from pipelines.train_value import value_columns

SERVICE = "churn_v1"  # a superset of segments_v1: every customer model reads from it
TS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class CustomerScores:
    """The scores as of a close, where they were written, and which models made them."""

    close: datetime
    scores: pl.DataFrame
    path: Path
    versions: dict[str, int | None]
    notes: tuple[str, ...]


def _purchases(sources: FeatureSources) -> pl.LazyFrame:
    return sources.transactions.filter(pl.col("amount") > 0).select(KEY, "ts", "amount")


def _features(settings: Settings, sources: FeatureSources, close: datetime) -> pl.DataFrame:
    rows = (
        sources.customers.filter(pl.col("signup_ts") < close)
        .select(KEY, pl.lit(close).cast(TS).alias("ts"))
        .sort(KEY)
    )
    return training_frame(sources, rows, SERVICE, settings.features).collect()


def _segments(settings: Settings, frame: pl.DataFrame) -> pl.Series:
    from models.registry import champion_artifacts  # noqa: PLC0415 - MLflow is slow
    from models.segments.model import SegmentModel  # noqa: PLC0415

    model = SegmentModel.load(champion_artifacts(settings, "segments"))
    return model.assign(frame).alias("segment")


def _churn(
    settings: Settings, frame: pl.DataFrame, purchases: pl.LazyFrame, close: datetime
) -> pl.DataFrame:
    from models.customers.churn import load_churn  # noqa: PLC0415
    from models.registry import champion_artifacts  # noqa: PLC0415

    model = load_churn(champion_artifacts(settings, "churn"))
    config = settings.customers
    limit = pl.duration(days=config.inactive_limit_days)
    active = (
        purchases.filter(pl.col("ts") < close, pl.col("ts") >= pl.lit(close) - limit)
        .select(KEY)
        .unique()
        .collect()
    )
    extra = bgnbd_columns(purchases, close, config.churn_horizon_days).select(KEY, *BGNBD_FEATURES)
    scored = frame.join(active, on=KEY, how="semi").join(extra, on=KEY, how="left")
    probability = model.probability(encode(scored, model.features))
    return scored.select(KEY).with_columns(pl.Series("churn_probability", probability))


def _value(
    settings: Settings, frame: pl.DataFrame, history: pl.DataFrame, champion: bool
) -> pl.DataFrame:
    """CLV per customer with history: the champion value model, else Gamma-Gamma."""
    if not champion:
        return history.select(KEY, pl.col(VALUE_COLUMNS[2]).alias("clv"))
    from models.customers.value import load_value  # noqa: PLC0415
    from models.registry import champion_artifacts  # noqa: PLC0415

    model = load_value(champion_artifacts(settings, "clv"))
    rows = frame.join(history, on=KEY, how="inner")
    return rows.select(KEY).with_columns(
        pl.Series("clv", model.spend(encode(rows, model.features)))
    )


def score(settings: Settings, close: datetime | None = None) -> CustomerScores:
    """Every customer's lifecycle, segment, churn probability, CLV and next purchase.

    Args:
        settings: the service settings (data and feature directories, MLflow).
        close: the close to score at (default: the latest close of the data).

    Returns:
        The scores (not written: see `run`), the champion versions used, and notes.
    """
    from models.registry import champion_version  # noqa: PLC0415 - MLflow is slow

    sources = FeatureSources.from_directory(settings.data_dir)
    close = close or latest_close(sources)
    purchases = _purchases(sources)
    frame = _features(settings, sources, close)
    versions = {short: champion_version(settings, short) for short in ("segments", "churn", "clv")}
    notes = [
        f"no {short} champion: {column} is null (train and promote {short})"
        for short, column in (("segments", "segment"), ("churn", "churn_probability"))
        if versions[short] is None
    ]
    horizon = settings.customers.value_horizon_days
    history = value_columns(purchases, close, horizon)
    if versions["clv"] is None:
        notes.append("no clv champion: clv is BG/NBD x Gamma-Gamma on the whole history")
    scores = frame.select(KEY, "lifecycle").with_columns(
        _segments(settings, frame)
        if versions["segments"] is not None
        else pl.lit(None, dtype=pl.String).alias("segment")
    )
    if versions["churn"] is not None:
        scores = scores.join(_churn(settings, frame, purchases, close), on=KEY, how="left")
    else:
        scores = scores.with_columns(pl.lit(None, dtype=pl.Float64).alias("churn_probability"))
    scores = (
        scores.join(
            _value(settings, frame, history, versions["clv"] is not None), on=KEY, how="left"
        )
        .join(history.select(KEY, "next_purchase_days"), on=KEY, how="left")
        .with_columns(pl.col("clv").round(2))
    )
    path = batch_table_path(settings, SCORES_VIEW)
    return CustomerScores(close, scores, path, versions, tuple(notes))


def run(settings: Settings, close: datetime | None = None) -> CustomerScores:
    """Score every customer and write the `customer_scores` batch table (atomically)."""
    result = score(settings, close)
    columns = output_views()[SCORES_VIEW].features
    stamp = pl.lit(result.close).cast(TS).alias(EVENT_TS)
    write_parquet_atomic(result.scores.select(KEY, *columns, stamp), result.path)
    return result
