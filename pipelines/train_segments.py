"""`cashback train segments`: behaviour clusters of customers as of a close, named and profiled.

One straight line:
1. the close (default: the latest close of the data), checked to be inside the data;
2. the segments_v1 features of every customer signed up by the close (the training frame
   path, so the features are exactly what serving reads at that close);
3. customers with a purchase in the last 365 days are clustered (`models.segments.fit`:
   log1p and standardization, k-means, k chosen by silhouette among stable k); the others
   are `inactive`, with RFM 0 as the features define;
4. names from the clusters' traits (`models.segments.naming`), then the fitted pipeline
   turned into a `SegmentModel` (JSON, assignment in numpy: no pickle);
5. profiles per segment, with churn after the close when the data has the period after it,
   and the response to the rate from randomized exposures;
6. metrics: silhouette, k, stability (two-halves ARI), the gate's metrics on the evaluation
   set, and in simulated worlds the ARI against the latent segments (active customers who
   are not fraudsters);
7. the model logged and registered as `cashback-segments` with the alias `challenger`;
8. this run's assignments written to `<feature dir>/tables/customer_segment.parquet`
   (customer_id, close_ts, segment), for analysis; serving reads the champion's segments
   from the customer_scores feature view (`cashback customers score`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import Pipeline

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import scan_parquet_path, write_parquet_atomic
from features.cashback_features import cashback_features
from features.catalog import CLOSE, service_features
from features.customer_frame import FeatureSources
from features.lifecycle import RFM_COLUMNS
from features.store import batch_table_path
from features.training import training_frame
from models.segments.fit import ClusterFit, fit_clusters, native_model, predict
from models.segments.model import (
    INACTIVE,
    ClusterSpace,
    SegmentModel,
    active_mask,
    clustering_space,
    raw_matrix,
)
from models.segments.naming import name_clusters
from models.segments.profiles import segment_profiles
from models.segments.quality import TRUE_SEGMENT, segmentation_quality
from models.segments.response import randomized_exposures, rate_response
from pipelines.build_features import latest_close

SERVICE = "segments_v1"
TABLE = "customer_segment"
TS = pl.Datetime("us", "UTC")

log = logging.getLogger(__name__)


@dataclass
class SegmentsTraining:
    """What a segments training run produced.

    Attributes:
        close: the close the segments are as of.
        model: the fitted model (names, standardization, centres).
        features: the model's input columns (the segments_v1 features).
        assignments: every customer signed up by the close: customer_id, segment,
            lifecycle and the RFM scores.
        profiles: one row per segment (see `models.segments.profiles`).
        response: spend per randomized exposure by segment and rate (empty without them).
        selection: per k tried: silhouette, stability, chosen.
        metrics: every metric logged.
        notes: what the figures do not show by themselves (nulls and why, k choice).
        table: the customer_segment table written.
        seconds: time taken by each step.
        pipeline: the fitted scikit-learn pipeline `model` was read from (not stored).
        version: the registered model version (None when not registered).
    """

    close: datetime
    model: SegmentModel
    features: tuple[str, ...]
    assignments: pl.DataFrame
    profiles: pl.DataFrame
    response: pl.DataFrame
    selection: pl.DataFrame
    metrics: dict[str, float]
    notes: list[str]
    table: Path
    seconds: dict[str, float] = field(default_factory=dict)
    pipeline: Pipeline | None = None
    version: str | None = None


def check_close(sources: FeatureSources, close: datetime | None) -> tuple[datetime, datetime]:
    """The close to segment at (default: the latest), and the latest close of the data.

    Raises:
        CashbackError: when the close is not a daily close (00:00 UTC), or lies outside the
            data (before the first close after the first transaction, or after the latest).
    """
    end = latest_close(sources)
    if close is None:
        return end, end
    if close.tzinfo is None or close.utcoffset() != timedelta(0):
        msg = f"close {close.isoformat()} must be in UTC"
        raise CashbackError(msg)
    if close.hour or close.minute or close.second or close.microsecond:
        msg = f"close {close.isoformat()} is not a daily close (00:00 UTC)"
        raise CashbackError(msg)
    first = sources.transactions.select(pl.col("ts").min()).collect().item()
    if not isinstance(first, datetime):
        msg = "no transactions to segment customers by (cashback data simulate|import)"
        raise CashbackError(msg)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if not start <= close <= end:
        msg = (
            f"close {close:%Y-%m-%d} is outside the data: its closes run from "
            f"{start:%Y-%m-%d} (after the first transaction) to {end:%Y-%m-%d} "
            "(after the last event)"
        )
        raise CashbackError(msg)
    return close, end


def _features(settings: Settings, sources: FeatureSources, close: datetime) -> pl.DataFrame:
    """The segments_v1 features of every customer signed up by the close."""
    rows = (
        sources.customers.filter(pl.col("signup_ts") < close)
        .select("customer_id", pl.lit(close).cast(TS).alias("ts"))
        .sort("customer_id")
    )
    return training_frame(sources, rows, SERVICE, settings.features).collect()


def _avg_rate(sources: FeatureSources, customers: pl.DataFrame, close: datetime) -> pl.DataFrame:
    """The average cashback rate over 365 days (a cashback feature, not in segments_v1)."""
    keys = customers.select("customer_id", pl.lit(close).cast(TS).alias(CLOSE)).lazy()
    return (
        cashback_features(sources.claims, sources.exposures, sources.offers, keys)
        .select("customer_id", "avg_rate_365d")
        .collect()
    )


def _churned(
    sources: FeatureSources, customers: pl.DataFrame, close: datetime, end: datetime, days: int
) -> pl.Series | None:
    """Whether each customer made no purchase in the `days` after the close (None: unknown)."""
    until = close + timedelta(days=days)
    if until > end:
        return None
    buyers = (
        sources.transactions.filter(
            pl.col("amount") > 0, pl.col("ts") >= close, pl.col("ts") < until
        )
        .select("customer_id")
        .unique()
        .collect()
    )
    return ~customers["customer_id"].is_in(buyers["customer_id"].implode()).alias("churned")


def _truth(directory: Path) -> pl.DataFrame | None:
    """The latent segment of each legit customer of a simulated world (None elsewhere)."""
    path = directory / "truth" / "customers.parquet"
    if not path.exists():
        return None
    return (
        scan_parquet_path(path)
        .select(
            "customer_id",
            pl.when(pl.col("role") == "legit").then(pl.col("segment")).alias(TRUE_SEGMENT),
        )
        .collect()
    )


def _window_count(settings: Settings, columns: list[str]) -> str:
    """Purchases over the share window (the mix shares' denominator), else over 365 days."""
    name = f"purchases_{settings.features.share_window_days}d"
    return name if name in columns else "purchases_365d"


def _fit(
    settings: Settings, active: pl.DataFrame, space: ClusterSpace, close: datetime
) -> tuple[ClusterFit, SegmentModel]:
    """Clusters, names and the native model of the active customers."""
    x = raw_matrix(active, space.columns)
    fitted = fit_clusters(space, x, settings.segments)
    labels = predict(fitted.pipeline, x)
    window = _window_count(settings, active.columns)
    names, _ = name_clusters(active, labels, fitted.k, space, window)
    params = {"close": close.isoformat(), "k": fitted.k, "active_customers": active.height}
    return fitted, native_model(fitted.pipeline, space, names, params)


def _metrics(
    fitted: ClusterFit,
    evaluation: pl.DataFrame,
    model: SegmentModel,
    frame: pl.DataFrame,
    active: pl.DataFrame,
) -> dict[str, float]:
    metrics = {
        "k": float(fitted.k),
        "selection_silhouette": fitted.silhouette,
        "stability_ari": fitted.stability,
        "customers": float(frame.height),
        "active_customers": float(active.height),
        "inactive_share": float(np.mean(frame["segment"].to_numpy() == INACTIVE)),
    }
    for row in fitted.selection.iter_rows(named=True):
        metrics[f"silhouette_k{row['k']}"] = row["silhouette"]
        metrics[f"stability_k{row['k']}"] = row["stability"]
    quality = segmentation_quality(evaluation, model.assign(evaluation).to_list())
    metrics |= {k: v for k, v in quality.items() if k != "truth_ari"}
    if TRUE_SEGMENT in active.columns:
        known = active.filter(pl.col(TRUE_SEGMENT).is_not_null())
        metrics["truth_ari"] = float(
            adjusted_rand_score(known[TRUE_SEGMENT].to_numpy(), known["segment"].to_numpy())
        )
    return metrics


def _notes(
    fitted: ClusterFit,
    active: int,
    churn_known: bool,
    profiles: pl.DataFrame,
    settings: Settings,
) -> list[str]:
    notes = [fitted.note] if fitted.note else []
    config = settings.segments
    if fitted.fit_rows.size < active:
        notes.append(
            f"clusters fitted on a seeded sample of {fitted.fit_rows.size:,} of the {active:,} "
            "active customers (segments.fit_customers); every customer is assigned"
        )
    if not churn_known:
        notes.append(
            f"churn_rate is null: the {config.churn_days} days after the close are not in the "
            "data (train at an earlier close to see it)"
        )
    if profiles["randomized_exposures"].null_count() == profiles.height:
        notes.append(
            "rate response is null: no randomized exposures (propensity strictly between 0 "
            "and 1) in the year before the close"
        )
    if profiles["avg_rate_365d"].null_count() == profiles.height:
        notes.append("avg_rate_365d is null: no claims in the year before the close")
    return notes


def run(
    settings: Settings, *, close: datetime | None = None, register: bool = True
) -> SegmentsTraining:
    """Segment every customer as of a close, profile the segments, and register the model.

    Args:
        settings: service settings (data_dir, features, segments, models, feature_store).
        close: a daily close (00:00 UTC) inside the data; default the latest close.
        register: log to MLflow and register the model as challenger.

    Returns:
        The model, assignments, profiles, metrics and registered version.

    Raises:
        CashbackError: for a close outside the data, or too few active customers to cluster
            (fewer than `min_customers_per_cluster` x `k_max`).
    """
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    config = settings.segments
    sources = FeatureSources.from_directory(settings.data_dir)
    close, end = check_close(sources, close)
    frame = _features(settings, sources, close)
    features = tuple(service_features(SERVICE, settings.features))
    space = clustering_space(features)
    active_rows = active_mask(frame)
    needed = config.min_customers_per_cluster * config.k_max
    if int(active_rows.sum()) < needed:
        msg = (
            f"only {int(active_rows.sum()):,} customers bought in the 365 days before "
            f"{close:%Y-%m-%d}: segments need at least {needed:,} "
            f"({config.min_customers_per_cluster} per cluster x k_max {config.k_max})"
        )
        raise CashbackError(msg)
    seconds["features"] = time.perf_counter() - started

    tick = time.perf_counter()
    active = frame.filter(pl.Series(active_rows))
    fitted, model = _fit(settings, active, space, close)
    seconds["fit"] = time.perf_counter() - tick

    tick = time.perf_counter()
    frame = frame.with_columns(model.assign(frame))
    truth = _truth(settings.data_dir)
    if truth is not None:
        frame = frame.join(truth, on="customer_id", how="left", maintain_order="left")
    active = frame.filter(pl.Series(active_rows))
    assignments = frame.select("customer_id", "segment", "lifecycle", *RFM_COLUMNS)
    churned = _churned(sources, frame, close, end, config.churn_days)
    randomized = randomized_exposures(sources.transactions, sources.exposures, assignments, close)
    by_rate, by_segment = rate_response(randomized)
    profile_frame = frame.join(
        _avg_rate(sources, frame, close), on="customer_id", how="left", maintain_order="left"
    ).with_columns(
        churned if churned is not None else pl.lit(None, dtype=pl.Boolean).alias("churned")
    )
    profiles = segment_profiles(
        profile_frame,
        model.segments,
        channels=space.channel_columns,
        categories=space.category_columns,
        window_count=_window_count(settings, frame.columns),
        response=by_segment,
    )
    sample = np.random.default_rng(config.seed).permutation(active.height)
    columns = [*features, *([TRUE_SEGMENT] if truth is not None else [])]
    evaluation = active[np.sort(sample[: config.evaluation_customers])].select(columns)
    metrics = _metrics(fitted, evaluation, model, frame, active)
    seconds["profiles"] = time.perf_counter() - tick

    result = SegmentsTraining(
        close=close,
        model=model,
        features=features,
        assignments=assignments,
        profiles=profiles,
        response=by_rate,
        selection=fitted.selection,
        metrics=metrics,
        notes=_notes(fitted, active.height, churned is not None, profiles, settings),
        table=batch_table_path(settings, TABLE),
        seconds=seconds,
        pipeline=fitted.pipeline,
    )
    if register:
        from models.segments.lifecycle import register_segments  # noqa: PLC0415 - MLflow is slow

        tick = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cashback-segments-") as tmp:
            path = model.save(Path(tmp))
            result.version = register_segments(
                settings, result, active, evaluation, model.coordinates(active), path
            )
        seconds["register"] = time.perf_counter() - tick
    table = assignments.select("customer_id", pl.lit(close).cast(TS).alias(CLOSE), "segment")
    write_parquet_atomic(table, result.table)
    seconds["total"] = time.perf_counter() - started
    log.info("segments as of %s: %s", f"{close:%Y-%m-%d}", ", ".join(model.names))
    return result
