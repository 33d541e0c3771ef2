"""`make run` builds the demo end to end, and a second run reuses what exists."""

from __future__ import annotations

from pathlib import Path

from cashback.settings import FraudSettings, RateSettings, Settings, SimulationSettings
from cashback.tables import validate_directory
from features.online import OnlineReader
from features.store import feature_store
from pipelines import demo


def test_the_demo_builds_world_features_online_store_and_models_then_reuses_them(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        ip_pepper="test-pepper-not-a-secret",
        simulation=SimulationSettings(customers=1_500, days=150),
        fraud=FraudSettings(maturity_days=30),
        rates=RateSettings(
            n_estimators=60, effect_n_estimators=100, resamples=1, bootstrap_replicates=20
        ),
    )
    first = list(demo.run(settings))
    assert any(line.startswith("demo world written to") for line in first)
    assert any(line.startswith("feature tables as of") for line in first)
    assert validate_directory(settings.data_dir).ok
    reader = OnlineReader(feature_store(settings), "churn_v1")
    assert reader.read(["C00000001"]).missing == [False]
    second = list(demo.run(settings))
    assert any(line.startswith("demo world found in") for line in second)
    assert any(line.startswith("feature tables found in") for line in second)
    assert any(line.startswith("cashback-fraud v1 is the champion") for line in first)
    assert "fraud model found: cashback-fraud v1 is the champion" in second
    # the customer models: trained where 150 days allow, skipped with the reason otherwise
    assert any(line.startswith("cashback-segments v1 trained (promoted)") for line in first)
    assert any(line.startswith("churn model skipped: ") for line in first)
    assert any(line.startswith("clv model skipped: too little history") for line in first)
    assert "segments model found: cashback-segments v1 is the champion" in second
    # and serving reads each customer's segment and lifecycle from the online store
    customers = OnlineReader(feature_store(settings), "customers_v1").read(["C00000001"])
    assert customers.features["segment"][0] is not None
    assert customers.features["lifecycle"][0] is not None
    # the rate policy that offers are priced with, and its rate card
    assert any(line.startswith("cashback-rates v1 is the champion") for line in first)
    assert "rates policy found: cashback-rates v1 is the champion" in second
    assert (settings.data_dir / "rates" / "rate_card.parquet").exists()
