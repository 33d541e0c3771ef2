"""Customer value on the time split: BG/NBD x Gamma-Gamma and LightGBM beside last-period spend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from cashback.errors import CashbackError
from cashback.settings import CustomerModelSettings, Settings
from models.registry import champion_version, promote
from pipelines.simulate import run as simulate
from pipelines.simulate import world_config
from pipelines.train_value import run

PEPPER = "test-pepper-not-a-secret"


@pytest.mark.xdist_group("simulated_worlds")
def test_value_models_beat_last_period_spend_on_the_default_world(default_world: Path) -> None:
    # given the default world split 180 days before its end
    result = run(Settings(ip_pepper=PEPPER, data_dir=default_world), register=False)
    customers = result.customers
    actual = customers["actual"].to_numpy()

    # when each predictor is compared with the actual later spend, here
    def scores(column: str) -> tuple[float, float]:
        predicted = customers[column].fill_null(0.0).to_numpy()
        return float(np.mean(np.abs(actual - predicted))), float(
            spearmanr(actual, predicted).statistic
        )

    found = {c: scores(c) for c in ("last_period", "gamma_gamma_spend", "lightgbm_spend")}
    print(f"\nvalue (MAE, Spearman): {found}; metrics {result.metrics}")

    # then LightGBM beats last-period spend on both, and BG/NBD x Gamma-Gamma on rank
    assert found["lightgbm_spend"][0] < found["last_period"][0]
    assert found["lightgbm_spend"][1] > found["last_period"][1]
    assert found["gamma_gamma_spend"][1] > found["last_period"][1]
    assert found["lightgbm_spend"] == (
        result.metrics["lightgbm_mae"],
        result.metrics["lightgbm_spearman"],
    )


@pytest.mark.xdist_group("simulated_worlds")
def test_a_horizon_longer_than_the_history_is_a_clear_error(default_world: Path) -> None:
    settings = Settings(
        ip_pepper=PEPPER,
        data_dir=default_world,
        customers=CustomerModelSettings(value_horizon_days=300),
    )
    with pytest.raises(CashbackError, match="too little history"):
        run(settings, register=False)


@pytest.fixture
def small_program(tmp_path: Path) -> Path:
    """A small simulated program with its own MLflow store under tmp_path."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, ip_pepper=PEPPER)
    simulate(world_config(settings, customers=2_000, days=300, seed=8), data, settings)
    return data


def test_the_value_model_is_registered_and_promoted_on_held_out_customers(
    small_program: Path,
) -> None:
    # given a value run registered as challenger
    settings = Settings(data_dir=small_program, ip_pepper=PEPPER)
    result = run(settings)
    assert result.version is not None

    # when it is promoted (no champion yet)
    promoted = promote(settings, "clv")

    # then the gate scored the logged pyfunc model on the held-out fold exactly as the run
    # measured the native model there
    assert promoted.promoted
    assert promoted.challenger_metrics["spearman"] == pytest.approx(result.metrics["spearman"])
    assert promoted.challenger_metrics["mae"] == pytest.approx(result.metrics["mae"])
    # and the held-out fold is not the training data: it has 1 in 5 customers
    assert 0.1 < result.metrics["spearman"] <= 1.0
    assert champion_version(settings, "clv") == int(result.version)
