"""Any purchase log imported through a mapping: train churn, register, promote, by the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import Settings, get_settings
from models.registry import champion_version
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config

PEPPER = "test-pepper-not-a-secret"
MAPPING = """
table: transactions
columns:
  txn_id: order_id
  customer_id: client
  ts: date
  amount: total
timestamps:
  ts: {format: "%d/%m/%Y %H:%M", timezone: Europe/Paris}
constants:
  channel: online
"""


@pytest.fixture(scope="module")
def purchase_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plain order log (id, client, local time, total): purchases only, no returns."""
    root = tmp_path_factory.mktemp("orders")
    settings = Settings(data_dir=root, ip_pepper=PEPPER)
    simulate(world_config(settings, customers=3_000, days=300, seed=4), root / "w", settings)
    orders = (
        pl.read_parquet(root / "w" / "transactions.parquet")
        .filter(pl.col("amount") > 0)
        .select(
            pl.col("txn_id").alias("order_id"),
            pl.col("customer_id").alias("client"),
            pl.col("ts")
            .dt.convert_time_zone("Europe/Paris")
            .dt.strftime("%d/%m/%Y %H:%M")
            .alias("date"),
            pl.col("amount").alias("total"),
        )
    )
    path = root / "orders.csv"
    orders.write_csv(path)
    mapping = root / "orders.yaml"
    mapping.write_text(MAPPING)
    return path, mapping


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI's data directory."""
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setenv("CASHBACK_CUSTOMERS__MIN_HISTORY_DAYS", "30")
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_churn_trains_on_a_mapped_purchase_log_and_is_promoted(
    purchase_log: tuple[Path, Path], data_dir: Path
) -> None:
    # given a plain order log imported through a mapping file
    path, mapping = purchase_log
    _cli("data", "import", "mapped", str(path), "--out", str(data_dir), "--mapping", str(mapping))

    # when the churn model is trained and promoted
    trained = _cli("train", "churn")
    promoted = _cli("models", "promote", "churn")

    # then it reports both models on the validation snapshot, and is the champion
    assert "registered cashback-churn version 1 as challenger" in trained
    assert "BG/NBD" in trained
    assert "roc_auc" in trained
    assert "v1 is now the champion" in promoted
    assert champion_version(get_settings(), "churn") == 1


def test_a_snapshot_with_no_room_after_it_is_a_clear_error(
    purchase_log: tuple[Path, Path], data_dir: Path
) -> None:
    # given the imported log
    path, mapping = purchase_log
    _cli("data", "import", "mapped", str(path), "--out", str(data_dir), "--mapping", str(mapping))

    # when asked for a validation snapshot whose horizon runs past the data
    last = pl.read_parquet(data_dir / "transactions.parquet")["ts"].max()
    late = (last.date()).isoformat()  # type: ignore[union-attr]
    result = CliRunner().invoke(app, ["train", "churn", "--snapshot", late])

    # then a clear error (main() prints it as one line and exits 1)
    assert isinstance(result.exception, CashbackError)
    assert "runs past the end of the data" in str(result.exception)
