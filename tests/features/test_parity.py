"""What serving sees, training sees: the online path equals the training frame.

500 random claims on five consecutive days, at their own times of day. The serving path
replays the events up to each day: the batch tables of that day's close are built from the
events before it and materialized into the online store, and the claims are recorded in the
claim log; each claim is then served from the online store, the claim log and the request.
Every feature of every service must equal the training frame's (floats to 1e-9).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cashback.settings import FeatureStoreSettings, Settings
from cashback.tables import write_parquet_atomic
from features.catalog import SERVICES, service_features, views
from features.cold_start import cold_start
from features.customer_frame import FeatureSources
from features.fresh import FRESH_FEATURES, on_demand_row
from features.fresh_store import FreshClaimLog
from features.online import OnlineReader
from features.store import apply, batch_table_path, feature_store, materialize_tables
from features.training import training_frame
from pipelines.build_features import batch_tables

pytestmark = pytest.mark.xdist_group("simulated_worlds")
FIRST_DAY = datetime(2025, 8, 11, tzinfo=UTC)
DAYS = 5
PAIRS = 500


def _pairs(sources: FeatureSources) -> pl.DataFrame:
    window = sources.claims.filter(
        pl.col("ts") >= FIRST_DAY, pl.col("ts") < FIRST_DAY + timedelta(days=DAYS)
    )
    return window.collect().sample(PAIRS, seed=17).sort("ts")


def _serve_day(
    settings: Settings,
    sources: FeatureSources,
    close: datetime,
    claims: pl.DataFrame,
    log: FreshClaimLog,
) -> list[dict[str, object]]:
    """Build and materialize the close from the events before it, then serve the claims."""
    for name, frame in batch_tables(sources.before(close), close, settings).items():
        write_parquet_atomic(frame, batch_table_path(settings, name))
    if close == FIRST_DAY:
        apply(settings)
    store = feature_store(settings)
    materialize_tables(settings, end=close)
    reader = OnlineReader(store, "fraud_v1", skip_on_demand=True)
    online = reader.read_rows(
        {k: claims[k].to_list() for k in ("customer_id", "device_id", "ip_hash")}
    )
    served = []
    for i, claim in enumerate(claims.iter_rows(named=True)):
        row = {name: values[i] for name, values in online.features.items()}
        for view, found in online.found.items():  # unknown to the store: its cold start
            if not found[i]:
                row |= cold_start(settings.features)[view]
        row |= log.features(claim)
        row |= on_demand_row(claim, row["avg_basket_90d"])  # type: ignore[arg-type]
        served.append(row)
    return served


def test_online_features_equal_the_training_frame_for_every_service(
    default_world: Path, tmp_path: Path
) -> None:
    store = FeatureStoreSettings(subdirectory=str(tmp_path / "features"))
    settings = Settings(
        data_dir=default_world, ip_pepper="test-pepper-not-a-secret", feature_store=store
    )
    sources = FeatureSources.from_directory(default_world)
    pairs = _pairs(sources)
    # the serving path, day by day
    log = FreshClaimLog()
    log.record(
        sources.claims.filter(pl.col("ts") < FIRST_DAY + timedelta(days=DAYS))
        .collect()
        .iter_rows(named=True)
    )
    served: list[dict[str, object]] = []
    for day in range(DAYS):
        close = FIRST_DAY + timedelta(days=day)
        todays = pairs.filter(pl.col("ts") >= close, pl.col("ts") < close + timedelta(days=1))
        served += _serve_day(settings, sources, close, todays, log)
    # the training path
    expected = training_frame(sources, pairs.lazy(), "fraud_v1", settings.features).collect()
    names = service_features("fraud_v1", settings.features)
    assert len(served) == PAIRS
    for name in names:
        got = [row[name] for row in served]
        assert got == pytest.approx(expected[name].to_list(), abs=1e-9), name
    # and every other service's features are among those compared
    every = set(names)
    for service in SERVICES:
        assert set(service_features(service, settings.features)) <= every
    assert set(FRESH_FEATURES) <= every
    assert {f for v in views(settings.features).values() for f in v.features} <= every
