"""Decisions from scores: allow, review or block, and the thresholds behind them.

- Review: a claim whose expected loss (probability x cashback amount) is worth a review
  (at least the review cost) and within the risk team's capacity: the threshold is the
  expected loss above which, on a reference period, the team would get `reviews_per_day`
  claims a day. Rules can send a claim to review too.
- Block: only where the model is very sure: the lowest probability above which the
  estimated precision (the mean calibrated probability of the claims above it) reaches
  `block_precision`; no model block when no threshold reaches it. Block rules and block
  lists block too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl

from cashback.settings import FraudSettings
from models.fraud.dataset import FloatMatrix


class Decision(StrEnum):
    """What happens to a claim."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


@dataclass(frozen=True)
class Thresholds:
    """Where decisions change.

    Attributes:
        review_expected_loss: review at or above this expected loss (currency).
        block_probability: block at or above this probability (None: the model never blocks).
        review_share: share of the reference claims the review threshold sends to review.
        claims_per_day: claims a day in the reference period.
    """

    review_expected_loss: float
    block_probability: float | None
    review_share: float
    claims_per_day: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return asdict(self)


def review_threshold(
    expected_loss: FloatMatrix, days: float, config: FraudSettings
) -> tuple[float, float]:
    """The expected-loss threshold from capacity and economics, and its review share.

    Args:
        expected_loss: of every claim in a reference period.
        days: length of the period in days.
        config: capacity (reviews per day) and the cost of a review.
    """
    n = len(expected_loss)
    capacity = int(min(config.reviews_per_day * days, n))
    ranked = np.sort(expected_loss)[::-1]
    by_capacity = float(ranked[capacity - 1]) if capacity >= 1 else float("inf")
    threshold = max(by_capacity, config.review_cost)
    share = float(np.mean(expected_loss >= threshold)) if n else 0.0
    return threshold, share


def block_threshold(probability: FloatMatrix, config: FraudSettings) -> float | None:
    """The lowest probability whose claims above it have mean probability >= block_precision."""
    ranked = np.sort(probability)[::-1]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    reaching = np.flatnonzero(precision >= config.block_precision)
    if reaching.size == 0:
        return None
    return float(ranked[reaching[-1]])


def thresholds(
    probability: FloatMatrix,
    cashback: FloatMatrix,
    period: timedelta,
    config: FraudSettings,
) -> Thresholds:
    """Thresholds from the scored claims of a reference period."""
    days = period / timedelta(days=1)
    review, share = review_threshold(probability * cashback, days, config)
    return Thresholds(
        review_expected_loss=review,
        block_probability=block_threshold(probability, config),
        review_share=share,
        claims_per_day=len(probability) / max(days, 1e-9),
    )


def decide(
    probability: pl.Expr, cashback: pl.Expr, rule_action: pl.Expr, limits: Thresholds
) -> pl.Expr:
    """The decision of each claim (vectorized).

    Args:
        probability: calibrated fraud probability.
        cashback: the cashback amount claimed.
        rule_action: the rules' action (`allow`, `review`, `block`, or `allowlisted`).
        limits: the thresholds.
    """
    model_block = (
        probability >= limits.block_probability
        if limits.block_probability is not None
        else pl.lit(value=False)
    )
    review = (probability * cashback) >= limits.review_expected_loss
    return (
        pl.when(rule_action == Decision.BLOCK.value)
        .then(pl.lit(Decision.BLOCK.value))
        .when(rule_action == "allowlisted")
        .then(pl.lit(Decision.ALLOW.value))
        .when(model_block)
        .then(pl.lit(Decision.BLOCK.value))
        .when(review | (rule_action == Decision.REVIEW.value))
        .then(pl.lit(Decision.REVIEW.value))
        .otherwise(pl.lit(Decision.ALLOW.value))
        .alias("decision")
    )


def decide_one(probability: float, cashback: float, rule_action: str, limits: Thresholds) -> str:
    """The same decision for one claim (the serving path)."""
    if rule_action == Decision.BLOCK.value:
        return Decision.BLOCK.value
    if rule_action == "allowlisted":
        return Decision.ALLOW.value
    if limits.block_probability is not None and probability >= limits.block_probability:
        return Decision.BLOCK.value
    if probability * cashback >= limits.review_expected_loss or rule_action == "review":
        return Decision.REVIEW.value
    return Decision.ALLOW.value
