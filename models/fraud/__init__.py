"""Fraud: the claim risk model, its anomaly signal, decisions and reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.fraud.lifecycle import FraudEvaluator


def evaluator() -> FraudEvaluator:
    """The fraud model's evaluator for the promotion gate (imported on demand)."""
    from models.fraud.lifecycle import FraudEvaluator  # noqa: PLC0415 - keep the package light

    return FraudEvaluator()
