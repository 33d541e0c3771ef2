"""Segments: behaviour clusters of customers with readable names and profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.segments.lifecycle import SegmentsEvaluator


def evaluator() -> SegmentsEvaluator:
    """The segment model's evaluator for the promotion gate (imported on demand)."""
    from models.segments.lifecycle import SegmentsEvaluator  # noqa: PLC0415 - keep it light

    return SegmentsEvaluator()
