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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cashback.settings import Settings
from models.rates.policy import choose_rates
from pipelines.simulation.truth import expected_paid_spend, load_truth, rate_value
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
    """

    ours: float
    ours_cost: float
    oracle: float
    uniform: dict[float, tuple[float, float, float]]
    logging: float
    customers: int

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
    return TruthComparison(ours, ours_cost, oracle, uniform, logging, rows.size)
