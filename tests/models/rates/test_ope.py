"""Off-policy evaluation: IPS, SNIPS and DR against a known truth, with honest intervals."""

from __future__ import annotations

import numpy as np
import pytest

from cashback.errors import CashbackError
from models.rates.ope import LoggedData, evaluate_policy, logged_value

K = 4


def _logged(
    seed: int, customers: int = 400, per_customer: int = 10
) -> tuple[LoggedData, np.ndarray, float]:
    """A confounded logging policy with exploration, and a target policy of known value."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(customers), per_customer)
    taste = rng.normal(size=customers)[cluster]  # customer effect: exposures are correlated
    mean = 5 + taste[:, None] + np.array([0.0, 0.8, 1.2, 0.9])[None, :] * (1 + (taste[:, None] > 0))
    preferred = np.where(taste > 0, 2, 1)  # the logging policy depends on the context
    explore = rng.random(cluster.size) < 0.3
    action = np.where(explore, rng.integers(0, K, cluster.size), preferred)
    propensity = 0.7 * (action == preferred) + 0.3 / K
    reward = mean[np.arange(cluster.size), action] + rng.normal(0, 2, cluster.size)
    target = np.where(taste > 0, 2, 3)
    truth = float(mean[np.arange(cluster.size), target].mean())
    q = mean + rng.normal(0, 0.3, mean.shape)  # a decent but imperfect reward model
    return LoggedData(reward, action, propensity, cluster, q), target, truth


def test_estimates_are_close_to_the_truth_and_intervals_cover_it_most_of_the_time() -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    widths = {"ips": [], "dr": []}
    runs = 40
    for seed in range(runs):
        data, target, truth = _logged(seed)
        found = evaluate_policy(data, target, replicates=150, seed=seed)
        for name, estimate in found.items():
            covered[name] += estimate.covers(truth)
        widths["ips"].append(found["ips"].high - found["ips"].low)
        widths["dr"].append(found["dr"].high - found["dr"].low)
    assert min(covered.values()) >= 0.85 * runs, covered
    # and the reward model makes DR tighter than IPS
    assert np.mean(widths["dr"]) < 0.7 * np.mean(widths["ips"])


def test_dr_is_unbiased_even_with_a_biased_reward_model() -> None:
    errors = []
    for seed in range(30):
        data, target, truth = _logged(seed)
        biased = LoggedData(data.reward, data.action, data.propensity, data.cluster, data.q + 1.0)
        errors.append(evaluate_policy(biased, target, replicates=2, seed=seed)["dr"].value - truth)
    assert abs(np.mean(errors)) < 3 * np.std(errors) / np.sqrt(len(errors))


def test_the_logging_policy_value_is_the_mean_reward() -> None:
    data, _, _ = _logged(0)
    found = logged_value(data, replicates=100)
    assert found.value == pytest.approx(data.reward.mean())
    assert found.low < found.value < found.high


def test_exposures_without_usable_propensities_are_refused_with_the_reason() -> None:
    data, target, _ = _logged(1)
    missing = data.propensity.copy()
    missing[3] = np.nan
    with pytest.raises(CashbackError, match="1 exposures have no propensity"):
        evaluate_policy(LoggedData(data.reward, data.action, missing, data.cluster, data.q), target)
    certain = np.ones_like(data.propensity)
    with pytest.raises(CashbackError, match="no randomization"):
        evaluate_policy(LoggedData(data.reward, data.action, certain, data.cluster, data.q), target)
