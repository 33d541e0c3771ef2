"""The batch feature tables as of a close, and the Feast repo built over them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from cashback.errors import CashbackError
from cashback.settings import FeatureStoreSettings, Settings
from features.catalog import OUTPUT_SERVICES, SERVICES, views
from features.customer_frame import FeatureSources, customer_features
from features.store import EVENT_TS, feast_objects, feature_store
from pipelines.build_features import run

pytestmark = pytest.mark.xdist_group("simulated_worlds")
CLOSE = datetime(2025, 10, 1, tzinfo=UTC)


def _settings(world: Path, tmp_path: Path) -> Settings:
    store = FeatureStoreSettings(subdirectory=str(tmp_path / "features"))
    return Settings(data_dir=world, ip_pepper="test-pepper-not-a-secret", feature_store=store)


def test_build_writes_every_view_as_of_the_close(default_world: Path, tmp_path: Path) -> None:
    settings = _settings(default_world, tmp_path)
    built = run(settings, CLOSE)
    assert set(built.rows) == set(views(settings.features))
    behaviour = pl.read_parquet(built.paths["customer_behaviour"])
    assert (behaviour[EVENT_TS] == CLOSE).all()
    sources = FeatureSources.from_directory(default_world)
    signed_up = sources.customers.filter(pl.col("signup_ts") < CLOSE).collect()
    assert behaviour.height == signed_up.height
    # the table holds exactly what the training path computes for the same close
    sample = (
        behaviour.sample(50, seed=1)
        .select("customer_id")
        .with_columns(pl.lit(CLOSE).cast(pl.Datetime("us", "UTC")).alias("close_ts"))
    )
    expected = customer_features(sources, sample.lazy(), settings.features).collect()
    got = sample.join(behaviour, on="customer_id", how="left", maintain_order="left")
    features = views(settings.features)["customer_behaviour"].features
    assert got.select(features).equals(expected.select(features))
    devices = pl.read_parquet(built.paths["device_network"])
    assert (devices["device_customers_30d"] >= 1).mean() > 0.8  # the rest just left the window


def test_a_close_that_is_not_midnight_is_refused(default_world: Path, tmp_path: Path) -> None:
    with pytest.raises(CashbackError, match="is not a daily close"):
        run(_settings(default_world, tmp_path), datetime(2025, 10, 1, 12, tzinfo=UTC))


def test_the_feast_repo_registers_entities_views_and_one_service_per_model(
    default_world: Path, tmp_path: Path
) -> None:
    settings = _settings(default_world, tmp_path)
    run(settings, CLOSE)
    store = feature_store(settings)
    store.apply(feast_objects(settings))
    assert {e.name for e in store.list_entities()} == {"customer", "device", "ip"}
    assert {fs.name for fs in store.list_feature_services()} == set(SERVICES | OUTPUT_SERVICES)
    fraud = store.get_feature_service("fraud_v1")
    assert {p.name for p in fraud.feature_view_projections} == {
        "customer_behaviour", "customer_cashback", "customer_lifecycle",
        "device_network", "ip_network", "claim_on_demand",
    }  # fmt: skip
