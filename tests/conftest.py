"""Shared fixtures: hermetic settings, the real data sets of ../shared/data, a headless browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cashback.settings import Settings, get_settings
from pipelines.simulate import run, world_config
from tests.browser import OpenPage, launch_chromium, page_opener

if TYPE_CHECKING:
    from playwright.sync_api import Browser

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointed at tmp_path, with a fixed test pepper (not a real secret)."""
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", "test-pepper-not-a-secret")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data set not available: {relative} (expected under ../shared/data)")
    return path


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


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless system Chromium per test process (skips without chromium or playwright)."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[OpenPage]:
    """`open_page(path_or_url, viewport=DESKTOP) -> PageView`, each in its own browser context."""
    with page_opener(chromium) as opener:
        yield opener
