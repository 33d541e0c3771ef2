"""Off-policy evaluation of a rate policy on logged exposures with their propensities.

For logged exposures (context x_i, logged rate a_i with propensity p_i, reward r_i) and a
deterministic target policy pi:
- IPS:   mean( 1[a_i = pi(x_i)] / p_i * r_i )
- SNIPS: sum( w_i r_i ) / sum( w_i ), with w_i = 1[a_i = pi(x_i)] / p_i
- DR:    mean( q(x_i, pi(x_i)) + w_i * (r_i - q(x_i, a_i)) ), q a reward model.
Confidence intervals come from a bootstrap over customers (exposures of one customer are
correlated, so customers are resampled, not exposures): percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cashback.errors import CashbackError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value (mean reward per exposure) with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def covers(self, truth: float) -> bool:
        """Whether the interval contains `truth`."""
        return self.low <= truth <= self.high


@dataclass(frozen=True)
class LoggedData:
    """Logged exposures: reward, logged action (grid index), propensity, customer cluster.

    Attributes:
        reward: the reward of each exposure (e.g. net margin).
        action: index of the logged rate in the grid.
        propensity: probability the logging policy gave that rate in that context.
        cluster: integer customer index (exposures of one customer share it).
        q: (exposures, rates) predicted reward of each rate (for DR).
    """

    reward: FloatArray
    action: IntArray
    propensity: FloatArray
    cluster: IntArray
    q: FloatArray

    def check(self) -> None:
        """Refuse data OPE cannot use, with the reason.

        Raises:
            CashbackError: propensities missing, outside (0, 1], or deterministic only.
        """
        p = self.propensity
        if np.isnan(p).any():
            msg = f"{int(np.isnan(p).sum())} exposures have no propensity: OPE needs them all"
            raise CashbackError(msg)
        if ((p <= 0) | (p > 1)).any():
            msg = "propensities must lie in (0, 1]: the logged data are not usable for OPE"
            raise CashbackError(msg)
        if (p >= 1).all():
            msg = (
                "every exposure was logged with propensity 1 (no randomization): no other "
                "policy can be evaluated from them"
            )
            raise CashbackError(msg)


def _terms(data: LoggedData, target: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per exposure: importance weight, weighted reward, DR term."""
    hit = data.action == target
    weight = np.where(hit, 1.0 / data.propensity, 0.0)
    rows = np.arange(target.size)
    q_target = data.q[rows, target]
    q_logged = data.q[rows, data.action]
    dr = q_target + weight * (data.reward - q_logged)
    return weight, weight * data.reward, dr


def _estimates(
    weight: FloatArray, weighted: FloatArray, dr: FloatArray, w: FloatArray
) -> FloatArray:
    """IPS, SNIPS and DR under row weights `w` (the bootstrap's resampling counts)."""
    total = w.sum()
    ips = (w * weighted).sum() / total
    norm = (w * weight).sum()
    snips = (w * weighted).sum() / norm if norm > 0 else np.nan
    return np.array([ips, snips, (w * dr).sum() / total])


def _resampled_counts(
    cluster: IntArray, replicates: int, seed: int
) -> tuple[IntArray, list[IntArray]]:
    """Customer indices 0..C-1 per exposure, and per replicate each customer's draw count."""
    _, index = np.unique(cluster, return_inverse=True)
    customers = int(index.max()) + 1
    rng = np.random.default_rng(seed)
    uniform = np.full(customers, 1.0 / customers)
    return index, [rng.multinomial(customers, uniform) for _ in range(replicates)]


def evaluate_policy(
    data: LoggedData,
    target: IntArray,
    *,
    replicates: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR values of a deterministic policy, with customer-bootstrap CIs.

    Args:
        data: the logged exposures.
        target: the target policy's rate (grid index) for each exposure's context.
        replicates: bootstrap replicates.
        level: confidence level of the intervals.
        seed: seed of the bootstrap.

    Returns:
        One estimate per estimator name (`ESTIMATORS`).
    """
    data.check()
    weight, weighted, dr = _terms(data, target)
    point = _estimates(weight, weighted, dr, np.ones_like(weight))
    cluster, resamples = _resampled_counts(data.cluster, replicates, seed)
    draws = np.array(
        [
            _estimates(weight, weighted, dr, counts[cluster].astype(np.float64))
            for counts in resamples
        ]
    )
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return {
        name: Estimate(float(point[i]), float(low[i]), float(high[i]))
        for i, name in enumerate(ESTIMATORS)
    }


def logged_value(data: LoggedData, *, replicates: int = 200, seed: int = 0) -> Estimate:
    """The logging policy's own value: the mean reward, with a customer-bootstrap CI."""
    cluster, resamples = _resampled_counts(data.cluster, replicates, seed)
    sums = np.bincount(cluster, weights=data.reward)
    sizes = np.bincount(cluster).astype(np.float64)
    draws = np.array([(counts * sums).sum() / (counts * sizes).sum() for counts in resamples])
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(float(data.reward.mean()), float(low), float(high))
