"""`cashback rates simulate-budget`: the budget frontier re-solved on a run's saved values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import RateSettings, Settings
from models.rates.policy import allowed_rates, choose_rates
from models.rates.response import RateValues
from pipelines.rates_frontier import (
    RATE_VALUES_FILE,
    frontier_table,
    load_values,
    parse_budgets,
    rates_directory,
    values_frame,
)

GRID = (0.0, 0.01, 0.02, 0.05)
DEFAULT = 1  # the default rate, 1 %
RUN_BUDGET_SHARE = 1.2


def _values(n: int, seed: int) -> RateValues:
    """Concave value in rate against the default rate, rising cost; exact in float32."""
    rng = np.random.default_rng(seed)
    grid = np.asarray(GRID)
    gain = rng.gamma(2.0, 1.0, (n, 1))
    spend = rng.gamma(2.0, 20.0, (n, 1))
    net = gain * (1 - np.exp(-grid / 0.02)) * spend * 0.3 - grid * spend
    cost = (grid * spend * (1 + gain * (1 - np.exp(-grid / 0.02)))).astype(np.float32)
    value = (net - net[:, [DEFAULT]]).astype(np.float32)
    value64, cost64 = value.astype(np.float64), cost.astype(np.float64)
    return RateValues(value64, cost64, value64, value64, cost64)


def _save_run(settings: Settings, *, min_rate: float = 0.0, n: int = 600) -> float:
    """A run's saved values as `cashback train rates` writes them; returns its budget."""
    config = RateSettings(grid=GRID, min_rate=min_rate, segment_caps={"b": 0.02})
    values = _values(n, seed=3)
    customers = pl.DataFrame(
        {"customer_id": [f"C{i:05d}" for i in range(n)], "segment": ["a", "b", "c"] * (n // 3)}
    )
    allowed = allowed_rates(
        np.asarray(GRID),
        customers["segment"].to_numpy().astype(str),
        min_rate=config.min_rate,
        max_rate=config.max_rate,
        segment_caps=config.segment_caps,
    )
    budget = RUN_BUDGET_SHARE * float(values.cost[:, DEFAULT].sum())
    choice = choose_rates(values.value, values.cost, allowed, budget)
    frame = values_frame(customers, values, choice.choice, DEFAULT, config)
    frame.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(
        rates_directory(settings) / RATE_VALUES_FILE, mkdir=True
    )
    return budget


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, ["rates", "simulate-budget", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def _cli_error(*args: str) -> str:
    result = CliRunner().invoke(app, ["rates", "simulate-budget", *args])
    assert isinstance(result.exception, CashbackError), repr(result.exception)
    return str(result.exception)


def test_saved_values_come_back_as_the_run_had_them(settings: Settings) -> None:
    # given a run's values saved (rows shuffled on disk)
    _save_run(settings)
    saved = load_values(rates_directory(settings))
    values = _values(600, seed=3)

    # then the matrices, the allowed rates and the reference cost are the run's
    assert saved.grid.tolist() == list(GRID)
    assert saved.customer_ids.to_list() == [f"C{i:05d}" for i in range(600)]
    np.testing.assert_array_equal(saved.value, values.value)
    np.testing.assert_array_equal(saved.cost, values.cost)
    assert saved.default_index == DEFAULT
    assert saved.default_card_cost == pytest.approx(values.cost[:, DEFAULT].sum())
    assert not saved.allowed[1::3, 3].any()  # segment b is capped at 2 %
    assert saved.allowed[0::3].all()


def test_the_frontier_rises_with_the_budget_and_keeps_within_each(settings: Settings) -> None:
    # given a run's saved values
    _save_run(settings)
    out = settings.data_dir.parent / "frontier.parquet"

    # when the frontier is solved at ten steps up to what the unconstrained policy spends
    said = _cli("--steps", "10", "--out", str(out))

    # then it is written, its margin never falls as the budget grows, and no point spends
    # more than its budget
    table = pl.read_parquet(out)
    assert "frontier written to" in said
    assert table["budget"].is_sorted()
    assert table.height == 10 + 1  # and the current spend
    assert table["expected_incremental_margin"].is_sorted()
    assert (table["expected_cashback"] <= table["budget"] + 1e-6).all()
    # and the last step is the unconstrained policy: the best allowed rate of each customer
    saved = load_values(rates_directory(settings))
    best = np.where(saved.allowed, saved.value, -np.inf).max(axis=1).sum()
    assert table["expected_incremental_margin"][-1] == pytest.approx(best)
    assert table["multiplier"][-1] == 0.0


def test_the_point_at_the_runs_budget_is_the_runs_choice_and_is_marked(settings: Settings) -> None:
    # given a run with a budget of 1.2 times the default card's cost
    budget = _save_run(settings)
    saved = load_values(rates_directory(settings))

    # when the frontier is solved at the default multiples and at the run's budget
    table = frontier_table(saved, [budget])
    chosen = choose_rates(saved.value, saved.cost, saved.allowed, budget)

    # then its point is choose_rates' choice at that budget, which the run gave
    row = table.row(0, named=True)
    assert row["expected_incremental_margin"] == chosen.value
    assert row["expected_cashback"] == chosen.cost
    assert row["budget_multiple"] == pytest.approx(RUN_BUDGET_SHARE)
    assert chosen.value == saved.total(saved.value)
    # and the CLI's frontier marks the run's spend as the current point
    out = settings.data_dir.parent / "frontier.csv"
    said = _cli("--out", str(out))
    frame = pl.read_csv(out)
    asked = frame.filter(~pl.col("current"))["budget_multiple"]
    assert asked.round(9).to_list() == list(RateSettings().frontier_budgets)
    current = frame.filter("current")
    assert current.height == 1
    assert current["expected_cashback"][0] == pytest.approx(saved.total(saved.cost))
    assert current["expected_incremental_margin"][0] == pytest.approx(chosen.value)
    assert "the last run's rates: expected incremental margin" in said


def test_budgets_in_currency_and_the_share_of_customers_above_the_default(
    settings: Settings,
) -> None:
    _save_run(settings)
    out = settings.data_dir.parent / "frontier.csv"
    _cli("--budgets", "100,400", "--absolute", "--out", str(out))
    table = pl.read_csv(out).filter(~pl.col("current"))
    assert table["budget"].to_list() == [100.0, 400.0]
    saved = load_values(rates_directory(settings))
    point = choose_rates(saved.value, saved.cost, saved.allowed, 400.0)
    rates = saved.grid[point.choice]
    assert table["average_rate"][1] == pytest.approx(rates.mean())
    assert table["share_above_default"][1] == pytest.approx((rates > 0.01).mean())


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ("0.5,abc", "budget 'abc' is not a number"),
        ("1,,2", "budget '' is not a number"),
        ("0,1", "budget 0 is not a positive amount"),
        ("-0.5", "budget -0.5 is not a positive amount"),
        ("inf", "budget inf is not a positive amount"),
    ],
)
def test_unparsable_or_non_positive_budgets_are_refused(budgets: str, message: str) -> None:
    with pytest.raises(CashbackError, match=message):
        parse_budgets(budgets)


def test_bad_budgets_are_clear_errors_on_the_command_line(settings: Settings) -> None:
    # without a run
    assert "run `cashback train rates` first" in _cli_error()
    # with a run whose lowest allowed rate is the default: below 1 x its cost cannot be met
    _save_run(settings, min_rate=0.01)
    said = _cli_error("--budgets", "0.5,1,2")
    assert "cannot be met: the cheapest allowed rates already cost" in said
    assert "as multiples of the default card's cost" in said
    assert "the cheapest allowed rates cost 1" in said
    assert "is not a number" in _cli_error("--budgets", "1,x")
    assert "is not a positive amount" in _cli_error("--budgets=-2")
    assert "not both" in _cli_error("--budgets", "1", "--steps", "4")
    assert "give --budgets" in _cli_error("--absolute")
    assert ".csv or .parquet" in _cli_error("--out", str(settings.data_dir / "frontier.txt"))


def test_a_run_from_before_values_were_saved_asks_for_a_new_run(settings: Settings) -> None:
    directory = rates_directory(settings)
    directory.mkdir(parents=True)
    pl.DataFrame({"customer_id": ["C1"]}).write_parquet(directory / "customer_rates.parquet")
    with pytest.raises(CashbackError, match="run `cashback train rates` again"):
        load_values(directory)


def test_an_incomplete_values_file_is_refused(settings: Settings) -> None:
    _save_run(settings)
    path = rates_directory(settings) / RATE_VALUES_FILE
    pl.read_parquet(path).slice(1).write_parquet(path)
    with pytest.raises(CashbackError, match="not every customer has every rate"):
        load_values(Path(path.parent))
