"""Labels, maturity and time splits of the fraud model's data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from cashback.errors import CashbackError
from models.fraud.dataset import audited, claim_labels, encode, encode_row, periods

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _labels(rows: list[tuple[str, str, str, int]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        [
            {
                "claim_id": claim,
                "label": label,
                "abuse_type": "velocity" if label == "fraud" else None,
                "decided_ts": T0 + timedelta(days=day),
                "source": source,
            }
            for claim, label, source, day in rows
        ],
        schema={
            "claim_id": pl.String,
            "label": pl.String,
            "abuse_type": pl.String,
            "decided_ts": pl.Datetime("us", "UTC"),
            "source": pl.String,
        },
    )


def test_a_claim_is_fraud_when_any_known_label_says_so_and_later_labels_are_unknown() -> None:
    # given a claim audited legit then charged back, one audited legit, one labelled too late
    labels = _labels(
        [
            ("k1", "legit", "audit", 1),
            ("k1", "fraud", "chargeback", 5),
            ("k2", "legit", "audit", 2),
            ("k3", "fraud", "chargeback", 50),
        ]
    )

    # when the labels are read at a cut-off on day 10
    out = claim_labels(labels, T0 + timedelta(days=10)).collect().sort("claim_id")

    # then k1 is fraud from both sources, k2 legit, and k3 is not labelled yet
    assert out["claim_id"].to_list() == ["k1", "k2"]
    assert out["label"].to_list() == [1, 0]
    assert out["label_source"].to_list() == ["audit+chargeback", "audit"]
    assert out["abuse_type"].to_list() == ["velocity", None]
    assert out.select(audited(pl.col("label_source"))).to_series().to_list() == [True, True]
    # and trained now (no cut-off), every label of the table is known, k3's too
    now = claim_labels(labels, None).collect().sort("claim_id")
    assert now["claim_id"].to_list() == ["k1", "k2", "k3"]
    assert now["label"].to_list() == [1, 0, 1]


def test_periods_split_the_mature_history_by_time_and_leave_young_claims_out() -> None:
    # given a year of claims, a 90-day maturity and 15/15/20 % shares
    cutoff = T0 + timedelta(days=365)
    split_at = periods(T0, cutoff, timedelta(days=90), (0.15, 0.15, 0.2))
    claims = pl.DataFrame(
        {"ts": [T0 + timedelta(days=d) for d in (0, 100, 150, 200, 240, 300)]},
        schema={"ts": pl.Datetime("us", "UTC")},
    )

    # when each claim gets its split
    splits = claims.select(split_at.split()).to_series().to_list()

    # then the order is train, validation, calibration, test, and the young are out
    assert split_at.mature_until == cutoff - timedelta(days=90)
    assert splits == ["train", "train", "validation", "calibration", "test", None]


def test_history_shorter_than_the_maturity_window_is_a_clear_error() -> None:
    with pytest.raises(CashbackError, match="MATURITY_DAYS"):
        periods(T0, T0 + timedelta(days=30), timedelta(days=90), (0.1, 0.1, 0.1))


def test_encoding_gives_nan_for_nulls_and_vocabulary_codes_for_categoricals() -> None:
    # given two claims with a missing value and a lifecycle stage
    frame = pl.DataFrame(
        {
            "tenure_days": [3, None],
            "lifecycle": ["at_risk", None],
            "receipt_seen_before": [True, False],
        }
    )
    names = ["tenure_days", "lifecycle", "receipt_seen_before"]

    # when encoded as a matrix, and row by row
    matrix = encode(frame, names)
    rows = np.vstack([encode_row(r, names) for r in frame.iter_rows(named=True)])

    # then nulls are NaN, the stage is its index, booleans are 0/1, and both paths agree
    assert matrix[0].tolist() == [3.0, 2.0, 1.0]
    assert np.isnan(matrix[1, 0])
    assert np.isnan(matrix[1, 1])
    np.testing.assert_array_equal(matrix, rows)


def test_a_missing_feature_column_is_named() -> None:
    with pytest.raises(CashbackError, match="tenure_days"):
        encode(pl.DataFrame({"x": [1]}), ["tenure_days"])
