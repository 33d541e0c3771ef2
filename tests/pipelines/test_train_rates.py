"""`cashback train rates`: response learnt from randomized exposures, a budgeted policy, OPE."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import RateSettings, Settings, get_settings
from models.registry import champion_version, promote
from pipelines.rates_frontier import frontier_table, load_values
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config
from pipelines.train_rates import run

PEPPER = "test-pepper-not-a-secret"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated program with exploration (randomized exposures)."""
    data = tmp_path_factory.mktemp("rates") / "data"
    settings = Settings(data_dir=data, ip_pepper=PEPPER)
    simulate(world_config(settings, customers=3_000, days=240, seed=5), data, settings)
    return data


def _settings(data: Path, **rates: object) -> Settings:
    small = {"n_estimators": 80, "bootstrap_replicates": 50} | rates
    return Settings(data_dir=data, ip_pepper=PEPPER, rates=RateSettings(**small))  # type: ignore[arg-type]


def test_a_budget_is_met_and_every_customer_gets_a_rate_with_a_reason(program: Path) -> None:
    # given the default card's cost as the reference, and a budget of 1.5 times it
    result = run(_settings(program, budget_share=1.5, segment_caps={"new": 0.02}))

    # then the policy spends within the budget, on the grid, within caps
    choice = result.choice
    assert choice.budget is not None
    assert choice.cost <= choice.budget + 1e-6
    assert choice.budget == pytest.approx(1.5 * result.metrics["default_card_cost"])
    rates = result.customers["rate"]
    assert set(rates.unique().to_list()) <= set(RateSettings().grid)
    segments = result.customers["segment"]
    assert rates.filter(segments == "new").max() <= 0.02  # type: ignore[operator]
    # and each customer's reason states the rate and the expected figures
    first = result.customers.row(0, named=True)
    assert first["reason"].startswith(f"{first['rate'] * 100:.1f}% rather than the default 1.0%")
    # and the rate card has a rate per segment and category, the fairness table per attribute
    assert result.card.height > 0
    assert set(result.card["rate"].unique().to_list()) <= set(RateSettings().grid)
    assert set(result.fairness["attribute"].unique().to_list()) == {"region", "age_band"}
    # and the outputs are on disk
    written = pl.read_parquet(result.paths["customer_rates"])
    assert written.height == result.customers.height
    # and so is each customer's value and cost of every rate: solved again without refitting,
    # the frontier at the run's budget is the run's choice (values saved in float32)
    saved = load_values(result.paths["rate_values"].parent)
    by_id = result.customers.sort("customer_id")
    assert saved.grid[saved.chosen].tolist() == by_id["rate"].to_list()
    assert saved.default_card_cost == pytest.approx(result.metrics["default_card_cost"], rel=1e-5)
    point = frontier_table(saved, [choice.budget]).row(0, named=True)
    assert point["expected_incremental_margin"] == pytest.approx(choice.value, rel=1e-3)
    assert point["expected_cashback"] <= choice.budget
    assert point["budget_multiple"] == pytest.approx(1.5, rel=1e-5)


def test_off_policy_values_are_reported_for_ours_logging_and_uniform_rates(program: Path) -> None:
    result = run(_settings(program))
    ope = result.ope
    policies = set(ope["policy"].unique().to_list())
    assert {"personalized", "logging", "uniform 0%", "uniform 8%"} <= policies
    dr = ope.filter(pl.col("estimator") == "dr")
    assert (dr["low"] <= dr["value"]).all()
    assert (dr["value"] <= dr["high"]).all()
    # the logging policy's value is the held-out exposures' mean net margin
    logging = ope.filter(pl.col("policy") == "logging")["value"][0]
    assert logging == pytest.approx(result.data.test["net_margin"].mean())
    # and the Qini table has each rate level against 0 % for both learners
    assert set(result.qini["learner"].unique().to_list()) == {"s_learner", "t_learner"}
    assert result.qini.height == 2 * (len(RateSettings().grid) - 1)
    assert np.isfinite(result.qini["qini"].to_numpy()).all()


def test_a_budget_below_the_cheapest_rates_is_refused(program: Path) -> None:
    with pytest.raises(CashbackError, match="cannot be met"):
        run(_settings(program, budget_share=1e-6, min_rate=0.01))


@pytest.fixture
def cli_env(program: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(program))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.setenv("CASHBACK_RATES__N_ESTIMATORS", "60")
    monkeypatch.setenv("CASHBACK_RATES__BOOTSTRAP_REPLICATES", "30")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("cli_env")
def test_the_cli_prints_the_held_out_values_and_where_the_rates_are() -> None:
    result = CliRunner().invoke(app, ["train", "rates", "--budget-share", "1.2"])
    assert result.exit_code == 0, result.output
    assert "personalized" in result.output
    assert "customer_rates:" in result.output


def test_the_policy_is_registered_and_promoted_on_its_off_policy_value(
    program: Path, tmp_path: Path
) -> None:
    # given a copy of the program (its own MLflow store) and a run registered as challenger
    data = tmp_path / "data"
    shutil.copytree(program, data)
    settings = _settings(data)
    result = run(settings, register=True)
    assert result.version is not None

    # when it is promoted (no champion yet)
    promoted = promote(settings, "rates")

    # then the gate scored the logged pyfunc policy on the held-out exposures exactly as the
    # run measured it, and that is the personalized policy's DR value in the OPE table
    assert promoted.promoted
    assert champion_version(settings, "rates") == int(result.version)
    for metric in ("dr_value", "snips_value"):
        assert promoted.challenger_metrics[metric] == pytest.approx(result.metrics[metric])
    dr = result.ope.filter(pl.col("policy") == "personalized", pl.col("estimator") == "dr")
    assert result.metrics["dr_value"] == pytest.approx(dr["value"].item())
