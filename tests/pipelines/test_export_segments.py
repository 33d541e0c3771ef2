"""`cashback segments export`: one row per customer with segment, lifecycle, churn and CLV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import Settings, get_settings
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config

PEPPER = "test-pepper-not-a-secret"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A small simulated program as the CLI's data directory."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, ip_pepper=PEPPER)
    simulate(world_config(settings, customers=2_000, days=300, seed=6), data, settings)
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(data))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setenv("CASHBACK_CUSTOMERS__MIN_HISTORY_DAYS", "30")
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_marketers_get_every_customer_with_segment_lifecycle_churn_and_clv(
    data_dir: Path, tmp_path: Path
) -> None:
    # given champion segment and churn models (and no value model: CLV falls back)
    _cli("train", "segments")
    _cli("models", "promote", "segments")
    _cli("train", "churn")
    _cli("models", "promote", "churn")

    # when exported as csv
    out = tmp_path / "export" / "customers.csv"
    said = _cli("segments", "export", "--out", str(out), "--format", "csv")

    # then every customer is there once, with a segment and a lifecycle stage
    frame = pl.read_csv(out)
    customers = pl.read_parquet(data_dir / "customers.parquet")
    assert frame.columns == ["customer_id", "segment", "lifecycle", "churn_probability", "clv"]
    assert sorted(frame["customer_id"].to_list()) == sorted(customers["customer_id"].to_list())
    assert frame["segment"].null_count() == 0
    assert frame["lifecycle"].null_count() == 0
    # and churn probabilities and CLVs are in range where they apply
    scored = frame.drop_nulls("churn_probability")
    assert scored.height > frame.height // 2
    assert scored["churn_probability"].is_between(0, 1).all()
    assert frame.drop_nulls("clv")["clv"].min() >= 0  # type: ignore[operator]
    assert f"{frame.height:,} customers" in said
    assert "clv is BG/NBD x Gamma-Gamma" in said


def test_export_before_segments_names_the_command_to_run(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["segments", "export", "--out", str(tmp_path / "x.csv")])
    assert "cashback train segments" in str(result.exception)
    assert "cashback models promote segments" in str(result.exception)
