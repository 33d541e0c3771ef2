"""CLV: the registry's entry point for `cashback-clv` (the model lives in models.customers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.customers.value_lifecycle import ValueEvaluator


def evaluator() -> ValueEvaluator:
    """The value model's evaluator for the promotion gate (imported on demand)."""
    from models.customers.value_lifecycle import ValueEvaluator  # noqa: PLC0415 - keep it light

    return ValueEvaluator()
