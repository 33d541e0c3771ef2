"""The budgeted rate policy: Lagrangian choice, greedy fill, caps and bad budgets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cashback.errors import CashbackError
from models.rates.policy import allowed_rates, choose_rates, frontier

GRID = np.array([0.0, 0.01, 0.02, 0.05])


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Concave value in rate, rising cost: the shape a cashback response has."""
    rng = np.random.default_rng(seed)
    gain = rng.gamma(2.0, 1.0, (n, 1))
    spend = rng.gamma(2.0, 20.0, (n, 1))
    value = gain * (1 - np.exp(-GRID / 0.02)) * spend * 0.3 - GRID * spend
    cost = GRID * spend * (1 + gain * (1 - np.exp(-GRID / 0.02)))
    return value, cost


def test_without_a_budget_each_customer_gets_the_best_rate() -> None:
    value, cost = _world(500, 1)
    allowed = np.ones_like(value, dtype=bool)
    chosen = choose_rates(value, cost, allowed, None)
    np.testing.assert_array_equal(chosen.choice, value.argmax(axis=1))
    assert chosen.multiplier == 0.0


def test_a_binding_budget_is_met_and_nearly_optimal_against_brute_force() -> None:
    # given 7 customers and 4 rates (4^7 combinations) and a budget half of the free spend
    value, cost = _world(7, 3)
    allowed = np.ones_like(value, dtype=bool)
    free = choose_rates(value, cost, allowed, None)
    budget = free.cost / 2

    # when the policy chooses
    chosen = choose_rates(value, cost, allowed, budget)

    # then it spends within the budget, the multiplier is positive, and it is within 3 % of
    # the best feasible combination
    best = max(
        sum(value[i, k] for i, k in enumerate(combo))
        for combo in itertools.product(range(len(GRID)), repeat=7)
        if sum(cost[i, k] for i, k in enumerate(combo)) <= budget
    )
    assert chosen.cost <= budget + 1e-9
    assert chosen.multiplier > 0
    assert chosen.value >= 0.97 * best


def test_the_greedy_fill_uses_the_budget_the_multiplier_leaves() -> None:
    value, cost = _world(2_000, 5)
    allowed = np.ones_like(value, dtype=bool)
    budget = choose_rates(value, cost, allowed, None).cost * 0.6
    chosen = choose_rates(value, cost, allowed, budget)
    assert chosen.cost <= budget
    assert chosen.cost > 0.98 * budget


def test_leftover_budget_goes_to_the_best_upgrades_that_fit() -> None:
    # given two customers: a big upgrade (the best value per euro) that does not fit, and a
    # small one that does
    value = np.array([[0.0, 10.0], [0.0, 3.0]])
    cost = np.array([[0.0, 4.0], [0.0, 2.0]])
    allowed = np.ones_like(value, dtype=bool)

    # when the budget is 3
    chosen = choose_rates(value, cost, allowed, 3.0)

    # then the small upgrade is taken
    assert chosen.choice.tolist() == [0, 1]
    assert chosen.cost == 2.0


def test_caps_and_bounds_are_respected() -> None:
    value, cost = _world(300, 7)
    segments = np.array(["a", "b", "c"] * 100)
    allowed = allowed_rates(
        GRID, segments, min_rate=0.01, max_rate=0.05, segment_caps={"b": 0.01, "c": 0.02}
    )
    chosen = GRID[choose_rates(value, cost, allowed, None).choice]
    assert chosen.min() >= 0.01
    assert chosen[segments == "b"].max() == 0.01
    assert chosen[segments == "c"].max() <= 0.02


def test_a_budget_below_the_cheapest_rates_is_a_clear_error() -> None:
    value, cost = _world(50, 9)
    allowed = allowed_rates(GRID, None, min_rate=0.02, max_rate=0.05, segment_caps={})
    allowed = np.repeat(allowed, 50, axis=0)
    with pytest.raises(CashbackError, match="cannot be met: the cheapest allowed rates"):
        choose_rates(value, cost, allowed, budget=1.0)
    with pytest.raises(CashbackError, match="no rate of the grid"):
        allowed_rates(GRID, None, min_rate=0.06, max_rate=0.07, segment_caps={})


def test_the_frontier_never_falls_as_the_budget_grows_and_keeps_within_each_budget() -> None:
    # given a free spend and budgets from a tenth of it to twice it, in no order
    value, cost = _world(1_000, 11)
    allowed = np.ones_like(value, dtype=bool)
    free = choose_rates(value, cost, allowed, None).cost
    budgets = [free * share for share in (1.0, 0.1, 0.5, 2.0, 0.3, 0.75, 0.2)]

    # when the frontier is solved
    points = frontier(value, cost, allowed, budgets)

    # then each point has its budget and spends within it, and more budget is never worth less
    assert [p.budget for p in points] == budgets
    assert all(p.cost <= p.budget + 1e-9 for p in points if p.budget is not None)
    by_budget = sorted(points, key=lambda p: p.budget or 0.0)
    values = [p.value for p in by_budget]
    assert values == sorted(values)
    assert by_budget[-1].value == pytest.approx(value.max(axis=1).sum())


def test_a_frontier_point_is_the_budgeted_choice_at_its_budget() -> None:
    value, cost = _world(400, 13)
    allowed = allowed_rates(GRID, None, min_rate=0.0, max_rate=0.05, segment_caps={})
    allowed = np.repeat(allowed, 400, axis=0)
    budget = choose_rates(value, cost, allowed, None).cost * 0.4
    (point,) = frontier(value, cost, allowed, [budget])
    alone = choose_rates(value, cost, allowed, budget)
    np.testing.assert_array_equal(point.choice, alone.choice)
    assert (point.value, point.cost, point.multiplier) == (
        alone.value,
        alone.cost,
        alone.multiplier,
    )


def test_frontier_budgets_below_the_cheapest_rates_or_not_positive_are_refused() -> None:
    value, cost = _world(50, 17)
    allowed = allowed_rates(GRID, None, min_rate=0.02, max_rate=0.05, segment_caps={})
    allowed = np.repeat(allowed, 50, axis=0)
    cheapest = cost[:, 2].sum()
    with pytest.raises(CashbackError, match="cannot be met: the cheapest allowed rates"):
        frontier(value, cost, allowed, [cheapest * 2, cheapest / 2])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CashbackError, match="must be a positive amount"):
            frontier(value, cost, allowed, [cheapest * 2, bad])


def test_a_larger_budget_keeps_a_smaller_budgets_choice_when_that_is_worth_more() -> None:
    # given three customers where the budgeted choice at 7 (value 3) is worth less than the
    # one at 6.5 (value 4): Lagrange and greedy fill are near-optimal, not monotone
    value = np.array([[0.0, 10.0, 6.0], [0.0, 1.0, 1.0], [0.0, 2.0, 4.0]])
    cost = np.array([[0.0, 9.0, 10.0], [0.0, 4.0, 9.0], [0.0, 3.0, 6.0]])
    allowed = np.ones_like(value, dtype=bool)
    assert (
        choose_rates(value, cost, allowed, 7.5).value
        < choose_rates(value, cost, allowed, 6.5).value
    )

    # when the frontier is solved at both
    larger, smaller = frontier(value, cost, allowed, [7.5, 6.5])

    # then the larger budget keeps the smaller one's choice, with its own budget
    assert larger.value == smaller.value == 4.0
    assert larger.choice.tolist() == smaller.choice.tolist()
    assert (larger.budget, smaller.budget) == (7.5, 6.5)
