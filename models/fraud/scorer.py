"""Scoring claims with a fitted fraud model and the rules: in batch and one at a time.

Both paths compute the same thing: the anomaly score, the calibrated probability, the risk
score (probability in percent), the expected loss (probability x cashback amount), the
rules' hits and action, and the decision. Reasons and the abuse type (tree SHAP, about a
millisecond a claim) are separate calls, made for the claims sent to review or block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from models.fraud.artifacts import load_model
from models.fraud.dataset import FloatMatrix, encode, encode_row
from models.fraud.decisions import Decision, Thresholds, decide, decide_one
from models.fraud.model import FraudModel
from models.fraud.reasons import Explanation, explain
from models.fraud.rules import RuleSet

SCORE_COLUMNS = (
    "anomaly_score",
    "probability",
    "risk_score",
    "expected_loss",
    "rule_hits",
    "rule_action",
    "decision",
)


@dataclass(frozen=True)
class ClaimScore:
    """One scored claim.

    Attributes:
        probability: calibrated fraud probability.
        risk_score: the probability in percent, 0-100.
        anomaly_score: 0-1, higher = more unusual.
        expected_loss: probability x cashback amount.
        rule_hits: names of the rules the claim hit.
        decision: allow, review or block.
    """

    probability: float
    risk_score: float
    anomaly_score: float
    expected_loss: float
    rule_hits: tuple[str, ...]
    decision: str


class FraudScorer:
    """A fitted model, its thresholds and the rules, ready to score.

    Args:
        model: the fitted model.
        limits: its decision thresholds.
        rules: rules evaluated with the model (an empty rule set when None).
    """

    def __init__(self, model: FraudModel, limits: Thresholds, rules: RuleSet | None) -> None:
        self.model = model
        self.limits = limits
        self.rules = rules if rules is not None else RuleSet.empty()
        self._names = model.model_features

    @classmethod
    def from_directory(cls, directory: Path, rules: RuleSet | None = None) -> FraudScorer:
        """Load the model files written by `models.fraud.artifacts.save_model`."""
        model, limits = load_model(directory)
        return cls(model, limits, rules)

    def matrix(self, frame: pl.DataFrame) -> FloatMatrix:
        """The feature matrix of claim rows (features in model order)."""
        return encode(frame, self.model.features)

    def score_frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Claims with features in, the same claims with the `SCORE_COLUMNS` out."""
        x = self.matrix(frame)
        full = self.model.with_anomaly(x)
        margin = np.asarray(self.model.booster.predict(full, raw_score=True))
        probability = self.model.calibrator.probability(margin)
        scored = self.rules.evaluate(
            frame.with_columns(
                pl.Series("anomaly_score", full[:, -1]),
                pl.Series("probability", probability),
            )
        )
        return scored.with_columns(
            (pl.col("probability") * 100).alias("risk_score"),
            (pl.col("probability") * pl.col("cashback_amount")).alias("expected_loss"),
        ).with_columns(
            decide(
                pl.col("probability"), pl.col("cashback_amount"), pl.col("rule_action"), self.limits
            )
        )

    def score_one(self, features: Mapping[str, object]) -> ClaimScore:
        """One claim's score from its features and request fields (the serving path)."""
        x = encode_row(dict(features), self.model.features)
        anomaly = self.model.anomaly.score_one(x[0])
        full = np.append(x[0], anomaly).reshape(1, -1)
        margin = float(self.model.booster.predict(full, raw_score=True)[0])
        probability = float(self.model.calibrator.probability(np.array([margin]))[0])
        rules = self.rules.evaluate_one(features)
        cashback = float(features["cashback_amount"])  # type: ignore[arg-type]
        return ClaimScore(
            probability=probability,
            risk_score=probability * 100,
            anomaly_score=anomaly,
            expected_loss=probability * cashback,
            rule_hits=rules.hits,
            decision=decide_one(probability, cashback, rules.action, self.limits),
        )

    def explain_frame(self, frame: pl.DataFrame, count: int = 3) -> list[Explanation]:
        """Reasons and abuse type for each claim row (tree SHAP; about 1 ms a claim)."""
        x = self.model.with_anomaly(self.matrix(frame))
        contributions = self.model.contributions(x)
        return explain(contributions, x, self._names, self.model.typical, count)


def flagged(decision: pl.Expr) -> pl.Expr:
    """Claims sent to review or blocked."""
    return decision.is_in([Decision.REVIEW.value, Decision.BLOCK.value])
