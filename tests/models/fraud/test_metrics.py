"""Ranking metrics at a review share, and the Wilson interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from models.fraud.metrics import precision_at_share, ranking_metrics, recall_at_share, wilson


def test_recall_and_precision_at_a_review_share_count_the_top_claims() -> None:
    # given 10 claims, 3 frauds, two of them among the 2 highest scores
    label = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 0], dtype=np.int8)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])

    # when the top 20 % are reviewed, then 2 of 3 frauds are caught, every review a fraud
    assert recall_at_share(label, score, 0.2) == pytest.approx(2 / 3)
    assert precision_at_share(label, score, 0.2) == 1.0
    # and reviewing everyone catches all of them
    assert recall_at_share(label, score, 1.0) == 1.0


def test_metrics_of_a_single_class_are_undefined_not_a_crash() -> None:
    metrics = ranking_metrics(np.zeros(5, dtype=np.int8), np.arange(5.0), 0.2, "audit")
    assert math.isnan(metrics["audit_pr_auc"])
    assert math.isnan(metrics["audit_recall_at_review"])
    assert metrics["audit_claims"] == 5


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (47, 2809), (10, 10)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(k, n)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)
