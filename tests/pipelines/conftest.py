"""Simulated worlds shared by the pipeline tests (built once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cashback.settings import Settings
from pipelines.simulate import run, world_config

WORLD_CUSTOMERS = 20_000
WORLD_DAYS = 365


def _simulate(root: Path, preset: str, seed: int) -> Path:
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=root)
    config = world_config(
        settings, customers=WORLD_CUSTOMERS, days=WORLD_DAYS, seed=seed, preset=preset
    )
    out = root / f"world-{preset}-{seed}"
    run(config, out, settings)
    return out


@pytest.fixture(scope="session")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-preset world of 20,000 customers over a year."""
    return _simulate(tmp_path_factory.mktemp("sim"), "default", seed=11)


@pytest.fixture(scope="session")
def hard_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hard-preset world of 20,000 customers over a year."""
    return _simulate(tmp_path_factory.mktemp("sim"), "hard", seed=11)
