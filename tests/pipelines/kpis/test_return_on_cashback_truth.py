"""The return on cashback estimated from randomized exposures, against the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cashback.settings import Settings
from pipelines.kpis.activity import Grouping
from pipelines.kpis.incremental import Bootstrap, exposure_rewards, return_on_cashback
from pipelines.kpis.inputs import KpiInputs, kpi_window
from pipelines.simulation.truth import (
    expected_window_money,
    exposure_windows,
    fraud_order_exposures,
    load_truth,
)

PEPPER = "test-pepper-not-a-secret"


@pytest.mark.xdist_group("simulated_worlds")
def test_the_return_on_cashback_interval_covers_its_truth(default_world: Path) -> None:
    # given the default world's randomized exposures with their realised margin and cashback,
    # kept to those whose truth is exact (honest customers, no order made by fraud)
    settings = Settings(data_dir=default_world, ip_pepper=PEPPER)
    inputs = KpiInputs.from_directory(default_world)
    window = kpi_window("month", inputs.first, inputs.last, None, None)
    plan, why_not = exposure_rewards(inputs, window, Grouping(None), settings.features, inputs.last)
    assert plan is not None, why_not
    truth = load_truth(default_world)
    honest = truth.customers.filter(pl.col("role") == "legit")["customer_id"].implode()
    fraud = fraud_order_exposures(default_world, truth).implode()
    rewards = plan.collect().filter(
        pl.col("customer_id").is_in(honest), ~pl.col("exposure_id").is_in(fraud)
    )

    # when the return on cashback is estimated from them
    found, notes = return_on_cashback(rewards, Bootstrap(replicates=200, seed=3))

    # then it is the truth's (true margin at the logged rates minus at 0 %, per unit of true
    # cashback paid at the logged rates) within its 95 % interval
    exposures = (read := pl.read_parquet(default_world / "exposures.parquet")).join(
        rewards.select("exposure_id"), on="exposure_id", how="semi"
    )
    assert read.height > exposures.height > 10_000
    windows = exposure_windows(default_world, truth, exposures)
    logged = expected_window_money(windows, truth.config, exposures["rate"].to_numpy())
    zero = expected_window_money(windows, truth.config, np.zeros(exposures.height))
    true_return = (logged.margin.mean() - zero.margin.mean()) / logged.cashback.mean()
    row = found.row(0, named=True)
    print(
        f"\nreturn on cashback: {row['return_on_cashback']:.3f} "
        f"[{row['low']:.3f}, {row['high']:.3f}], truth {true_return:.3f}, "
        f"{row['exposures']:,} exposures ({row['exposures_at_zero']:,} at 0 %)"
    )
    assert notes == []
    assert row["low"] <= true_return <= row["high"]
    # and the interval is narrow enough to tell a program that pays for itself (above 1)
    assert row["high"] - row["low"] < 0.5 * true_return
