"""The learnt response to the rate, and the value of each rate per customer.

`RateResponse` holds one S-learner (LightGBM, monotone increasing in the rate) per outcome
of an exposure window: margin, paid spend (spend that earns paid cashback), spend, and the
probability of a purchase. From them, per customer and grid rate (DESIGN.md):
    value(r) = margin(r) - r x paid_spend(r) x (1 + fraud_share)
               - [the same at the default rate]
    cost(r)  = r x paid_spend(r)                      (the cashback the budget pays)
and the expected net margin q(r) = margin(r) - r x paid_spend(r) that off-policy evaluation
uses as its reward model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
OUTCOME_OBJECTIVES = {
    "margin": "tweedie",
    "paid_spend": "tweedie",
    "spend": "tweedie",
    "purchased": "binary",
}


@dataclass(frozen=True)
class RateValues:
    """Per customer and grid rate: value against the default rate, cost, net margin."""

    value: FloatMatrix
    cost: FloatMatrix
    net: FloatMatrix
    margin: FloatMatrix
    paid_spend: FloatMatrix


@dataclass
class RateResponse:
    """Fitted response models and the grid they are read on.

    Attributes:
        features: model inputs before the rate, in order.
        grid: the rates.
        default_rate: the default rate card (must be on the grid).
        learners: one fitted learner per outcome (`OUTCOME_OBJECTIVES`).
        params: what they were trained with.
    """

    features: tuple[str, ...]
    grid: tuple[float, ...]
    default_rate: float
    learners: dict[str, object]
    params: dict[str, object] = field(default_factory=dict)

    @property
    def default_index(self) -> int:
        """Position of the default rate in the grid."""
        return int(np.argmin(np.abs(np.asarray(self.grid) - self.default_rate)))

    def predict(self, outcome: str, x: FloatMatrix) -> FloatMatrix:
        """(rows, grid) predictions of one outcome."""
        learner = self.learners[outcome]
        return np.asarray(learner.predict_grid(x, np.asarray(self.grid)))  # type: ignore[attr-defined]

    def values(self, x: FloatMatrix, fraud_share: FloatMatrix) -> RateValues:
        """Value, cost and net margin of every grid rate for each row.

        Args:
            x: model inputs (`features` order).
            fraud_share: per row, the expected share of cashback lost to fraud.
        """
        rates = np.asarray(self.grid)[None, :]
        margin = self.predict("margin", x)
        paid = self.predict("paid_spend", x)
        cost = rates * paid
        net = margin - cost
        gain = net - cost * fraud_share[:, None]
        value = gain - gain[:, [self.default_index]]
        return RateValues(value, cost, net, margin, paid)
