"""The served world of the API tests, shared with the API benchmarks.

A small simulated program with its feature tables, the Feast registry, the SQLite online
store, and fraud and rates champions in a local MLflow registry (the rates run also writes
the rate card and fraud shares serving reads), all under one data directory (one to two
minutes). `tests/serving/conftest.py` builds it once per test process;
`tests/benchmarks/test_api_load_bench.py` builds its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cashback.settings import FraudSettings, RateSettings, Settings, SimulationSettings
from tests.conftest import PROJECT_ROOT

PEPPER = "test-pepper-not-a-secret"
RULES = PROJECT_ROOT / "config" / "fraud_rules.yaml"


def base_settings(data_dir: Path, **changes: Any) -> Settings:
    """Settings of the served world (rules of the repo, 30-day maturity) with changes."""
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "ip_pepper": PEPPER,
        "simulation": SimulationSettings(customers=1_500, days=150),
        "fraud": FraudSettings(maturity_days=30, max_rounds=80, anomaly_trees=20, rules_file=RULES),
        # a quick rates champion: fewer trees, one resample, few bootstrap replicates
        "rates": RateSettings(
            n_estimators=100, effect_n_estimators=200, resamples=1, bootstrap_replicates=20
        ),
    }
    return Settings(**(fields | changes))


def build_served_world(data_dir: Path, **changes: Any) -> Settings:
    """Simulate the world into `data_dir`, put its features online, make the champions.

    Args:
        data_dir: an empty or absent directory.
        **changes: settings fields that replace those of `base_settings`.

    Returns:
        The world's settings.
    """
    from features.store import apply, materialize_tables
    from models.registry import promote
    from pipelines import build_features, simulate, train_fraud, train_rates

    settings = base_settings(data_dir, **changes)
    simulate.run(simulate.world_config(settings), settings.data_dir, settings)
    build_features.run(settings)
    apply(settings)
    materialize_tables(settings)
    train_fraud.run(settings)
    promote(settings, "fraud")
    train_rates.run(settings, register=True)
    promote(settings, "rates")
    return settings
