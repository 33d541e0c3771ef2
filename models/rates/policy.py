"""The rate policy: each customer's rate from the grid, within a budget.

Given, per customer and rate of the grid, the value of the rate (DESIGN.md: margin on the
expected spend, minus the cashback paid on spend that is claimed and not returned, minus the
expected fraud loss, relative to the default rate) and its cost (the expected cashback paid),
the policy maximises total value subject to total cost within the budget:
1. Lagrangian relaxation: each customer takes argmax_r value - lambda x cost; total cost falls
   as lambda grows, so lambda is found by bisection as the smallest that meets the budget;
2. the budget left over is filled greedily: customers move to their best upgrade by value
   per euro of extra cost while it fits.
Rates outside [min_rate, max_rate] or above a segment's cap are never chosen.
`frontier` solves the same problem at several budgets: what each budget buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from cashback.errors import CashbackError

FloatMatrix = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
BISECTION_STEPS = 60


@dataclass(frozen=True)
class PolicyChoice:
    """The chosen rate per customer and what the budget did.

    Attributes:
        choice: index into the grid, per customer.
        multiplier: the budget's Lagrange multiplier (0 when the budget does not bind).
        value: total value of the choice.
        cost: total cost of the choice.
        budget: the budget (None: unconstrained).
        upgraded: customers moved up by the greedy fill.
    """

    choice: IntArray
    multiplier: float
    value: float
    cost: float
    budget: float | None
    upgraded: int


def _argmax(score: FloatMatrix, allowed: BoolMatrix) -> IntArray:
    masked = np.where(allowed, score, -np.inf)
    return np.asarray(np.argmax(masked, axis=1), dtype=np.int64)


def _pick(matrix: FloatMatrix, choice: IntArray) -> FloatMatrix:
    return np.asarray(np.take_along_axis(matrix, choice[:, None], axis=1)[:, 0])


def _upgrade_pass(
    value: FloatMatrix, cost: FloatMatrix, allowed: BoolMatrix, choice: IntArray, left: float
) -> tuple[IntArray, float, int]:
    """One pass: each customer's best upgrade by value per extra euro, best first, if it fits."""
    extra_cost = cost - _pick(cost, choice)[:, None]
    extra_value = value - _pick(value, choice)[:, None]
    useful = allowed & (extra_cost > 0) & (extra_value > 0)
    ratio = np.where(useful, extra_value / np.where(useful, extra_cost, 1.0), -np.inf)
    best = np.asarray(np.argmax(ratio, axis=1), dtype=np.int64)
    best_ratio = _pick(ratio, best)
    candidates = np.flatnonzero(np.isfinite(best_ratio))
    order = candidates[np.argsort(-best_ratio[candidates], kind="stable")]
    out = choice.copy()
    moved = 0
    # a plain loop: an upgrade that does not fit must not stop smaller ones behind it
    for row, extra in zip(order.tolist(), _pick(extra_cost, best)[order].tolist(), strict=True):
        if extra <= left:
            out[row] = best[row]
            left -= extra
            moved += 1
    return out, left, moved


def _greedy_fill(
    value: FloatMatrix, cost: FloatMatrix, allowed: BoolMatrix, choice: IntArray, left: float
) -> tuple[IntArray, int]:
    """Upgrade customers by value per extra euro while the budget lasts (passes until none)."""
    upgraded = 0
    for _ in range(value.shape[1]):  # a customer can move up at most once per rate
        choice, left, moved = _upgrade_pass(value, cost, allowed, choice, left)
        upgraded += moved
        if moved == 0:
            break
    return choice, upgraded


def choose_rates(
    value: FloatMatrix,
    cost: FloatMatrix,
    allowed: BoolMatrix,
    budget: float | None,
) -> PolicyChoice:
    """The value-maximising rates within the budget.

    Args:
        value: (customers, rates) value of each rate against the default rate.
        cost: (customers, rates) expected cashback paid at each rate.
        allowed: (customers, rates) whether a rate may be given to the customer.
        budget: total cost allowed (None: no budget).

    Returns:
        The choice, the multiplier and the totals.

    Raises:
        CashbackError: when a customer has no allowed rate, or when even the cheapest
            allowed rates cost more than the budget.
    """
    if not allowed.any(axis=1).all():
        bad = int(np.flatnonzero(~allowed.any(axis=1))[0])
        msg = f"customer row {bad} has no allowed rate (check min_rate, max_rate, segment caps)"
        raise CashbackError(msg)
    free = _argmax(value, allowed)
    spent = float(_pick(cost, free).sum())
    if budget is None or spent <= budget:
        return PolicyChoice(free, 0.0, float(_pick(value, free).sum()), spent, budget, 0)
    cheapest = float(np.where(allowed, cost, np.inf).min(axis=1).sum())
    if cheapest > budget:
        msg = (
            f"budget {budget:,.2f} cannot be met: the cheapest allowed rates already cost "
            f"{cheapest:,.2f} (lower min_rate or raise the budget)"
        )
        raise CashbackError(msg)
    lo, hi = 0.0, 1.0
    while float(_pick(cost, _argmax(value - hi * cost, allowed)).sum()) > budget:
        hi *= 2.0
        if hi > 1e12:  # only ties at the cheapest rates remain; they meet the budget
            break
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if float(_pick(cost, _argmax(value - mid * cost, allowed)).sum()) > budget:
            lo = mid
        else:
            hi = mid
    choice = _argmax(value - hi * cost, allowed)
    left = budget - float(_pick(cost, choice).sum())
    choice, upgraded = _greedy_fill(value, cost, allowed, choice, max(left, 0.0))
    return PolicyChoice(
        choice,
        hi,
        float(_pick(value, choice).sum()),
        float(_pick(cost, choice).sum()),
        budget,
        upgraded,
    )


def frontier(
    value: FloatMatrix,
    cost: FloatMatrix,
    allowed: BoolMatrix,
    budgets: Sequence[float],
) -> tuple[PolicyChoice, ...]:
    """The budgeted choice at each budget: total value against what it costs.

    Budgets are solved from the smallest up, so a budget that the cheapest allowed rates
    cannot meet fails first (`choose_rates`'s error) before any other is solved. The
    Lagrangian choice with its greedy fill is near-optimal, not exactly monotone in the
    budget: a budget whose own choice is worth less than a smaller budget's keeps that
    smaller budget's choice (it fits), so the frontier never falls as the budget grows.

    Args:
        value: (customers, rates) value of each rate against the default rate.
        cost: (customers, rates) expected cashback paid at each rate.
        allowed: (customers, rates) whether a rate may be given to the customer.
        budgets: total costs allowed, positive, in any order.

    Returns:
        One choice per budget, in the order of `budgets`; each has its budget.

    Raises:
        CashbackError: for a budget that is not a positive number, a customer without an
            allowed rate, or a budget below the cost of the cheapest allowed rates.
    """
    bad = [b for b in budgets if not (np.isfinite(b) and b > 0)]
    if bad:
        msg = f"a budget must be a positive amount; got {bad[0]}"
        raise CashbackError(msg)
    order = np.argsort(np.asarray(budgets, dtype=np.float64), kind="stable")
    points: dict[int, PolicyChoice] = {}
    best: PolicyChoice | None = None
    for position in order.tolist():
        budget = float(budgets[position])
        found = choose_rates(value, cost, allowed, budget)
        if best is not None and best.value > found.value:
            found = replace(best, budget=budget)
        points[position] = best = found
    return tuple(points[k] for k in range(len(budgets)))


def allowed_rates(
    grid: npt.NDArray[np.float64],
    segments: npt.NDArray[np.str_] | None,
    *,
    min_rate: float,
    max_rate: float,
    segment_caps: dict[str, float],
) -> BoolMatrix:
    """Which grid rates each customer may get.

    Raises:
        CashbackError: when no grid rate lies in [min_rate, max_rate].
    """
    band = (grid >= min_rate - 1e-12) & (grid <= max_rate + 1e-12)
    if not band.any():
        msg = f"no rate of the grid {list(grid)} lies in [{min_rate}, {max_rate}]"
        raise CashbackError(msg)
    n = 1 if segments is None else len(segments)
    allowed = np.tile(band, (n, 1))
    if segments is not None:
        for segment, cap in segment_caps.items():
            rows = segments == segment
            allowed[rows] &= grid <= cap + 1e-12
            allowed[rows, int(np.argmax(band))] = True  # the lowest allowed rate stays
    return allowed


def rates_at(
    value: FloatMatrix, cost: FloatMatrix, allowed: BoolMatrix, multiplier: float
) -> IntArray:
    """Each row's allowed grid index maximising value - multiplier x cost.

    The budgeted policy's rule once its multiplier is known: what serving and off-policy
    evaluation apply to customers the budget run did not price.
    """
    return _argmax(value - multiplier * cost, np.broadcast_to(allowed, value.shape))
