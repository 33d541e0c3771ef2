"""Reasons in words and the abuse type from SHAP contributions."""

from __future__ import annotations

import numpy as np

from models.fraud.reasons import abuse_types, explain, sentence

NAMES = ["device_customers_30d", "receipt_seen_before", "customer_claims_1h", "spend_30d"]


def test_the_abuse_type_is_the_family_that_adds_the_most_risk() -> None:
    # given contributions (last column: the bias) of four claims
    contributions = np.array(
        [
            [2.0, 0.1, 0.5, 0.0, -3.0],  # shared device dominates
            [0.1, 1.5, 0.2, 0.0, -3.0],  # reused receipt
            [0.0, 0.0, 0.9, 3.0, -3.0],  # velocity: spend_30d belongs to no family
            [-1.0, -0.5, -0.2, 2.0, -3.0],  # no family adds risk
        ]
    )

    # when typed, then each claim gets its family, and `other` when none adds risk
    assert abuse_types(contributions, NAMES) == [
        "multi_account",
        "receipt_reuse",
        "velocity",
        "other",
    ]


def test_reasons_are_the_features_adding_risk_most_first_in_words() -> None:
    # given one claim where the device and the hourly claims add risk and spend lowers it
    contributions = np.array([[0.4, 0.0, 1.2, -0.7, -3.0]])
    values = np.array([[5.0, 0.0, 4.0, 120.0]])
    typical = {"device_customers_30d": 1.0, "customer_claims_1h": 1.0}

    # when explained with up to three reasons
    (explanation,) = explain(contributions, values, NAMES, typical, count=3)

    # then only the two risk-adding features are given, largest first, with typical values
    assert explanation.features == ("customer_claims_1h", "device_customers_30d")
    assert explanation.reasons == (
        "4 claims by this customer in the last hour; typical is 1",
        "5 accounts used this device in the last 30 days; typical is 1",
    )
    assert explanation.abuse_type == "velocity"


def test_sentences_handle_unknown_values_and_features_without_a_template() -> None:
    assert sentence("tenure_days", float("nan"), 300.0) == "tenure days is unknown"
    assert sentence("spend_30d", 1234.5, None) == "spend 30d is 1,234.50"
    assert sentence("minutes_since_last_claim", 180.0, 2880.0) == (
        "the previous claim was 3.0 hours earlier; typical is 48.0 hours"
    )
