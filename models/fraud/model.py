"""The claim risk model: LightGBM on claim features, calibrated, with an anomaly signal.

- The anomaly score (an isolation forest, `models.fraud.anomaly`) is fitted on the training
  slice's claims only (labelled or not: it needs no label) and is one more model input.
- LightGBM learns known frauds (a fraud label by the cut-off) against every other mature
  claim of the training slice, classes weighted to balance, early-stopped on the validation
  slice (average precision). This is positive-unlabelled learning (Elkan & Noto 2008): the
  unlabelled claims are a mixture, not legit claims, and the booster's score ranks claims by
  their chance of being a known fraud, which (when chargebacks and reviews reach frauds
  independently of their features) is proportional to their chance of being a fraud. Only
  labelled claims ever measure the model, and the calibration below works out the scale.
- Its margin is calibrated by Platt scaling on the calibration slice's audit sample (the
  only labels that describe every claim; chargebacks exist for frauds only). When that slice
  has fewer than `MIN_CALIBRATION_FRAUDS` audited frauds, the validation slice's audit sample
  is added; without any audit label, every labelled calibration claim is used and the model
  says so (`calibration_set`).
- The risk score is the calibrated probability in percent (0-100): "risk 37" reads as "an
  estimated 37 % chance that this claim is fraud".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

from cashback.errors import CashbackError
from cashback.settings import FraudSettings
from models.fraud.anomaly import AnomalyScorer
from models.fraud.dataset import CATEGORICAL, FloatMatrix

ANOMALY_FEATURE = "anomaly_score"
MIN_CALIBRATION_FRAUDS = 10
ANOMALY_SAMPLE = 50_000
Labels = npt.NDArray[np.int8]


@dataclass(frozen=True)
class Calibrator:
    """Platt scaling of the booster's raw margin: p = 1 / (1 + exp(-(a * margin + b))).

    Attributes:
        slope: a.
        intercept: b.
        fitted_on: which claims it was fitted on, in words.
    """

    slope: float
    intercept: float
    fitted_on: str

    def probability(self, margin: FloatMatrix) -> FloatMatrix:
        """Calibrated probabilities for raw margins."""
        return 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))


def fit_calibrator(margin: FloatMatrix, label: Labels, fitted_on: str) -> Calibrator:
    """Platt scaling by (lightly regularized) logistic regression of the label on the margin.

    Raises:
        CashbackError: when the claims hold a single class.
    """
    if len(np.unique(label)) < 2:
        msg = f"cannot calibrate on {fitted_on}: it holds a single class ({len(label)} claims)"
        raise CashbackError(msg)
    regression = LogisticRegression(C=1.0).fit(margin.reshape(-1, 1), label)
    return Calibrator(float(regression.coef_[0, 0]), float(regression.intercept_[0]), fitted_on)


@dataclass
class FraudModel:
    """A fitted claim risk model.

    Attributes:
        features: input feature names, in matrix order (without the anomaly score).
        booster: the LightGBM model over `features` + the anomaly score.
        anomaly: the anomaly scorer over `features`.
        calibrator: margin to probability.
        typical: each feature's median over the training claims (for reasons).
        params: what it was trained with.
    """

    features: list[str]
    booster: lgb.Booster
    anomaly: AnomalyScorer
    calibrator: Calibrator
    typical: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def model_features(self) -> list[str]:
        """The booster's inputs: the features and the anomaly score."""
        return [*self.features, ANOMALY_FEATURE]

    def with_anomaly(self, x: FloatMatrix) -> FloatMatrix:
        """The booster's input matrix: `x` with the anomaly score appended."""
        return np.column_stack([x, self.anomaly.score(x)])

    def margin(self, x: FloatMatrix) -> FloatMatrix:
        """Raw booster margins for a feature matrix (without the anomaly column)."""
        return np.asarray(self.booster.predict(self.with_anomaly(x), raw_score=True))

    def probability(self, x: FloatMatrix) -> FloatMatrix:
        """Calibrated fraud probabilities for a feature matrix."""
        return self.calibrator.probability(self.margin(x))

    def contributions(self, full: FloatMatrix) -> FloatMatrix:
        """SHAP contributions to the margin of each model feature (last column: the bias).

        Args:
            full: the booster's input matrix (`with_anomaly`).
        """
        return np.asarray(self.booster.predict(full, pred_contrib=True))


def _lgb_params(config: FraudSettings, positives: int, negatives: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "scale_pos_weight": negatives / max(positives, 1),  # balance the classes
        "num_threads": 2,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }


def fit_booster(
    config: FraudSettings,
    names: list[str],
    train: tuple[FloatMatrix, Labels],
    validation: tuple[FloatMatrix, Labels],
) -> lgb.Booster:
    """LightGBM with balanced class weights, early-stopped on validation average precision.

    Raises:
        CashbackError: when a slice has no known fraud, or nothing else.
    """
    for name, (_, y) in {"training": train, "validation": validation}.items():
        if len(np.unique(y)) < 2:
            msg = (
                f"the {name} slice needs known frauds and other claims; it has "
                f"{int(y.sum())} frauds among {len(y)} claims"
            )
            raise CashbackError(msg)
    positives = int(train[1].sum())
    params = _lgb_params(config, positives, len(train[1]) - positives)
    categorical = [n for n in names if n in CATEGORICAL]
    train_set = lgb.Dataset(train[0], train[1], feature_name=names, categorical_feature=categorical)
    valid_set = lgb.Dataset(validation[0], validation[1], reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=config.max_rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )


def fit_anomaly(config: FraudSettings, x: FloatMatrix) -> AnomalyScorer:
    """The anomaly scorer on (a sample of) the training slice's claims."""
    rng = np.random.default_rng(config.seed)
    if len(x) > ANOMALY_SAMPLE:
        x = x[rng.choice(len(x), ANOMALY_SAMPLE, replace=False)]
    scorer = AnomalyScorer(n_estimators=config.anomaly_trees, random_state=config.seed)
    return scorer.fit(x)
