"""The budgeted rate policy: Lagrangian choice, greedy fill, caps and bad budgets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cashback.errors import CashbackError
from models.rates.policy import allowed_rates, choose_rates

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
