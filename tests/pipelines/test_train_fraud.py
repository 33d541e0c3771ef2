"""The fraud model on simulated worlds: quality bars against baselines, on held-out later claims."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from cashback.settings import Settings
from pipelines.train_fraud import FraudTraining, run

pytestmark = pytest.mark.xdist_group("simulated_worlds")

PEPPER = "test-pepper-not-a-secret"
REVIEW_SHARE = 0.04  # twice the default 2 % fraud prevalence


def _train(world: Path) -> FraudTraining:
    return run(Settings(ip_pepper=PEPPER, data_dir=world), register=False)


def _recall_at(truth: np.ndarray, score: np.ndarray, share: float) -> float:
    """Share of true frauds among the top `share` of claims by score."""
    top = np.argsort(-score, kind="stable")[: math.ceil(share * len(score))]
    return float(truth[top].sum() / truth.sum())


def _quality(result: FraudTraining) -> dict[str, float]:
    """PR-AUC of the model and both baselines, and the model's recall, against the truth."""
    test = result.test
    truth = test["is_fraud"].cast(pl.Int8).to_numpy()
    out = {
        name: float(average_precision_score(truth, test[column].to_numpy()))
        for name, column in (
            ("model", "probability"),
            ("rules", "rule_score"),
            ("anomaly", "anomaly_score"),
        )
    }
    out["recall"] = _recall_at(truth, test["probability"].to_numpy(), REVIEW_SHARE)
    return out


def _report(name: str, result: FraudTraining, quality: dict[str, float]) -> None:
    per_type = {
        k.removeprefix("truth_recall_at_review_"): round(v, 3)
        for k, v in result.metrics.items()
        if k.startswith("truth_recall_at_review_")
    }
    print(  # the figures the issue asks to report
        f"\n{name}: PR-AUC model {quality['model']:.3f}, rules {quality['rules']:.3f}, "
        f"anomaly {quality['anomaly']:.3f}; recall at {REVIEW_SHARE:.0%} "
        f"{quality['recall']:.3f}; per abuse type {per_type}; abuse type accuracy "
        f"{result.metrics.get('truth_abuse_type_accuracy', math.nan):.3f}"
    )


def test_default_world_beats_the_baselines_by_the_bars(default_world: Path) -> None:
    # given the default world, trained on earlier claims and tested on the latest mature ones
    result = _train(default_world)

    # when the test slice's scores are compared with the truth
    quality = _quality(result)
    _report("default", result, quality)

    # then PR-AUC is 0.2 above the better baseline, and reviewing 4 % catches 60 % of frauds
    assert quality["model"] >= max(quality["rules"], quality["anomaly"]) + 0.2
    assert quality["recall"] >= 0.6
    # and the abuse type matches the truth for most caught frauds
    assert result.metrics["truth_abuse_type_accuracy"] >= 0.7


def test_hard_world_beats_the_baselines_by_the_bars(hard_world: Path) -> None:
    # given the hard world (weaker signals, label noise, most frauds never labelled)
    result = _train(hard_world)

    # when compared with the truth on the test slice
    quality = _quality(result)
    _report("hard", result, quality)

    # then PR-AUC is 0.1 above the better baseline, and reviewing 4 % catches 40 % of frauds
    assert quality["model"] >= max(quality["rules"], quality["anomaly"]) + 0.1
    assert quality["recall"] >= 0.4
    assert result.metrics["truth_abuse_type_accuracy"] >= 0.5


def test_training_uses_only_mature_claims_and_tests_on_later_ones(default_world: Path) -> None:
    # given a trained model
    result = _train(default_world)
    split_at = result.periods

    # then every test claim is mature and later than the training slices
    test_times = result.test["ts"]
    assert test_times.min() >= split_at.bounds[2]
    assert test_times.max() < split_at.mature_until
    assert split_at.mature_until == split_at.cutoff - timedelta(days=90)
    # and metrics that describe every claim say which set they come from
    assert {"audit_pr_auc", "labelled_pr_auc", "truth_pr_auc"} <= set(result.metrics)
    assert result.metrics["audit_claims"] < result.metrics["truth_claims"]
