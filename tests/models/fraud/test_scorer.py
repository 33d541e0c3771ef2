"""Scoring paths agree: saved and loaded, batch and one claim, native and pyfunc."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest

from cashback.errors import CashbackError
from models.fraud.artifacts import load_model, save_model
from models.fraud.dataset import encode
from models.fraud.decisions import Thresholds
from models.fraud.model import FraudModel
from models.fraud.pyfunc import FraudPyfunc, artifacts, predict_frame
from models.fraud.scorer import FraudScorer

Fitted = tuple[FraudModel, Thresholds, pl.DataFrame]


def test_a_saved_model_loads_and_predicts_exactly_the_same(
    fitted_fraud: Fitted, tmp_path: Path
) -> None:
    # given a fitted model saved to disk
    model, limits, claims = fitted_fraud
    save_model(model, limits, tmp_path / "model")

    # when it is loaded back
    loaded, loaded_limits = load_model(tmp_path / "model")

    # then probabilities, anomaly scores and thresholds are identical
    x = encode(claims, model.features)
    np.testing.assert_array_equal(loaded.probability(x), model.probability(x))
    np.testing.assert_array_equal(loaded.anomaly.score(x), model.anomaly.score(x))
    assert loaded_limits == limits
    assert loaded.typical == model.typical


def test_one_claim_at_a_time_scores_exactly_like_the_batch(fitted_fraud: Fitted) -> None:
    # given the scorer without rules and held-out claims
    model, limits, claims = fitted_fraud
    scorer = FraudScorer(model, limits, None)

    # when scored as a batch and one by one
    batch = scorer.score_frame(claims)
    singles = [scorer.score_one(row) for row in claims.head(200).iter_rows(named=True)]

    # then every number and decision is the same
    for row, one in zip(batch.head(200).iter_rows(named=True), singles, strict=True):
        assert one.probability == row["probability"]
        assert one.anomaly_score == row["anomaly_score"]
        assert one.expected_loss == row["expected_loss"]
        assert one.decision == row["decision"]
    # and the risk score is the probability in percent
    assert batch["risk_score"].to_list() == (batch["probability"] * 100).to_list()


def test_the_pyfunc_model_predicts_exactly_what_the_native_model_predicts(
    fitted_fraud: Fitted, tmp_path: Path
) -> None:
    # given the model saved as an MLflow pyfunc model carrying its files
    model, limits, claims = fitted_fraud
    files = save_model(model, limits, tmp_path / "files")
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=FraudPyfunc(),
        artifacts={k: str(v) for k, v in artifacts(files).items()},
    )

    # when loaded through pyfunc, and natively from the artifact directory
    through_pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    features = claims.select(model.features).to_pandas()
    pyfunc_out = through_pyfunc.predict(features)
    native = FraudScorer.from_directory(files).score_frame(claims)

    # then both give the same probabilities and anomaly scores, bit for bit
    np.testing.assert_array_equal(pyfunc_out["probability"], native["probability"].to_numpy())
    np.testing.assert_array_equal(pyfunc_out["anomaly_score"], native["anomaly_score"].to_numpy())
    np.testing.assert_array_equal(
        predict_frame(model, claims)["risk_score"], native["risk_score"].to_numpy()
    )


def test_flagged_claims_get_reasons_in_words_and_an_abuse_type(fitted_fraud: Fitted) -> None:
    # given an ordinary claim, but from a device shared by 6 accounts
    model, limits, claims = fitted_fraud
    risky = claims.head(1).with_columns(
        pl.lit(6).alias("device_customers_30d"), pl.lit(value=False).alias("receipt_seen_before")
    )

    # when explained
    scorer = FraudScorer(model, limits, None)
    (explanation,) = scorer.explain_frame(risky, count=2)

    # then the reasons name what drove the risk, with the claim's value and the typical one
    assert explanation.features[0] == "device_customers_30d"
    typical = model.typical["device_customers_30d"]
    assert explanation.reasons[0] == (
        f"6 accounts used this device in the last 30 days; typical is {typical:.0f}"
    )
    # and the abuse type is the family that added the most risk
    assert explanation.abuse_type == "multi_account"


def test_claims_as_mappings_get_the_reasons_of_their_frame(fitted_fraud: Fitted) -> None:
    # given claims as the serving path stores them: mappings of JSON values, a null among them
    model, limits, claims = fitted_fraud
    frame = claims.head(40).with_columns(pl.lit(6).alias("device_customers_30d"))
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in frame.to_dicts()
    ]
    rows[0]["avg_basket_90d"] = None
    scorer = FraudScorer(model, limits, None)

    # when explained one by one from the mappings and together from their frame
    from_rows = scorer.explain_rows(rows, count=3)
    from_frame = scorer.explain_frame(pl.DataFrame(rows, infer_schema_length=None), count=3)

    # then the reasons and abuse types are the same, and no claims give no reasons
    assert from_rows == from_frame
    assert scorer.explain_rows([], count=3) == []


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("cashback_amount", None, "cashback_amount is missing"),
        ("cashback_amount", "two euros", "cashback_amount: expected an amount >= 0"),
        ("amount", -5.0, "amount: expected an amount >= 0"),
        ("tenure_days", "ten", "tenure_days: expected a number, got 'ten'"),
    ],
)
def test_a_claim_with_a_missing_or_malformed_field_is_a_clear_error(
    fitted_fraud: Fitted, field: str, value: object, match: str
) -> None:
    # given a valid claim with one field missing or malformed
    model, limits, claims = fitted_fraud
    claim = {**claims.row(0, named=True), "amount": 50.0, field: value}

    # then scoring it names the field and what was expected
    with pytest.raises(CashbackError, match=match):
        FraudScorer(model, limits, None).score_one(claim)
