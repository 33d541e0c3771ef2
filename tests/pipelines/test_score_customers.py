"""`cashback customers score`: the champions' segment, churn and CLV, into the feature store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.settings import Settings, get_settings
from features.online import OnlineReader
from features.store import feature_store
from models.customers.churn import load_churn
from models.registry import champion_artifacts
from models.segments.model import SegmentModel
from pipelines.score_customers import score
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config

PEPPER = "test-pepper-not-a-secret"
ENV = {"CASHBACK_IP_PEPPER": PEPPER, "CASHBACK_CUSTOMERS__MIN_HISTORY_DAYS": "30"}


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small simulated program with its feature tables built and applied to Feast."""
    data = tmp_path_factory.mktemp("program") / "data"
    settings = Settings(data_dir=data, ip_pepper=PEPPER)
    simulate(world_config(settings, customers=2_000, days=300, seed=6), data, settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASHBACK_DATA_DIR", str(data))
        for key, value in ENV.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        _cli("features", "build")
        yield data
    get_settings.cache_clear()


def test_without_champions_scores_say_what_is_missing_and_clv_falls_back(
    program: Path,
) -> None:
    # given no promoted model (a fresh MLflow store)
    settings = get_settings()
    assert settings.data_dir == program

    # when the customers are scored
    done = score(settings)

    # then every customer signed up by the close is there, with the lifecycle stage
    customers = pl.read_parquet(program / "customers.parquet")
    signed = customers.filter(pl.col("signup_ts") < done.close)
    assert sorted(done.scores["customer_id"].to_list()) == sorted(signed["customer_id"])
    assert done.scores["lifecycle"].null_count() == 0
    # and segment and churn are null, each with a note naming what to do
    assert done.scores["segment"].null_count() == done.scores.height
    assert done.scores["churn_probability"].null_count() == done.scores.height
    assert any("train and promote segments" in n for n in done.notes)
    assert any("train and promote churn" in n for n in done.notes)
    # and CLV comes from BG/NBD x Gamma-Gamma for exactly the customers who bought before
    buyers = (
        pl.read_parquet(program / "transactions.parquet")
        .filter(pl.col("amount") > 0, pl.col("ts") < done.close)["customer_id"]
        .unique()
    )
    has_clv = done.scores.filter(pl.col("clv").is_not_null())["customer_id"]
    assert sorted(has_clv.to_list()) == sorted(buyers.to_list())
    assert any("clv is BG/NBD x Gamma-Gamma" in n for n in done.notes)


def test_champions_scores_reach_the_online_store(program: Path) -> None:
    # given champion segment, churn and value models
    for model in ("segments", "churn", "clv"):
        _cli("train", model)
        _cli("models", "promote", model)
    settings = get_settings()

    # when the customers are scored and materialized through the CLI
    said = _cli("customers", "score")

    # then the batch table holds the view's columns as of the close
    table = pl.read_parquet(settings.feature_dir / "tables" / "customer_scores.parquet")
    assert table.columns == [
        "customer_id",
        "segment",
        "churn_probability",
        "clv",
        "next_purchase_days",
        "event_timestamp",
    ]
    assert "customer scores written" in said
    # and every customer has the champion's segment
    close = table["event_timestamp"][0]
    segments = SegmentModel.load(champion_artifacts(settings, "segments"))
    assert table["segment"].null_count() == 0
    assert set(table["segment"].unique()) <= {*segments.segments, "inactive"}
    # and churn is scored exactly for customers who bought within the inactive limit
    limit = timedelta(days=settings.customers.inactive_limit_days)
    recent = (
        pl.read_parquet(program / "transactions.parquet")
        .filter(pl.col("amount") > 0, pl.col("ts") < close, pl.col("ts") >= close - limit)[
            "customer_id"
        ]
        .unique()
    )
    scored = table.filter(pl.col("churn_probability").is_not_null())
    assert sorted(scored["customer_id"].to_list()) == sorted(recent.to_list())
    assert scored["churn_probability"].is_between(0, 1).all()
    churn = load_churn(champion_artifacts(settings, "churn"))
    assert len(np.unique(scored["churn_probability"].to_numpy())) > 5, churn.params
    # and CLVs are spends, never negative
    assert table.drop_nulls("clv")["clv"].min() >= 0  # type: ignore[operator]

    # and serving reads segment, lifecycle, churn and CLV through the customers_v1 service
    sample = table.sample(50, seed=1).sort("customer_id")
    reader = OnlineReader(feature_store(settings), "customers_v1")
    online = reader.read(sample["customer_id"].to_list())
    assert online.features["segment"] == sample["segment"].to_list()
    assert online.features["churn_probability"] == pytest.approx(
        sample["churn_probability"].to_list(), nan_ok=True
    )
    assert online.features["clv"] == pytest.approx(sample["clv"].to_list(), nan_ok=True)
    assert all(stage is not None for stage in online.features["lifecycle"])
