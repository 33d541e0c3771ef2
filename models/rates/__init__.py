"""Rates: response of margin to the cashback rate, uplift learners and metrics, the policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.rates.lifecycle import RatesEvaluator


def evaluator() -> RatesEvaluator:
    """The rate policy's evaluator for the promotion gate (imported on demand)."""
    from models.rates.lifecycle import RatesEvaluator  # noqa: PLC0415 - keep it light

    return RatesEvaluator()
