"""A user's own labelled claims, end to end: import by mapping, train, promote, score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import Settings, get_settings
from models.registry import champion_version, list_models
from pipelines import score_fraud
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config

PEPPER = "test-pepper-not-a-secret"
MAPPING = """
table: claims
columns:
  claim_id: claim
  customer_id: client
  ts: claimed_at
  amount: amount
  cashback_amount: cashback
  payout_method: paid_to
  device_id: device
  ip_hash: ip_hash
  receipt_hash: receipt
constants:
  channel: online
label:
  column: is_fraud
  fraud_values: ["yes"]
  legit_values: ["no"]
  source: audit
  decided_ts: checked_at
"""


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plain claims CSV with a fraud column checked on a random 30 % of the claims."""
    root = tmp_path_factory.mktemp("own-claims")
    settings = Settings(data_dir=root, ip_pepper=PEPPER)
    world = root / "world"
    simulate(world_config(settings, customers=3_000, days=240, seed=3), world, settings)
    claims = pl.read_parquet(world / "claims.parquet").join(
        pl.read_parquet(world / "truth" / "claims.parquet"), on="claim_id"
    )
    checked = np.random.default_rng(3).random(claims.height) < 0.3
    csv = claims.select(
        pl.col("claim_id").alias("claim"),
        pl.col("customer_id").alias("client"),
        pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("claimed_at"),
        "amount",
        pl.col("cashback_amount").alias("cashback"),
        pl.col("payout_method").alias("paid_to"),
        pl.col("device_id").alias("device"),
        "ip_hash",
        pl.col("receipt_hash").alias("receipt"),
        pl.when(pl.Series(checked))
        .then(pl.when(pl.col("is_fraud")).then(pl.lit("yes")).otherwise(pl.lit("no")))
        .alias("is_fraud"),
        (pl.col("ts") + timedelta(days=20)).dt.strftime("%Y-%m-%d %H:%M:%S").alias("checked_at"),
    )
    path = root / "claims.csv"
    csv.write_csv(path)
    mapping = root / "claims.yaml"
    mapping.write_text(MAPPING)
    return path, mapping


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI's data directory (settings read from the environment)."""
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setenv("CASHBACK_FRAUD__MATURITY_DAYS", "30")
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_user_imports_labelled_claims_trains_promotes_and_scores(
    user_files: tuple[Path, Path], data_dir: Path
) -> None:
    # given a labelled claims CSV and its mapping, imported as a user would
    csv, mapping = user_files
    _cli("data", "import", "mapped", str(csv), "--out", str(data_dir), "--mapping", str(mapping))

    # when the fraud model is trained, promoted, and scores the last days of claims
    trained = _cli("train", "fraud")
    promoted = _cli("models", "promote", "fraud")
    last_day = pl.read_parquet(data_dir / "claims.parquet")["ts"].max().date()  # type: ignore[union-attr]
    since = last_day - timedelta(days=4)
    scored = _cli("fraud", "score", "--since", since.isoformat())

    # then the model is registered, is the champion, and every claim of those days has a score
    assert "registered cashback-fraud version 1 as challenger" in trained
    assert "labelled_pr_auc" in trained
    assert "v1 is now the champion" in promoted
    settings = get_settings()
    assert champion_version(settings, "fraud") == 1
    assert [row.version for row in list_models(settings) if row.short == "fraud"] == [1]
    scores = pl.read_parquet(data_dir / "scores" / "fraud")
    claims = pl.read_parquet(data_dir / "claims.parquet").filter(pl.col("ts").dt.date() >= since)
    assert sorted(scores["claim_id"].to_list()) == sorted(claims["claim_id"].to_list())
    assert scores["risk_score"].is_between(0, 100).all()
    assert set(scores["decision"].unique().to_list()) <= {"allow", "review", "block"}
    assert "scored" in scored


def test_scoring_resumes_after_an_interruption_without_duplicates(
    user_files: tuple[Path, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a champion model on the imported claims
    csv, mapping = user_files
    _cli("data", "import", "mapped", str(csv), "--out", str(data_dir), "--mapping", str(mapping))
    _cli("train", "fraud")
    _cli("models", "promote", "fraud")
    settings = get_settings()
    last_day: date = pl.read_parquet(data_dir / "claims.parquet")["ts"].max().date()  # type: ignore[union-attr]
    since = last_day - timedelta(days=9)

    # when a scoring run dies after writing three days
    real_write = score_fraud.write_parquet_atomic
    written: list[Path] = []

    def dying_write(frame: pl.DataFrame, path: Path) -> Path:
        if len(written) == 3:
            msg = "killed"
            raise KeyboardInterrupt(msg)
        written.append(path)
        return real_write(frame, path)

    monkeypatch.setattr(score_fraud, "write_parquet_atomic", dying_write)
    with pytest.raises(KeyboardInterrupt):
        score_fraud.run(settings, since)
    first_files = {p: p.stat().st_mtime_ns for p in written}
    monkeypatch.setattr(score_fraud, "write_parquet_atomic", real_write)

    # and runs again
    again = score_fraud.run(settings, since)

    # then the three days done are skipped, the rest is scored, and no claim appears twice
    assert len(again.skipped) == 3
    assert len(again.written) == 10 - 3
    assert all(p.stat().st_mtime_ns == t for p, t in first_files.items())
    scores = pl.read_parquet(data_dir / "scores" / "fraud")
    assert scores["claim_id"].is_unique().all()
    claims = pl.read_parquet(data_dir / "claims.parquet").filter(pl.col("ts").dt.date() >= since)
    assert scores.height == claims.height
