"""Scoring claims with a fitted fraud model and the rules: in batch and one at a time.

Both paths compute the same thing: the anomaly score, the calibrated probability, the risk
score (probability in percent), the expected loss (probability x cashback amount), the
rules' hits and action, and the decision. Reasons and the abuse type (tree SHAP, about a
millisecond a claim) are separate calls, made for the claims sent to review or block.

Both paths are kept lean around the booster, which does most of the work
(`tests/benchmarks/test_fraud_bench.py` measures them): the batch path hands the rules only
the claims that can hit a rule or a list (a few percent; building the `rule_hits` lists is
the rules' costly part) and gives every other claim the verdict of one of them, which is
necessarily "no hit, allow"; the one-claim path calls LightGBM's single-row C API, set up
once (`OneRowBooster`): `Booster.predict` spends more on Python checks and on waking its
thread pool than on the row's trees, and waits milliseconds for a thread when the machine
is busy.
"""

from __future__ import annotations

import ctypes
import math
import operator
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from lightgbm import basic as lgb_basic

from cashback.errors import CashbackError
from models.fraud.artifacts import load_model
from models.fraud.dataset import FloatMatrix, encode, encode_row
from models.fraud.decisions import Decision, Thresholds, decide, decide_one
from models.fraud.model import FraudModel
from models.fraud.reasons import Explanation, explain
from models.fraud.rules import IS_TRUE, OPERATORS, Condition, RuleSet

SCORE_COLUMNS = (
    "anomaly_score",
    "probability",
    "risk_score",
    "expected_loss",
    "rule_hits",
    "rule_action",
    "decision",
)


C_API_PREDICT_RAW_SCORE = 1  # LightGBM's c_api.h
C_API_DTYPE_FLOAT64 = 1
# LightGBM's loaded C library, as its Python package keeps it (`lightgbm.basic._LIB`); the
# booster's handle is `Booster._handle`. Both are the package's own names: `OneRowBooster`
# falls back to `Booster.predict` when they are gone.
_LIGHTGBM: ctypes.CDLL | None = vars(lgb_basic).get("_LIB")


class OneRowBooster:
    """A booster's raw score of one row through LightGBM's single-row C API.

    `LGBM_BoosterPredictForMatSingleRowFastInit` prepares the prediction once (its
    parameters, one thread, the iterations `Booster.predict` uses by default: the best
    iteration when there is one, else all); `LGBM_BoosterPredictForMatSingleRowFast` then
    scores a row with the same trees in the same order as `Booster.predict`, so the same
    bits. When the C API cannot be reached (another LightGBM), or its answer on a probe row
    is not `Booster.predict`'s, `predict` falls back to `Booster.predict` on one thread.

    Args:
        booster: the fitted booster (kept alive as long as this object).
    """

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.n_features = int(booster.num_feature())
        self._config: ctypes.c_void_p | None = None
        try:
            self._config = self._fast_config(booster)
        except (AttributeError, TypeError, lgb.basic.LightGBMError):
            return
        probe = np.linspace(-1.0, 1.0, self.n_features).reshape(1, -1)
        want = float(booster.predict(probe, raw_score=True, num_threads=1)[0])
        if self.predict(probe) != want:  # pragma: no cover - a LightGBM that differs
            self._config = None

    def _fast_config(self, booster: lgb.Booster) -> ctypes.c_void_p:
        if _LIGHTGBM is None:
            raise AttributeError("lightgbm.basic._LIB")
        best = int(booster.best_iteration)
        config = ctypes.c_void_p()
        lgb_basic._safe_call(
            _LIGHTGBM.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(C_API_PREDICT_RAW_SCORE),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(best if best > 0 else -1),
                ctypes.c_int(C_API_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(config),
            )
        )
        weakref.finalize(self, _LIGHTGBM.LGBM_FastConfigFree, config)
        return config

    def predict(self, row: FloatMatrix) -> float:
        """The raw score (margin) of one row.

        Args:
            row: the booster's inputs, float64, shape (1, n_features), C order.
        """
        if self._config is None:
            return float(self.booster.predict(row, raw_score=True, num_threads=1)[0])
        if row.shape != (1, self.n_features) or not row.flags.c_contiguous:
            msg = f"one row of {self.n_features} float64 values expected, got {row.shape}"
            raise ValueError(msg)
        out = (ctypes.c_double * 1)()
        length = ctypes.c_int64()
        assert _LIGHTGBM is not None  # a config exists
        lgb_basic._safe_call(
            _LIGHTGBM.LGBM_BoosterPredictForMatSingleRowFast(
                self._config,
                row.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(length),
                out,
            )
        )
        return float(out[0])


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
        self._one_row: OneRowBooster | None = None

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
        # `model.with_anomaly(x)`, built in place: the anomaly score fills a spare column
        full = encode(frame, self.model.features, spare_columns=1)
        full[:, -1] = self.model.anomaly.score(full[:, :-1])
        margin = np.asarray(self.model.booster.predict(full, raw_score=True))
        probability = self.model.calibrator.probability(margin)
        scored = self._evaluate_rules(
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

    def _evaluate_rules(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`RuleSet.evaluate` on the claims, run on those that can hit something only.

        A claim outside `could_hit` hits no rule and no list, so its verdict is the verdict
        of any other such claim: the rules evaluate the candidates and one of those others,
        whose columns every other one then shares. The columns are the rules' own, the same
        as `self.rules.evaluate(frame)` gives.
        """
        needed = list(self.rules.required_features)
        if not needed or any(name not in frame.columns for name in needed):
            return self.rules.evaluate(frame)  # nothing to split on, or the rules' own error
        narrow = frame.select(needed)
        keep = narrow.select(could_hit(self.rules, narrow.schema)).to_series().to_numpy()
        if keep.all():  # also an empty frame
            return self.rules.evaluate(frame)
        keep = keep.copy()
        quiet = int(np.argmin(keep))  # the first claim that cannot hit anything
        keep[quiet] = True
        position = np.cumsum(keep) - 1  # each kept claim's row among the evaluated ones
        position[~keep] = position[quiet]
        verdicts = self.rules.evaluate(narrow.filter(pl.Series(keep)))
        index = pl.Series(position)
        return frame.with_columns(
            verdicts["rule_hits"].gather(index), verdicts["rule_action"].gather(index)
        )

    def score_one(self, features: Mapping[str, object]) -> ClaimScore:
        """One claim's score from its features and request fields (the serving path).

        Raises:
            CashbackError: naming a missing or malformed field.
        """
        request_amount(features, "amount")
        x = encode_row(dict(features), self.model.features)
        anomaly = self.model.anomaly.score_one(x[0])
        full = np.append(x[0], anomaly).reshape(1, -1)
        margin = self._booster_one().predict(full)
        probability = float(self.model.calibrator.probability(np.array([margin]))[0])
        rules = self.rules.evaluate_one(features)
        cashback = request_amount(features, "cashback_amount")
        return ClaimScore(
            probability=probability,
            risk_score=probability * 100,
            anomaly_score=anomaly,
            expected_loss=probability * cashback,
            rule_hits=rules.hits,
            decision=decide_one(probability, cashback, rules.action, self.limits),
        )

    def _booster_one(self) -> OneRowBooster:
        """The single-row booster, set up at the first claim (again if the model changed)."""
        one = self._one_row
        if one is None or one.booster is not self.model.booster:
            one = self._one_row = OneRowBooster(self.model.booster)
        return one

    def explain_frame(self, frame: pl.DataFrame, count: int = 3) -> list[Explanation]:
        """Reasons and abuse type for each claim row (tree SHAP; about 1 ms a claim)."""
        return self._explain_matrix(self.matrix(frame), count)

    def explain_rows(
        self, rows: Sequence[Mapping[str, object]], count: int = 3
    ) -> list[Explanation]:
        """The same for claims given as feature mappings (the serving path).

        The rows are encoded one by one as `score_one` does (`encode_row`), not through a
        frame: building a polars frame and its ~100 column expressions for a handful of
        claims cost more than their SHAP values, holding the GIL against the requests.

        Raises:
            CashbackError: naming a field whose value is not a number.
        """
        if not rows:
            return []
        x = np.vstack([encode_row(dict(row), self.model.features) for row in rows])
        return self._explain_matrix(x, count)

    def _explain_matrix(self, x: FloatMatrix, count: int) -> list[Explanation]:
        full = self.model.with_anomaly(x)
        contributions = self.model.contributions(full)
        return explain(contributions, full, self._names, self.model.typical, count)


def _may_hold(condition: Condition, schema: pl.Schema) -> pl.Expr:
    """Where a rule condition holds; null where its feature is null or NaN (never fires)."""
    column = pl.col(condition.feature)
    if schema[condition.feature].is_float():
        column = column.fill_nan(None)
    if condition.op == IS_TRUE:
        return column.cast(pl.Boolean)
    compare = OPERATORS.get(condition.op)
    return compare(column, condition.value) if compare else pl.lit(value=True)


def could_hit(rules: RuleSet, schema: pl.Schema) -> pl.Expr:
    """True for the claims on which some rule or list of `rules` may fire.

    Every claim with a hit is among them (a condition of an unknown kind counts as holding),
    so the others all get no hit and `allow`. Rules and lists read features as
    `RuleSet.evaluate` does: a null or NaN feature never fires.

    Args:
        rules: the rule set.
        schema: the claims' schema (it has every `rules.required_features` column).
    """
    parts = [
        reduce(operator.and_, [_may_hold(c, schema) for c in rule.conditions()]).fill_null(
            value=False
        )
        for rule in rules.rules
    ]
    for key, values in (*rules.block_lists.items(), *rules.allow_lists.items()):
        parts.append(pl.col(key).is_in(sorted(values)).fill_null(value=False))
    return pl.any_horizontal(parts or [pl.lit(value=False)]).alias("could_hit")


def request_amount(claim: Mapping[str, object], name: str) -> float:
    """A money field of the claim: present, a number, not negative.

    Raises:
        CashbackError: naming the field and what was expected.
    """
    value = claim.get(name)
    if value is None:
        msg = f"claim field {name} is missing: expected an amount >= 0"
        raise CashbackError(msg)
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        amount = math.nan
    if not amount >= 0:  # also refuses NaN
        msg = f"claim field {name}: expected an amount >= 0, got {value!r}"
        raise CashbackError(msg)
    return amount


def flagged(decision: pl.Expr) -> pl.Expr:
    """Claims sent to review or blocked."""
    return decision.is_in([Decision.REVIEW.value, Decision.BLOCK.value])
