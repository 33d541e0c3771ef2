"""`cashback rates simulate-budget`: the budget frontier, from a rates run's saved values.

`cashback train rates` saves what the policy needs to be solved again: per customer and grid
rate, the rate's value against the default rate and its cost (the expected cashback paid),
whether the rate is allowed (min and max rate, the segment's cap), which rate the run chose
and which rate is the default (`rate_values.parquet`, one row per customer and rate, in
float32). This module reads them back and re-solves the budgeted policy at each budget
(`models.rates.policy.frontier`), without refitting anything: expected incremental margin,
expected cashback, average rate and share of customers above the default rate, against the
budget. Budgets are multiples of the default card's cost (what the default rate costs for
the same customers: the reference of `rates.budget_share`) or amounts in currency. The
point at the last run's spend is added and marked as current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import RateSettings, Settings
from cashback.tables import ExportFormat, export_format, write_export
from models.rates.policy import BoolMatrix, FloatMatrix, IntArray, allowed_rates, frontier
from models.rates.response import RateValues

RATES_DIRECTORY = "rates"
RATE_VALUES_FILE = "rate_values.parquet"
RATE_DECIMALS = 6  # rates are saved in float32: 0.01 comes back as 0.0099999998


@dataclass(frozen=True)
class SavedValues:
    """A rates run's values, one row per customer (sorted by id) and one column per rate.

    Attributes:
        customer_ids: the customers, in the rows' order.
        grid: the rates, ascending.
        value: value of each rate against the default rate.
        cost: expected cashback paid at each rate.
        allowed: whether the rate may be given to the customer.
        chosen: index of the rate the run gave each customer.
        default_index: index of the default rate.
    """

    customer_ids: pl.Series
    grid: npt.NDArray[np.float64]
    value: FloatMatrix
    cost: FloatMatrix
    allowed: BoolMatrix
    chosen: IntArray
    default_index: int

    @property
    def default_card_cost(self) -> float:
        """What the default rate costs for these customers (the budget's reference)."""
        return float(self.cost[:, self.default_index].sum())

    @property
    def cheapest_cost(self) -> float:
        """What the cheapest allowed rates cost: no budget below it can be met."""
        return float(np.where(self.allowed, self.cost, np.inf).min(axis=1).sum())

    @property
    def unconstrained_cost(self) -> float:
        """What each customer's best allowed rate costs: more budget buys nothing."""
        best = np.argmax(np.where(self.allowed, self.value, -np.inf), axis=1)
        return float(np.take_along_axis(self.cost, best[:, None], axis=1).sum())

    def total(self, matrix: FloatMatrix) -> float:
        """The sum of `matrix` over the customers at the rates the run chose."""
        return float(np.take_along_axis(matrix, self.chosen[:, None], axis=1).sum())


@dataclass(frozen=True)
class Frontier:
    """The frontier and the last run's own figures.

    Attributes:
        table: one row per budget, ascending (see `frontier_table`).
        default_card_cost: the reference of budget multiples.
        current_value: expected incremental margin of the last run's rates.
        current_cost: their expected cashback.
        customers: customers priced.
        path: where the table was written, if anywhere.
    """

    table: pl.DataFrame
    default_card_cost: float
    current_value: float
    current_cost: float
    customers: int
    path: Path | None = None


def rates_directory(settings: Settings) -> Path:
    """Where `cashback train rates` writes its outputs."""
    return settings.data_dir / RATES_DIRECTORY


def values_frame(
    customers: pl.DataFrame,
    values: RateValues,
    choice: IntArray,
    default_index: int,
    config: RateSettings,
) -> pl.DataFrame:
    """The saved values: one row per customer and grid rate (customer-major, float32).

    Args:
        customers: customer_id and segment, one row per row of `values`.
        values: each customer's value and cost of every grid rate.
        choice: the index of the rate each customer was given.
        default_index: the index of the default rate.
        config: the grid, min and max rate and segment caps (what is allowed).
    """
    grid = np.asarray(config.grid, dtype=np.float64)
    allowed = allowed_rates(
        grid,
        customers["segment"].to_numpy().astype(str),
        min_rate=config.min_rate,
        max_rate=config.max_rate,
        segment_caps=config.segment_caps,
    )
    index = np.arange(grid.size)
    rates = pl.DataFrame({"rate": grid.astype(np.float32)})
    return (
        customers.select("customer_id", "segment")
        .join(rates, how="cross", maintain_order="left_right")
        .with_columns(
            pl.Series("value", values.value.ravel().astype(np.float32)),
            pl.Series("cost", values.cost.ravel().astype(np.float32)),
            pl.Series("allowed", allowed.ravel()),
            pl.Series("chosen", (index[None, :] == choice[:, None]).ravel()),
            pl.Series("default", np.tile(index == default_index, choice.size)),
        )
    )


def load_values(directory: Path) -> SavedValues:
    """Read a rates run's saved values back as matrices.

    Raises:
        CashbackError: when the rates were not trained, or trained before values were saved.
    """
    path = directory / RATE_VALUES_FILE
    if not path.exists():
        if (directory / "customer_rates.parquet").exists():
            msg = (
                f"no rate values in {directory}: its rates were trained before rate values "
                "were saved; run `cashback train rates` again"
            )
        else:
            msg = f"no rates trained in {directory}: run `cashback train rates` first"
        raise CashbackError(msg)
    frame = (
        pl.scan_parquet(path)
        .select(
            "customer_id",
            pl.col("rate").cast(pl.Float64).round(RATE_DECIMALS),
            pl.col("value", "cost").cast(pl.Float64),
            "allowed",
            "chosen",
            "default",
        )
        .sort("customer_id", "rate")
        .collect()
    )
    grid = frame["rate"].unique().sort().to_numpy()
    customers = frame["customer_id"].n_unique()
    if frame.height != customers * grid.size:
        msg = f"{path}: not every customer has every rate of {grid.tolist()}; train rates again"
        raise CashbackError(msg)
    shape = (customers, grid.size)

    def matrix(column: str) -> npt.NDArray[np.generic]:
        return frame[column].to_numpy().reshape(shape)

    return SavedValues(
        customer_ids=frame["customer_id"].gather_every(grid.size),
        grid=grid,
        value=matrix("value").astype(np.float64),
        cost=matrix("cost").astype(np.float64),
        allowed=matrix("allowed").astype(np.bool_),
        chosen=np.argmax(matrix("chosen"), axis=1).astype(np.int64),
        default_index=int(np.argmax(matrix("default")[0])),
    )


def parse_budgets(text: str) -> tuple[float, ...]:
    """Budgets separated by commas, e.g. `0.5,0.75,1,1.5,2`.

    Raises:
        CashbackError: naming the first item that is not a positive number.
    """
    budgets = []
    for item in text.split(","):
        try:
            budgets.append(float(item.strip()))
        except ValueError:
            msg = f"budget {item.strip()!r} is not a number: give numbers separated by commas"
            raise CashbackError(msg) from None
    return positive(budgets)


def positive(budgets: Sequence[float]) -> tuple[float, ...]:
    """The budgets, checked.

    Raises:
        CashbackError: naming the first budget that is not a positive number.
    """
    for budget in budgets:
        if not (np.isfinite(budget) and budget > 0):
            msg = f"budget {budget:g} is not a positive amount"
            raise CashbackError(msg)
    return tuple(budgets)


def step_budgets(saved: SavedValues, steps: int) -> tuple[float, ...]:
    """`steps` budgets evenly spaced above the cheapest rates' cost up to the unconstrained one.

    Raises:
        CashbackError: when fewer than two steps are asked for.
    """
    if steps < 2:
        msg = f"steps must be at least 2; got {steps}"
        raise CashbackError(msg)
    spaced = np.linspace(saved.cheapest_cost, saved.unconstrained_cost, steps + 1)[1:]
    return tuple(float(b) for b in np.unique(spaced[spaced > 0]))


def frontier_table(saved: SavedValues, budgets: Sequence[float]) -> pl.DataFrame:
    """The policy re-solved at each budget (currency), ascending.

    Columns: budget_multiple (of the default card's cost; null when it costs nothing),
    budget, expected_incremental_margin, expected_cashback, average_rate (over customers),
    share_above_default (customers above the default rate) and multiplier (the budget's
    Lagrange multiplier: 0 where the budget does not bind).

    Raises:
        CashbackError: for a budget below what the cheapest allowed rates cost.
    """
    ordered = sorted(set(budgets))
    points = frontier(saved.value, saved.cost, saved.allowed, ordered)
    rates = saved.grid[np.stack([p.choice for p in points])]  # (budgets, customers)
    reference = saved.default_card_cost
    return pl.DataFrame(
        {
            "budget_multiple": [b / reference if reference > 0 else None for b in ordered],
            "budget": ordered,
            "expected_incremental_margin": [p.value for p in points],
            "expected_cashback": [p.cost for p in points],
            "average_rate": rates.mean(axis=1),
            "share_above_default": (rates > saved.grid[saved.default_index]).mean(axis=1),
            "multiplier": [p.multiplier for p in points],
        },
        schema_overrides={"budget_multiple": pl.Float64},
    )


def _amounts(saved: SavedValues, budgets: Sequence[float], absolute: bool) -> list[float]:
    if absolute:
        return list(positive(budgets))
    if saved.default_card_cost <= 0:
        msg = (
            "the default card costs nothing (default rate 0 %), so budgets cannot be multiples "
            "of it: give amounts in currency (--absolute)"
        )
        raise CashbackError(msg)
    return [b * saved.default_card_cost for b in positive(budgets)]


def _solve(saved: SavedValues, amounts: list[float], multiples: bool) -> pl.DataFrame:
    """The frontier at the amounts and at the last run's spend (marked `current`)."""
    current = saved.total(saved.cost)
    extra = [current] if current > 0 else []  # rates that cost nothing: no point to mark
    try:
        table = frontier_table(saved, [*amounts, *extra])
    except CashbackError as error:
        if not multiples:
            raise
        reference = saved.default_card_cost
        msg = (
            f"{error}; as multiples of the default card's cost ({reference:,.2f}), the "
            f"cheapest allowed rates cost {saved.cheapest_cost / reference:.3g}"
        )
        raise CashbackError(msg) from None
    return table.with_columns((pl.col("budget") == current).alias("current"))


def simulate_budget(
    settings: Settings,
    *,
    budgets: Sequence[float] | None = None,
    steps: int | None = None,
    absolute: bool = False,
    out: Path | None = None,
) -> Frontier:
    """The frontier of the last rates run at each budget, with the current spend marked.

    Args:
        settings: the data directory; `rates.frontier_budgets` without budgets and steps.
        budgets: multiples of the default card's cost, or amounts with `absolute`.
        steps: instead of budgets: this many budgets from the cheapest allowed rates' cost
            up to what the unconstrained policy spends.
        absolute: budgets are amounts in currency.
        out: where to write the table (.csv or .parquet), if anywhere.

    Raises:
        CashbackError: without a rates run, with both budgets and steps, with a budget that
            is not positive or is below what the cheapest allowed rates cost.
    """
    if budgets is not None and steps is not None:
        msg = "give budgets or a number of steps, not both"
        raise CashbackError(msg)
    file_format: ExportFormat | None = None if out is None else export_format(out)
    saved = load_values(rates_directory(settings))
    if steps is not None:
        table = _solve(saved, list(step_budgets(saved, steps)), multiples=False)
    else:
        chosen = settings.rates.frontier_budgets if budgets is None else budgets
        table = _solve(saved, _amounts(saved, chosen, absolute), multiples=not absolute)
    if out is not None and file_format is not None:
        write_export(table, out, file_format)
    return Frontier(
        table=table,
        default_card_cost=saved.default_card_cost,
        current_value=saved.total(saved.value),
        current_cost=saved.total(saved.cost),
        customers=saved.chosen.size,
        path=out,
    )
