"""The claim beside the customer's own norm, as the review page shows it."""

from __future__ import annotations

import pytest

from serving.review_queue import HOURS_90D, norms

FEATURES = {"claims_90d": 18, "cashback_90d": 36.0, "avg_basket_90d": 50.0}
CLAIM = {"amount": 200.0, "cashback_amount": 6.0}


def _by_feature(features: dict[str, float]) -> dict[str, dict[str, float]]:
    return {n["feature"]: n for n in norms(features, CLAIM)}


def test_a_lone_claim_has_no_earlier_claims_in_its_hour() -> None:
    # given a claim alone in its hour (the fresh count includes the claim itself)
    found = _by_feature(FEATURES | {"customer_claims_1h": 1})
    # then it is compared as 0 earlier claims against the hourly rate, not as one
    hourly = found["customer_claims_1h"]
    assert (hourly["value"], hourly["ratio"]) == (0.0, 0.0)
    assert hourly["norm"] == pytest.approx(18 / HOURS_90D)
    # and the amount and cashback are compared with the customer's averages
    assert found["amount"]["ratio"] == pytest.approx(4.0)
    assert found["cashback_amount"]["ratio"] == pytest.approx(3.0)


def test_a_burst_shows_its_earlier_claims_against_the_hourly_rate() -> None:
    hourly = _by_feature(FEATURES | {"customer_claims_1h": 3})["customer_claims_1h"]
    assert hourly["value"] == 2.0
    assert hourly["ratio"] == pytest.approx(2 / (18 / HOURS_90D))


def test_a_new_customer_without_features_gets_no_norms() -> None:
    assert norms(None, CLAIM) == []
    assert "customer_claims_1h" not in _by_feature({"customer_claims_1h": 2})
