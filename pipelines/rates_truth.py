"""A rates run scored against a simulated world's ground truth.

For the customers the policy priced at the close (legit customers still active then), the
truth gives each grid rate's true value against the default rate over one exposure window
(`pipelines.simulation.truth.rate_value`) and its true cost (rate x expected paid spend).
Compared at the same spend:
- ours: the true value of the rates the policy chose;
- the oracle: the best choice per customer knowing the truth, within the same spend;
- the best uniform rate: for each single rate for everyone, its true value against our
  policy re-solved (on our model's values) with that rate's cost as the budget;
- the logging policy: each segment's logging rate.

Off-policy evaluation against the truth (`ope_against_truth`): on the held-out exposures
whose truth is exact, the IPS, SNIPS and DR estimates of the policy's net margin per
exposure beside its true expected value, computed window by window from the simulator's
generative model (`pipelines.simulation.truth.expected_window_money`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cashback.settings import Settings
from models.rates.ope import Estimate, LoggedData, evaluate_policy, logged_value
from models.rates.policy import choose_rates
from pipelines.simulation.truth import (
    Truth,
    expected_paid_spend,
    expected_spend,
    expected_window_money,
    exposure_windows,
    fraud_order_exposures,
    load_truth,
    rate_value,
)
from pipelines.simulation.world import SEGMENTS
from pipelines.train_rates import RatesTraining


@dataclass(frozen=True)
class TruthComparison:
    """True incremental values (sums over the priced customers) of each policy.

    Attributes:
        ours: our policy's true value.
        ours_cost: its true cost.
        oracle: the oracle's true value at our true cost.
        uniform: per uniform rate: (true value, true cost, our value at that cost).
        logging: the logging policy's true value.
        customers: customers compared.
        segment_informed_gain: the gain over the best uniform rate (at its spend) of a policy
            that knows each customer's true baseline spend and their segment's average true
            response, but not who within the segment responds: what segment knowledge buys.
    """

    ours: float
    ours_cost: float
    oracle: float
    uniform: dict[float, tuple[float, float, float]]
    logging: float
    customers: int
    segment_informed_gain: float

    @property
    def share_of_oracle(self) -> float:
        """Our true value as a share of the oracle's."""
        return self.ours / self.oracle

    @property
    def best_uniform(self) -> float:
        """The uniform rate with the highest true value."""
        return max(self.uniform, key=lambda r: self.uniform[r][0])

    @property
    def gain_over_best_uniform(self) -> float:
        """Our value at the best uniform rate's spend over its value, minus 1."""
        value, _, ours = self.uniform[self.best_uniform]
        return ours / value - 1.0


def against_truth(settings: Settings, result: RatesTraining) -> TruthComparison:
    """Score the run's policy, the oracle, uniform rates and the logging policy on the truth."""
    truth = load_truth(settings.data_dir)
    grid = np.asarray(settings.rates.grid)
    close, days = result.close, float(settings.exposure_days)
    alive = (truth.customers["churned_ts"].is_null() | (truth.customers["churned_ts"] > close)) & (
        truth.customers["alive_at_start"]
    )
    legit = truth.customers.filter(alive & (pl.col("role") == "legit"))
    priced = (
        result.customers.select("customer_id")
        .with_row_index("row")
        .join(legit, on="customer_id", how="inner")
    )
    rows = priced["row"].to_numpy()
    true_value = np.column_stack(
        [rate_value(priced, truth.config, float(r), close, days) for r in grid]
    )
    true_cost = np.column_stack(
        [float(r) * expected_paid_spend(priced, truth.config, float(r), close, days) for r in grid]
    )
    chosen = result.choice.choice[rows]
    picked = np.arange(rows.size)
    ours = float(true_value[picked, chosen].sum())
    ours_cost = float(true_cost[picked, chosen].sum())
    everyone = np.ones_like(true_value, dtype=bool)
    oracle = choose_rates(true_value, true_cost, everyone, ours_cost).value
    model_value, model_cost = result.values.value[rows], result.values.cost[rows]
    allowed = np.ones_like(model_value, dtype=bool)
    uniform = {}
    for k, r in enumerate(grid):
        # our policy at the spend of this rate for everyone (in the model's own units)
        again = choose_rates(model_value, model_cost, allowed, float(model_cost[:, k].sum()))
        uniform[float(r)] = (
            float(true_value[:, k].sum()),
            float(true_cost[:, k].sum()),
            float(true_value[picked, again.choice].sum()),
        )
    logging_rates = np.array([s.policy_rate for s in SEGMENTS])
    names = [s.name for s in SEGMENTS]
    segment = np.array([names.index(s) for s in priced["segment"].to_list()])
    logging_index = np.searchsorted(grid, logging_rates[segment] - 1e-12)
    logging = float(true_value[picked, logging_index].sum())
    baseline = expected_spend(priced, truth.config, settings.default_rate, close, days)
    informed = _segment_informed_gain(true_value, true_cost, baseline, segment)
    return TruthComparison(ours, ours_cost, oracle, uniform, logging, rows.size, informed)


def _segment_informed_gain(
    true_value: np.ndarray, true_cost: np.ndarray, baseline: np.ndarray, segment: np.ndarray
) -> float:
    """Gain over the best uniform rate of the policy that knows segment curves and baselines.

    Each customer's value and cost of a rate are their true baseline spend times their
    segment's true value and cost per euro of baseline; that policy is solved at the best
    uniform rate's true spend and scored on the truth.
    """
    totals = np.bincount(segment, weights=baseline)

    def per_baseline_euro(matrix: np.ndarray) -> np.ndarray:
        """Each customer's baseline times their segment's total per euro of baseline."""
        sums = np.stack([np.bincount(segment, weights=column) for column in matrix.T], axis=1)
        return np.asarray(baseline[:, None] * (sums / totals[:, None])[segment])

    value, cost = per_baseline_euro(true_value), per_baseline_euro(true_cost)
    best = int(np.argmax(true_value.sum(axis=0)))
    allowed = np.ones_like(value, dtype=bool)
    choice = choose_rates(value, cost, allowed, float(true_cost[:, best].sum())).choice
    rows = np.arange(choice.size)
    return float(true_value[rows, choice].sum() / true_value[:, best].sum() - 1.0)


@dataclass(frozen=True)
class OpeTruth:
    """Off-policy estimates on held-out exposures beside their truth (means per exposure).

    Both refer to the same exposures: the held-out ones of honest customers that carry no
    order made by fraud, where the truth is exact (`pipelines.simulation.truth`).

    Attributes:
        truth: our policy's true expected net margin per exposure.
        estimates: its IPS, SNIPS and DR estimates, with customer-bootstrap intervals.
        oracle_dr: its DR estimate with the truth as the reward model: what is left of the
            DR error is sampling noise, whatever the learnt response.
        logged_truth: the true expected net margin under the logged rates.
        logging: the realised mean net margin (the logging policy's value), with its interval.
        uniform: per grid rate: its true value and its estimates, everyone at that rate.
        exposures: exposures compared.
        customers: their customers.
        left_out: held-out exposures left out (fraud accounts, orders made by fraud).
    """

    truth: float
    estimates: dict[str, Estimate]
    oracle_dr: Estimate
    logged_truth: float
    logging: Estimate
    uniform: dict[float, tuple[float, dict[str, Estimate]]]
    exposures: int
    customers: int
    left_out: int

    def error(self, estimator: str) -> float:
        """Relative error of an estimator of our policy's value against its truth."""
        return self.estimates[estimator].value / self.truth - 1.0


def _subset(data: LoggedData, keep: np.ndarray) -> LoggedData:
    return LoggedData(
        reward=data.reward[keep],
        action=data.action[keep],
        propensity=data.propensity[keep],
        cluster=data.cluster[keep],
        q=data.q[keep],
    )


def _exact_rows(settings: Settings, result: RatesTraining, truth: Truth) -> np.ndarray:
    """Held-out exposures whose truth is exact: honest customers, no order made by fraud."""
    test = result.data.test.select("exposure_id", "customer_id")
    honest = truth.customers.filter(pl.col("role") == "legit")["customer_id"]
    fraud = fraud_order_exposures(settings.data_dir, truth)
    exact = pl.col("customer_id").is_in(honest.implode()) & ~pl.col("exposure_id").is_in(
        fraud.implode()
    )
    return test.select(exact.alias("exact"))["exact"].to_numpy()


def true_net_margins(settings: Settings, truth: Truth, exposures: pl.DataFrame) -> np.ndarray:
    """(exposures, grid rates) true expected net margin of each exposure at each rate."""
    windows = exposure_windows(settings.data_dir, truth, exposures)
    rates = [np.full(exposures.height, r) for r in settings.rates.grid]
    return np.column_stack([expected_window_money(windows, truth.config, r).net for r in rates])


def ope_against_truth(settings: Settings, result: RatesTraining) -> OpeTruth:
    """IPS, SNIPS and DR of the run's policy on held-out exposures against the true value.

    The policy's rate for each held-out exposure is the one the run evaluated
    (`RatesTraining.held_out_rates`); the truth is the expected net margin of each
    exposure's window at that rate under the exposure's own offer (`true_net_margins`).
    The estimates are the pipeline's (`evaluate_policy`), on the exposures whose truth is
    exact.
    """
    config = settings.rates
    truth = load_truth(settings.data_dir)
    keep = _exact_rows(settings, result, truth)
    logged, target = _subset(result.held_out, keep), result.held_out_rates[keep]
    true_net = true_net_margins(settings, truth, result.data.test.filter(pl.Series(keep)))
    rows = np.arange(target.size)

    def estimated(policy: np.ndarray, data: LoggedData = logged) -> dict[str, Estimate]:
        return evaluate_policy(
            data, policy, replicates=config.bootstrap_replicates, seed=config.seed
        )

    oracle = LoggedData(logged.reward, logged.action, logged.propensity, logged.cluster, true_net)
    return OpeTruth(
        truth=float(true_net[rows, target].mean()),
        estimates=estimated(target),
        oracle_dr=estimated(target, oracle)["dr"],
        logged_truth=float(true_net[rows, logged.action].mean()),
        logging=logged_value(logged, replicates=config.bootstrap_replicates, seed=config.seed),
        uniform={
            float(r): (float(true_net[:, k].mean()), estimated(np.full(target.size, k)))
            for k, r in enumerate(config.grid)
        },
        exposures=int(target.size),
        customers=int(np.unique(logged.cluster).size),
        left_out=int(keep.size - keep.sum()),
    )
