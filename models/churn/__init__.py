"""Churn: the registry's entry point for `cashback-churn` (the model lives in models.customers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.customers.lifecycle import ChurnEvaluator


def evaluator() -> ChurnEvaluator:
    """The churn model's evaluator for the promotion gate (imported on demand)."""
    from models.customers.lifecycle import ChurnEvaluator  # noqa: PLC0415 - keep it light

    return ChurnEvaluator()
