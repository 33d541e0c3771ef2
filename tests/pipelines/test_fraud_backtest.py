"""`cashback fraud backtest` on a tiny simulated world: the job and the command."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cashback import cli
from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import Settings, get_settings
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.fraud.backtest import backtest
from models.fraud.rules import RulesError, load_rules
from pipelines.fraud_backtest import run
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RULES = PROJECT_ROOT / "config" / "fraud_rules.yaml"
PEPPER = "test-pepper-not-a-secret"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 customers over 60 days (about a second to simulate)."""
    root = tmp_path_factory.mktemp("fraud_backtest")
    settings = Settings(data_dir=root, ip_pepper=PEPPER)
    out = root / "world"
    simulate(world_config(settings, customers=600, days=60, seed=5), out, settings)
    return out


@pytest.fixture
def settings(world: Path) -> Settings:
    return Settings(data_dir=world, ip_pepper=PEPPER)


@pytest.fixture(scope="module")
def stricter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example rules with a tighter customer burst."""
    path = tmp_path_factory.mktemp("rules") / "stricter.yaml"
    text = RULES.read_text().replace("max_claims: 3", "max_claims: 1")
    path.write_text(text)
    return path


def test_the_backtest_covers_every_claim_label_and_true_fraud(
    settings: Settings, world: Path
) -> None:
    # given a simulated world with labels and truth
    claims = pl.read_parquet(world / "claims.parquet")
    labels = pl.read_parquet(world / "claim_labels.parquet")
    truth = pl.read_parquet(world / "truth" / "claims.parquet")
    # when the example rules are backtested on all of it
    report = run(settings, RULES)
    # then the report covers every claim, the audited ones and the true frauds
    assert report.claims == claims.height
    audited = labels.filter(pl.col("source") == "audit")
    assert report.audited == audited["claim_id"].n_unique()
    assert report.true_frauds == truth["is_fraud"].sum()
    # and the rules catch frauds far above the base rate
    assert report.flagged.hits > 0
    precision = report.flagged.truth_precision
    assert precision is not None
    assert precision.value > 5 * report.true_frauds / report.claims
    assert report.comparison is None


def test_a_period_is_backtested_on_the_same_frame_the_features_give(
    settings: Settings, world: Path
) -> None:
    # given two weeks of the world, and the same claims scored independently here
    since, until = date(2025, 1, 20), date(2025, 2, 3)
    start, end = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (since, until))
    sources = FeatureSources.from_directory(world)
    claims = sources.claims.filter(pl.col("ts") >= start, pl.col("ts") < end)
    labels = (
        pl.scan_parquet(world / "claim_labels.parquet")
        .sort("label")  # "fraud" sorts before "legit"
        .group_by("claim_id")
        .agg(pl.col("label").first(), pl.col("source").unique().sort().str.join("+"))
        .rename({"source": "label_source"})
    )
    truth = pl.scan_parquet(world / "truth" / "claims.parquet").select("claim_id", "is_fraud")
    scored = (
        training_frame(sources, claims, "fraud_v1", settings.features)
        .join(labels, on="claim_id", how="left", maintain_order="left")
        .join(truth, on="claim_id", how="left", maintain_order="left")
        .collect()
    )
    # when the job backtests that period
    report = run(settings, RULES, since=since, until=until)
    # then it is the backtest of those claims over those 14 days
    assert report.days == 14.0
    assert report.claims == scored.height
    assert report == backtest(load_rules(RULES), scored, period=(start, end))


def test_a_baseline_gives_the_comparison(settings: Settings, stricter: Path) -> None:
    # given the example rules in place and a stricter candidate
    # when the candidate is backtested against them
    report = run(settings, stricter, baseline_rules_path=RULES)
    # then the report carries what the change would have done
    change = report.comparison
    assert change is not None
    assert change.changed == ("customer_burst",)
    assert change.new == replace(report, comparison=None)
    assert change.no_longer_flagged.height == 0
    assert change.newly_flagged.height == report.flagged.hits - change.old.flagged.hits
    assert set(change.newly_flagged["new_rule_hits"].explode()) >= {"customer_burst"}
    assert "rules added: none; removed: none; changed: customer_burst" in report.to_text()


def test_bad_input_is_refused_before_any_feature_work(settings: Settings, tmp_path: Path) -> None:
    # given a rules file with an unknown window, an empty period and a reversed one
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.read_text().replace("window: 7d", "window: 2h"))
    # when the job runs
    # then each is a user error naming the problem
    with pytest.raises(RulesError, match=r"bad\.yaml:\d+: rules\[3\]\.window: unknown window"):
        run(settings, bad)
    with pytest.raises(CashbackError, match=r"no claims in \[2030-01-01, \.\.\.\)"):
        run(settings, RULES, since=date(2030, 1, 1))
    with pytest.raises(CashbackError, match="must be after since"):
        run(settings, RULES, since=date(2025, 2, 1), until=date(2025, 1, 1))


def test_the_command_prints_the_report(
    world: Path, stricter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the world as the data directory
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(world))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setattr(cli, "out_console", Console(width=200))  # the table on one line
    get_settings.cache_clear()
    try:
        # when `cashback fraud backtest` runs with a baseline and a period
        result = CliRunner().invoke(
            app,
            [
                "fraud",
                "backtest",
                "--rules",
                str(stricter),
                "--against",
                str(RULES),
                "--since",
                "2025-01-10",
                "--until",
                "2025-02-10",
            ],
        )
    finally:
        get_settings.cache_clear()
    # then it prints both the backtest and the change
    assert result.exit_code == 0, result.output
    assert "Backtest of" in result.output
    assert "[2025-01-10, 2025-02-10) (31.0 days)" in result.output
    assert "precision (audit sample)" in result.output
    assert "rules change" in result.output
