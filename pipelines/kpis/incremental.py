"""Return on cashback: incremental margin attributable to cashback per unit of cashback paid.

Estimated from randomized exposures only: those the personalized policy logged with
exploration (propensity below 1, outside experiments), where every rate of the grid, 0 %
included, had a known positive probability. On them:
- logged margin per exposure: the mean gross margin (net of returns) the exposures brought;
- margin without cashback: the self-normalized inverse-propensity (SNIPS) estimate of the
  same mean had every exposure offered 0 %: sum(w m) / sum(w), w = [rate = 0] / propensity;
- cashback per exposure: the mean cashback paid (net of returns);
- return on cashback = (logged margin - margin without cashback) / cashback per exposure.
A value above 1 means each unit of cashback brought more than a unit of margin. Confidence
intervals come from a Poisson bootstrap over customers (a customer's exposures are
correlated). Never a before/after comparison: without randomized exposures at 0 % there is
no estimate, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from cashback.settings import FeatureSettings
from features.lifecycle import KEY
from models.rates.outcomes import exposure_outcomes
from pipelines.kpis.activity import UNSCORED, Grouping, stages_at_period_start
from pipelines.kpis.inputs import ALL, ORDER_GROUPS, KpiInputs, KpiWindow

SOURCE = "randomized exposures (the policy's exploration), SNIPS estimate of 0 % for everyone"
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn."""

    replicates: int = 200
    level: float = 0.95
    seed: int = 0


def exposure_rewards(
    inputs: KpiInputs, window: KpiWindow, group: Grouping, features: FeatureSettings, end: datetime
) -> tuple[pl.LazyFrame | None, str]:
    """The window's randomized, complete exposures with their margin and cashback (lazy).

    Returns:
        (exposure_id, customer_id, group, rate, propensity, margin, cashback) rows, or None
        with the reason they cannot be had.
    """
    missing = inputs.lacking("exposures", "claims", "claim_labels", "merchants")
    if missing:
        return None, f"no return on cashback: the data lack {', '.join(missing)}"
    tables = inputs.tables
    randomized = tables["exposures"].filter(
        window.contains(pl.col("ts")),
        pl.col("propensity") < 1,
        pl.col("experiment_id").is_null(),
    )
    outcomes = exposure_outcomes(
        randomized,
        inputs.transactions,
        tables["claims"],
        tables["claim_labels"],
        tables["merchants"],
        end,
    ).select("exposure_id", KEY, "ts", "rate", "propensity", "margin", "cashback")
    return _grouped(inputs, outcomes, window, group, features), ""


def _grouped(
    inputs: KpiInputs,
    outcomes: pl.LazyFrame,
    window: KpiWindow,
    group: Grouping,
    features: FeatureSettings,
) -> pl.LazyFrame:
    """Each exposure's group: its customer's at the exposure's period (all for order groups)."""
    if group.key is None or group.key in ORDER_GROUPS:
        return outcomes.with_columns(pl.lit(ALL).alias("group")).drop("ts")
    if group.key == "segment" and inputs.scores is not None:
        segments = inputs.scores.select(KEY, pl.col("segment").cast(pl.String).alias("group"))
        return (
            outcomes.join(segments, on=KEY, how="left")
            .with_columns(pl.col("group").fill_null(UNSCORED))
            .drop("ts")
        )
    periods = outcomes.with_columns(window.period_start(pl.col("ts")).alias("period"))
    stages = stages_at_period_start(inputs, periods.select(KEY, "period"), features)
    return periods.join(stages, on=[KEY, "period"], how="left").drop("ts", "period")


def _ratio_parts(
    margin: FloatArray, cashback: FloatArray, w0: FloatArray, weight: FloatArray
) -> tuple[float, float, float]:
    """(logged margin, margin without cashback, cashback) per exposure under row weights."""
    total = weight.sum()
    without = (weight * w0).sum()
    return (
        float((weight * margin).sum() / total),
        float((weight * w0 * margin).sum() / without) if without > 0 else float("nan"),
        float((weight * cashback).sum() / total),
    )


def _estimate(rows: pl.DataFrame, boot: Bootstrap) -> dict[str, float]:
    margin = rows["margin"].to_numpy().astype(np.float64)
    cashback = rows["cashback"].to_numpy().astype(np.float64)
    rate, propensity = rows["rate"].to_numpy(), rows["propensity"].to_numpy()
    w0 = np.where(np.isclose(rate, 0.0), 1.0 / propensity, 0.0)
    _, customer = np.unique(rows[KEY].to_numpy(), return_inverse=True)
    logged, without, paid = _ratio_parts(margin, cashback, w0, np.ones_like(margin))
    rng = np.random.default_rng(boot.seed)
    draws = []
    for _ in range(boot.replicates):
        counts = rng.poisson(1.0, int(customer.max()) + 1)[customer].astype(np.float64)
        lo, wo, pa = _ratio_parts(margin, cashback, w0, counts)
        draws.append(((lo - wo) / pa) if pa > 0 else np.nan)
    tail = (1 - boot.level) / 2 * 100
    low, high = np.nanpercentile(np.array(draws), [tail, 100 - tail])
    return {
        "exposures": float(rows.height),
        "customers": float(customer.max() + 1),
        "exposures_at_zero": float(np.count_nonzero(w0)),
        "margin_per_exposure": logged,
        "margin_without_cashback": without,
        "cashback_per_exposure": paid,
        "incremental_margin_per_exposure": logged - without,
        "return_on_cashback": (logged - without) / paid if paid > 0 else float("nan"),
        "low": float(low),
        "high": float(high),
    }


def return_on_cashback(rewards: pl.DataFrame, boot: Bootstrap) -> tuple[pl.DataFrame, list[str]]:
    """Return on cashback per group, with its interval, and notes on what was left out.

    Args:
        rewards: collected `exposure_rewards` rows.
        boot: the bootstrap's replicates, level and seed.

    Returns:
        One row per group that has randomized exposures at 0 % (group, exposures, customers,
        exposures_at_zero, margin_per_exposure, margin_without_cashback, cashback_per_exposure,
        incremental_margin_per_exposure, return_on_cashback, low, high), and notes.
    """
    rows, notes = [], []
    for (name,), part in rewards.sort("group").group_by("group", maintain_order=True):
        if not np.isclose(part["rate"].to_numpy(), 0.0).any():
            notes.append(f"group {name}: no randomized exposure at 0 %, no return on cashback")
            continue
        rows.append({"group": name, **_estimate(part, boot)})
    if rewards.is_empty():
        notes.append("no randomized exposures in the window: no return on cashback")
    frame = pl.DataFrame(rows) if rows else pl.DataFrame(schema={"group": pl.String})
    if rows:
        frame = frame.with_columns(
            pl.col("exposures", "customers", "exposures_at_zero").cast(pl.Int64)
        )
    return frame, notes
