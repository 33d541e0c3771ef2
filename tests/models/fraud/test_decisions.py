"""Thresholds from capacity, economics and precision, and the decision precedence."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from cashback.settings import FraudSettings
from models.fraud.decisions import Thresholds, block_threshold, decide, decide_one, thresholds


def test_the_review_threshold_sends_the_capacity_a_day_when_reviews_pay_off() -> None:
    # given 1,000 claims over 10 days with expected losses well above the review cost
    rng = np.random.default_rng(1)
    probability = rng.uniform(0.2, 0.9, 1_000)
    cashback = rng.uniform(5, 10, 1_000)
    config = FraudSettings(reviews_per_day=20, review_cost=0.5)

    # when thresholds are set on them
    limits = thresholds(probability, cashback, timedelta(days=10), config)

    # then 20 claims a day (200 of 1,000) are at or above the review threshold
    assert np.sum(probability * cashback >= limits.review_expected_loss) == 200
    assert limits.review_share == pytest.approx(0.2)
    assert limits.claims_per_day == pytest.approx(100)


def test_reviews_that_cost_more_than_they_save_are_not_sent_even_with_capacity() -> None:
    # given small expected losses and a review cost above all of them
    probability = np.full(100, 0.1)
    cashback = np.full(100, 2.0)
    config = FraudSettings(reviews_per_day=1_000, review_cost=0.5)

    # when thresholds are set, then the economics win: nobody is reviewed
    limits = thresholds(probability, cashback, timedelta(days=1), config)
    assert limits.review_expected_loss == 0.5
    assert limits.review_share == 0.0


def test_the_block_threshold_is_where_the_mean_probability_above_reaches_the_precision() -> None:
    # given calibrated probabilities
    probability = np.array([0.99, 0.98, 0.97, 0.5, 0.2, 0.1])

    # when the block threshold is set for 95 % and 99.5 % precision
    at_95 = block_threshold(probability, FraudSettings(block_precision=0.95))
    at_995 = block_threshold(probability, FraudSettings(block_precision=0.995))

    # then blocking stops before the claims that would pull precision under the target
    assert at_95 == 0.97
    assert at_995 is None


@pytest.mark.parametrize(
    ("probability", "cashback", "rule_action", "expected"),
    [
        (0.01, 1.0, "allow", "allow"),
        (0.01, 1.0, "review", "review"),
        (0.01, 1.0, "block", "block"),
        (0.5, 10.0, "allow", "review"),
        (0.5, 10.0, "allowlisted", "allow"),
        (0.99, 1.0, "allow", "block"),
        (0.99, 1.0, "allowlisted", "allow"),
    ],
)
def test_decisions_follow_the_rules_then_the_model(
    probability: float, cashback: float, rule_action: str, expected: str
) -> None:
    # given thresholds: review from an expected loss of 1, block from 0.95
    limits = Thresholds(1.0, 0.95, 0.05, 100.0)

    # when one claim is decided row-wise and vectorized
    one = decide_one(probability, cashback, rule_action, limits)
    frame = pl.DataFrame({"p": [probability], "c": [cashback], "a": [rule_action]})
    batch = frame.select(decide(pl.col("p"), pl.col("c"), pl.col("a"), limits)).item()

    # then both paths agree with the documented precedence
    assert one == expected
    assert batch == expected
