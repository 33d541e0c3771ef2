"""`cashback train rates`: learn the response to the rate, choose rates within a budget.

One straight line:
1. randomized exposures (0 < propensity < 1) with the outcomes attributed to them and the
   rates_v1 features at their start, split by time (`rates.test_share` held out);
2. S-learners (LightGBM, monotone increasing in the rate) for margin, paid spend, spend and
   purchase, weighted by 1 / propensity; a T-learner (one model per rate) for comparison;
3. on the held-out exposures: Qini and AUUC of each rate against 0 % for both learners, and
   the value of the induced policy by IPS, SNIPS and DR (customer-bootstrap intervals) beside
   the logging policy and every uniform rate;
4. the policy at the latest close for every customer who bought in the last year: the value
   of each rate, the budget (`rates.budget_share` of what the default card costs) met by the
   Lagrange multiplier and the greedy fill, a reason in words per customer;
5. the segment x category rate card, and the average rate by each excluded attribute;
6. per-customer rates, the rate card, the Qini table, the OPE table and each customer's value
   and cost of every rate (for `cashback rates simulate-budget`), and each customer's fraud
   share (for serving) written (atomically) under `<data_dir>/rates/`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import RateSettings, Settings
from cashback.tables import write_parquet_atomic
from features.customer_frame import FeatureSources
from features.store import batch_table_path
from features.training import training_frame
from models.rates.dataset import (
    DEFAULT_OFFER,
    OFFER_COLUMNS,
    SERVICE,
    RateData,
    fraud_share,
    matrix,
    rate_data,
)
from models.rates.learners import BaselineSLearner, TLearner
from models.rates.ope import LoggedData, evaluate_policy, logged_value
from models.rates.policy import PolicyChoice, allowed_rates, choose_rates, rates_at
from models.rates.response import OUTCOME_OBJECTIVES, RateResponse, RateValues
from models.rates.uplift_metrics import qini_by_level
from pipelines.build_features import latest_close
from pipelines.rates_frontier import values_frame

log = logging.getLogger(__name__)
Learner = TypeVar("Learner", BaselineSLearner, TLearner)
TS = pl.Datetime("us", "UTC")
CATEGORY_PREFIX = "share_"
CATEGORY_SUFFIX = "_90d"
CHANNELS = ("online", "store", "app")


@dataclass
class RatesTraining:
    """What a rates run produced.

    Attributes:
        response: the fitted S-learners.
        data: the exposures used (train and held-out test).
        qini: Qini and AUUC per learner, outcome and rate level (held-out exposures).
        ope: value per exposure of each policy by each estimator, with intervals.
        customers: per customer: segment, rate, value, cost and the reason.
        choice: the budgeted choice.
        values: each customer's value and cost of every rate (rows as `customers`).
        card: the segment x category rate card.
        fairness: the average rate by each excluded attribute.
        metrics: every figure logged.
        close: the close the policy is as of.
        held_out: the held-out exposures (`data.test`) as OPE's logged data.
        held_out_rates: our policy's rate (grid index) for each held-out exposure.
        paths: the files written, by name.
        version: the registered model version (`cashback-rates`), when registered.
    """

    response: RateResponse
    data: RateData
    qini: pl.DataFrame
    ope: pl.DataFrame
    customers: pl.DataFrame
    choice: PolicyChoice
    values: RateValues
    card: pl.DataFrame
    fairness: pl.DataFrame
    metrics: dict[str, float]
    close: datetime
    held_out: LoggedData
    held_out_rates: np.ndarray
    paths: dict[str, Path] = field(default_factory=dict)
    version: str | None = None


def _learner_params(config: RateSettings) -> dict[str, float | int]:
    return {
        "n_estimators": config.n_estimators,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
        "seed": config.seed,
    }


def _learner(kind: type[Learner], config: RateSettings, objective: str) -> Learner:
    """A learner with the configured LightGBM parameters (the rate-effect stage's too)."""
    learner = kind(
        objective=objective,
        n_estimators=config.n_estimators,
        learning_rate=config.learning_rate,
        num_leaves=config.num_leaves,
        min_child_samples=config.min_child_samples,
        seed=config.seed,
    )
    if isinstance(learner, BaselineSLearner):
        learner.set_params(
            effect_num_leaves=config.effect_num_leaves,
            effect_min_child_samples=config.effect_min_child_samples,
            effect_n_estimators=config.effect_n_estimators,
            resamples=config.resamples,
        )
    return learner


def _targets(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "margin": frame["margin"].to_numpy(),
        "paid_spend": frame["paid_spend"].to_numpy(),
        "spend": frame["spend"].to_numpy(),
        "purchased": (frame["purchases"] > 0).cast(pl.Float64).to_numpy(),
    }


def _sample(frame: pl.DataFrame, config: RateSettings) -> pl.DataFrame:
    if frame.height <= config.max_training_exposures:
        return frame
    return frame.sample(config.max_training_exposures, seed=config.seed).sort("ts")


def fit_response(data: RateData, settings: Settings) -> RateResponse:
    """One monotone S-learner per outcome, boosted from a baseline (`BaselineSLearner`).

    Its rate trees learn from propensity-balanced resamples of the training exposures, so
    the logging policy's confounding by segment does not reach them.
    """
    config = settings.rates
    train = _sample(data.train, config)
    x, rate = matrix(train, data.features), train["rate"].to_numpy()
    propensity = train["propensity"].to_numpy()
    learners: dict[str, object] = {}
    for outcome, y in _targets(train).items():
        learner: BaselineSLearner = _learner(BaselineSLearner, config, OUTCOME_OBJECTIVES[outcome])
        learners[outcome] = learner.fit(x, rate, y, propensity=propensity)
    return RateResponse(
        data.features,
        config.grid,
        settings.default_rate,
        learners,
        {
            **_learner_params(config),
            "effect_num_leaves": config.effect_num_leaves,
            "effect_min_child_samples": config.effect_min_child_samples,
            "effect_n_estimators": config.effect_n_estimators,
            "resamples": config.resamples,
            "training_exposures": train.height,
        },
    )


def _qini(data: RateData, response: RateResponse, settings: Settings) -> pl.DataFrame:
    """Qini and AUUC per rate against 0 % on held-out exposures, S- and T-learner."""
    config = settings.rates
    train = _sample(data.train, config)
    test = data.test
    x_test = matrix(test, data.features)
    grid = np.asarray(config.grid)
    rows = []
    t_learner = _learner(TLearner, config, "tweedie").fit(
        matrix(train, data.features),
        train["rate"].to_numpy(),
        train["spend"].to_numpy(),
        sample_weight=1.0 / train["propensity"].to_numpy(),
    )
    predictions = {
        "s_learner": response.predict("spend", x_test),
        "t_learner": np.asarray(t_learner.predict_grid(x_test, grid)),
    }
    base = int(np.argmin(np.abs(grid)))
    for learner, predicted in predictions.items():
        uplift = {
            float(r): predicted[:, k] - predicted[:, base] for k, r in enumerate(grid) if k != base
        }
        scores = qini_by_level(
            test["spend"].to_numpy(),
            test["rate"].to_numpy(),
            uplift,
            weights=1.0 / test["propensity"].to_numpy(),
        )
        rows += [
            {
                "learner": learner,
                "outcome": "spend",
                "rate": r,
                # areas above the random line, per exposure: comparable across levels
                "qini": (s.qini_area - s.qini_area_random) / s.size,
                "auuc": (s.uplift_area - s.uplift_area_random) / s.size,
            }
            for r, s in scores.items()
        ]
    return pl.DataFrame(rows)


def _logged(test: pl.DataFrame, values: RateValues, grid: np.ndarray) -> LoggedData:
    action = np.searchsorted(grid, test["rate"].to_numpy() - 1e-12).astype(np.int64)
    _, cluster = np.unique(test["customer_id"].to_numpy(), return_inverse=True)
    return LoggedData(
        reward=test["net_margin"].to_numpy(),
        action=action,
        propensity=test["propensity"].to_numpy(),
        cluster=cluster.astype(np.int64),
        q=values.net,
    )


def held_out_policy(
    data: RateData,
    response: RateResponse,
    shares: pl.DataFrame,
    multiplier: float,
    settings: Settings,
) -> tuple[LoggedData, np.ndarray]:
    """The held-out exposures as logged data, and our policy's rate for each.

    Args:
        data: the exposures (`data.test` are the held-out ones).
        response: the fitted response (its net margin is DR's reward model).
        shares: each customer's fraud share (`fraud_share`).
        multiplier: the budget's Lagrange multiplier.
        settings: service settings (rates grid, min and max rates).

    Returns:
        The logged data (rows as `data.test`) and our policy's grid index per exposure.
    """
    config = settings.rates
    test = data.test.join(shares, on="customer_id", how="left", maintain_order="left")
    values = response.values(
        matrix(test, data.features), test["fraud_share"].fill_null(0.0).to_numpy()
    )
    grid = np.asarray(config.grid)
    allowed = allowed_rates(
        grid, None, min_rate=config.min_rate, max_rate=config.max_rate, segment_caps={}
    )
    ours = rates_at(values.value, values.cost, allowed, multiplier)
    return _logged(test, values, grid), ours


def _ope(
    data: RateData,
    response: RateResponse,
    shares: pl.DataFrame,
    multiplier: float,
    settings: Settings,
) -> tuple[pl.DataFrame, LoggedData, np.ndarray]:
    """IPS / SNIPS / DR of our policy, the logging policy and each uniform rate.

    Returns:
        The estimates, and what they came from (`held_out_policy`).
    """
    config = settings.rates
    logged, ours = held_out_policy(data, response, shares, multiplier, settings)
    grid = np.asarray(config.grid)
    policies = {"personalized": ours} | {
        f"uniform {r:.0%}": np.full(ours.size, k) for k, r in enumerate(grid)
    }
    rows = []
    for name, target in policies.items():
        found = evaluate_policy(
            logged, target, replicates=config.bootstrap_replicates, seed=config.seed
        )
        rows += [
            {"policy": name, "estimator": e, "value": v.value, "low": v.low, "high": v.high}
            for e, v in found.items()
        ]
    logging_value = logged_value(logged, replicates=config.bootstrap_replicates, seed=config.seed)
    rows.append(
        {
            "policy": "logging",
            "estimator": "mean",
            "value": logging_value.value,
            "low": logging_value.low,
            "high": logging_value.high,
        }
    )
    return pl.DataFrame(rows), logged, ours


def _customers_at(
    sources: FeatureSources, close: datetime, settings: Settings, features: tuple[str, ...]
) -> pl.DataFrame:
    """Customers who bought in the year before the close, with features for a flat offer."""
    buyers = (
        sources.transactions.filter(
            pl.col("amount") > 0,
            pl.col("ts") < close,
            pl.col("ts") >= close - timedelta(days=365),
        )
        .select("customer_id")
        .unique()
        .sort("customer_id")
        .with_columns(pl.lit(close).cast(TS).alias("ts"))
    )
    offer = [pl.lit(DEFAULT_OFFER.get(c, 0.0)).alias(c) for c in OFFER_COLUMNS]
    frame = training_frame(sources, buyers, SERVICE, settings.features).with_columns(offer)
    attributes = sources.customers.select("customer_id", *settings.rates.excluded_attributes)
    frame = frame.join(attributes, on="customer_id", how="left", maintain_order="left")
    keep = ["customer_id", *features, *settings.rates.excluded_attributes]
    keep += [] if "lifecycle" in keep else ["lifecycle"]
    return frame.collect().select(keep)


def _segments(settings: Settings, frame: pl.DataFrame) -> pl.Series:
    """Each customer's segment from the customer_scores view, else the lifecycle stage."""
    path = batch_table_path(settings, "customer_scores")
    if path.exists():
        scores = pl.read_parquet(path, columns=["customer_id", "segment"])
        joined = frame.select("customer_id").join(
            scores, on="customer_id", how="left", maintain_order="left"
        )
        if joined["segment"].null_count() < joined.height:
            return joined["segment"].fill_null("unscored")
    return frame["lifecycle"].alias("segment")


def reasons(
    grid: np.ndarray, values: RateValues, choice: PolicyChoice, default_rate: float, days: int
) -> pl.Series:
    """One sentence per customer: the rate, what it is expected to bring, and what capped it."""
    rows = np.arange(choice.choice.size)
    rate = grid[choice.choice]
    value = values.value[rows, choice.choice]
    cost = values.cost[rows, choice.choice]
    unconstrained = np.argmax(values.value, axis=1)
    capped = unconstrained > choice.choice
    frame = pl.DataFrame(
        {
            "rate": rate * 100,
            "value": value,
            "cost": cost,
            "capped": capped,
            "best": grid[unconstrained] * 100,
        }
    )
    head = pl.format(
        "{}% rather than the default {}%: expected margin {} against the default, net of "
        "cashback and fraud; {} of cashback over the {}-day offer",
        pl.col("rate").round(1),
        pl.lit(round(default_rate * 100, 1)),
        pl.col("value").round(2),
        pl.col("cost").round(2),
        pl.lit(days),
    )
    tail = (
        pl.when(pl.col("capped"))
        .then(
            pl.format(
                "; {}% would add more, but less than the budget's threshold per euro",
                pl.col("best").round(1),
            )
        )
        .otherwise(pl.lit(""))
    )
    return frame.select(pl.concat_str(head, tail).alias("reason"))["reason"]


def rate_card(
    frame: pl.DataFrame,
    values: RateValues,
    grid: np.ndarray,
    multiplier: float,
    categories: list[str],
) -> pl.DataFrame:
    """Segment x category rates: the best single rate per cell at the policy's multiplier.

    Each customer counts in a category cell in proportion to their share of spend there
    (90 days), so a cell's value and cost are what its customers' spend there would bring.
    """
    rows = []
    score = values.value - multiplier * values.cost
    for segment in frame["segment"].unique().sort().to_list():
        members = (frame["segment"] == segment).to_numpy()
        for category in categories:
            share = frame[f"{CATEGORY_PREFIX}{category}{CATEGORY_SUFFIX}"].fill_null(0.0)
            weight = share.to_numpy()[members]
            if weight.sum() <= 0:
                continue
            best = int(np.argmax(weight @ score[members]))
            rows.append(
                {
                    "segment": segment,
                    "category": category,
                    "rate": float(grid[best]),
                    "customers": int(members.sum()),
                    "expected_incremental_margin": float(weight @ values.value[members, best]),
                    "expected_cashback": float(weight @ values.cost[members, best]),
                }
            )
    return pl.DataFrame(rows)


def _fairness(frame: pl.DataFrame, rate: np.ndarray, attributes: tuple[str, ...]) -> pl.DataFrame:
    with_rate = frame.with_columns(pl.Series("rate", rate))
    parts = [
        with_rate.group_by(pl.col(a).cast(pl.String).fill_null("unknown").alias("value"))
        .agg(pl.len().alias("customers"), pl.col("rate").mean().alias("average_rate"))
        .with_columns(pl.lit(a).alias("attribute"))
        .select("attribute", "value", "customers", "average_rate")
        for a in attributes
        if a in frame.columns
    ]
    return pl.concat(parts).sort("attribute", "value") if parts else pl.DataFrame()


def policy_at(
    settings: Settings,
    sources: FeatureSources,
    response: RateResponse,
    close: datetime,
    shares: pl.DataFrame,
    budget_share: float | None,
) -> tuple[pl.DataFrame, RateValues, PolicyChoice, float]:
    """The budgeted policy for the customers active at the close.

    Returns:
        The customers (features, attributes, segment), their rate values, the choice and the
        default card's cost (the budget's reference).
    """
    config = settings.rates
    frame = _customers_at(sources, close, settings, response.features)
    frame = frame.with_columns(_segments(settings, frame).alias("segment"))
    share = frame.join(shares, on="customer_id", how="left", maintain_order="left")
    values = response.values(
        matrix(frame, response.features), share["fraud_share"].fill_null(0.0).to_numpy()
    )
    grid = np.asarray(config.grid)
    allowed = allowed_rates(
        grid,
        frame["segment"].to_numpy().astype(str),
        min_rate=config.min_rate,
        max_rate=config.max_rate,
        segment_caps=config.segment_caps,
    )
    default_cost = float(values.cost[:, response.default_index].sum())
    budget = None if budget_share is None else budget_share * default_cost
    return frame, values, choose_rates(values.value, values.cost, allowed, budget), default_cost


def run(
    settings: Settings, *, output_dir: Path | None = None, register: bool = False
) -> RatesTraining:
    """Learn the response, evaluate it on held-out exposures, and set each customer's rate.

    Args:
        settings: service settings (data_dir, rates, features, default rate, exposure days).
        output_dir: where the outputs go (default `<data_dir>/rates`).
        register: log the run to MLflow and register the policy as `cashback-rates`
            (`challenger`), gated off-policy on the held-out exposures.

    Raises:
        CashbackError: without enough randomized exposures, or with a budget that the
            allowed rates cannot meet.
    """
    config = settings.rates
    if not any(abs(r - settings.default_rate) < 1e-12 for r in config.grid):
        msg = f"the default rate {settings.default_rate} is not on the rate grid {config.grid}"
        raise CashbackError(msg)
    sources = FeatureSources.from_directory(settings.data_dir)
    close = latest_close(sources)
    data = rate_data(
        sources,
        settings.data_dir,
        close,
        settings.features,
        excluded=config.excluded_attributes,
        test_share=config.test_share,
    )
    response = fit_response(data, settings)
    qini = _qini(data, response, settings)
    shares = fraud_share(sources, settings.data_dir, settings.data_dir / "scores" / "fraud", close)
    frame, values, choice, default_cost = policy_at(
        settings, sources, response, close, shares, config.budget_share
    )
    ope, held_out, held_out_rates = _ope(data, response, shares, choice.multiplier, settings)
    grid = np.asarray(config.grid)
    rate = grid[choice.choice]
    categories = [
        c.removeprefix(CATEGORY_PREFIX).removesuffix(CATEGORY_SUFFIX)
        for c in frame.columns
        if c.startswith(CATEGORY_PREFIX)
        and c.endswith(CATEGORY_SUFFIX)
        and c.removeprefix(CATEGORY_PREFIX).removesuffix(CATEGORY_SUFFIX) not in CHANNELS
    ]
    rows = np.arange(rate.size)
    customers = frame.select("customer_id", "segment").with_columns(
        pl.Series("rate", rate),
        pl.Series("expected_incremental_margin", values.value[rows, choice.choice]),
        pl.Series("expected_cashback", values.cost[rows, choice.choice]),
        reasons(grid, values, choice, settings.default_rate, settings.exposure_days),
    )
    metrics = _metrics(qini, ope, choice, default_cost, data)
    result = RatesTraining(
        response=response,
        data=data,
        qini=qini,
        ope=ope,
        customers=customers,
        choice=choice,
        values=values,
        card=rate_card(frame, values, grid, choice.multiplier, categories),
        fairness=_fairness(frame, rate, config.excluded_attributes),
        metrics=metrics,
        close=close,
        held_out=held_out,
        held_out_rates=held_out_rates,
    )
    outputs = {
        "customer_rates": result.customers,
        "rate_card": result.card,
        "qini": result.qini,
        "ope": result.ope,
        "fairness": result.fairness,
        "rate_values": values_frame(
            result.customers, values, choice.choice, response.default_index, config
        ),
        # what serving subtracts from a rate's value for each customer (serving/offer_book)
        "fraud_shares": shares.select("customer_id", "fraud_share"),
    }
    for name, frame in outputs.items():
        path = (output_dir or settings.data_dir / "rates") / f"{name}.parquet"
        write_parquet_atomic(frame, path)
        result.paths[name] = path
    if register:
        result.version, gate = _register(settings, result, shares)
        result.metrics |= gate
    return result


def _register(
    settings: Settings, result: RatesTraining, shares: pl.DataFrame
) -> tuple[str, dict[str, float]]:
    """Register the run's policy (response and multiplier) as the `challenger`."""
    from models.rates.lifecycle import (  # noqa: PLC0415 - MLflow is slow to import
        PolicyParams,
        evaluation_frame,
        register_rates,
    )

    config = settings.rates
    features = result.response.features
    test = result.data.test.join(shares, on="customer_id", how="left", maintain_order="left")
    test = test.with_columns(pl.col("fraud_share").fill_null(0.0))
    outcomes = ["rate", "propensity", *_targets(result.data.train)]
    training = _sample(result.data.train, config).select(
        *features, *(c for c in outcomes if c in result.data.train.columns)
    )
    params = PolicyParams(
        min_rate=config.min_rate,
        max_rate=config.max_rate,
        segment_caps=dict(config.segment_caps),
        multiplier=result.choice.multiplier,
    )
    return register_rates(
        settings,
        result.response,
        params,
        training=training,
        evaluation=evaluation_frame(test, features),
        metrics=result.metrics,
    )


def _metrics(
    qini: pl.DataFrame,
    ope: pl.DataFrame,
    choice: PolicyChoice,
    default_cost: float,
    data: RateData,
) -> dict[str, float]:
    metrics = {
        "train_exposures": float(data.train.height),
        "test_exposures": float(data.test.height),
        "policy_value": choice.value,
        "policy_cost": choice.cost,
        "default_card_cost": default_cost,
        "multiplier": choice.multiplier,
    }
    for row in qini.iter_rows(named=True):
        key = f"{row['learner']}_{row['outcome']}_{round(row['rate'] * 100, 1)}pct"
        metrics[f"{key}_qini"] = row["qini"]
        metrics[f"{key}_auuc"] = row["auuc"]
    for row in ope.iter_rows(named=True):
        key = f"ope_{row['policy'].replace(' ', '_').replace('%', 'pct')}_{row['estimator']}"
        metrics[key] = row["value"]
    return metrics
