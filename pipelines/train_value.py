"""`cashback train clv`: expected spend over the next H_v days, and the next purchase date.

On the time split (history before the snapshot s = end - H_v, actual spend in [s, s + H_v)):
- BG/NBD x Gamma-Gamma, fitted on the history only (no labels);
- a LightGBM regressor (Tweedie: spend is zero for many customers) on the churn_v1
  features and the BG/NBD quantities, cross-fitted by customer (each customer's prediction
  comes from a model that never saw that customer), so its errors are out of sample;
- the baseline: each customer's spend over the H_v days before s.
MAE and Spearman correlation against the actual spend, for all three; and the expected
date of the next purchase (BG/NBD: the median time to the next purchase of a customer still
active, for customers more likely alive than not), with its median error in days where a
purchase happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import CustomerModelSettings, Settings
from features.catalog import service_features
from features.customer_frame import FeatureSources
from features.training import training_frame
from features.windows import Latest, window_aggregates
from models.customers.bgnbd import rfm_summary
from models.customers.gamma_gamma import GammaGammaModel
from models.customers.snapshots import KEY
from models.customers.value import ValueModel, fit_value, value_metrics
from models.fraud.dataset import encode
from pipelines.build_features import latest_close
from pipelines.train_churn import fit_bgnbd

SERVICE = "churn_v1"
FOLDS = 5
COLUMNS = ("bgnbd_expected_purchases", "bgnbd_p_alive", "gamma_gamma_spend")


@dataclass
class ValueTraining:
    """What a value run produced.

    Attributes:
        snapshot: the split time.
        horizon: H_v.
        metrics: MAE and Spearman of each predictor, next-purchase error.
        customers: per customer: actual and predicted spend, expected next purchase.
        model: the LightGBM model fitted on every customer outside the evaluation fold.
        version: the registered version of `cashback-clv` (None when not registered).
    """

    snapshot: datetime
    horizon: timedelta
    metrics: dict[str, float]
    customers: pl.DataFrame
    model: ValueModel
    version: str | None = None


def _snapshot(first: datetime, end: datetime, horizon: timedelta) -> datetime:
    snapshot = (end - horizon).replace(hour=0, minute=0, second=0, microsecond=0)
    if snapshot - first < horizon / 2:
        msg = (
            f"too little history for a {horizon.days}-day value horizon: the data run from "
            f"{first:%Y-%m-%d} to {end:%Y-%m-%d} (the split at {snapshot:%Y-%m-%d} needs "
            "history before it; shorten CASHBACK_CUSTOMERS__VALUE_HORIZON_DAYS)"
        )
        raise CashbackError(msg)
    return snapshot


def _spend(purchases: pl.LazyFrame, rows: pl.LazyFrame, horizon: timedelta) -> pl.LazyFrame:
    """Spend (and purchases) over the `horizon` before each row's close_ts."""
    return window_aggregates(
        purchases,
        KEY,
        rows,
        sums={"s": (pl.col("amount") * 100).round(0).cast(pl.Int64)},
        windows={"h": horizon},
        latest={"first_ts": Latest(pl.col("ts"))},
    )


def value_columns(purchases: pl.LazyFrame, snapshot: datetime, horizon_days: int) -> pl.DataFrame:
    """BG/NBD and Gamma-Gamma fitted on the purchases before `snapshot`, per customer.

    Returns:
        customer_id (customers with a purchase before the snapshot), expected purchases and
        expected spend over `horizon_days`, the probability alive, and the expected days to
        the next purchase (null when the customer is more likely gone than alive).
    """
    summary = rfm_summary(purchases, snapshot, value="amount")
    f, r, t = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    monetary = summary["monetary_value"].fill_null(0.0).to_numpy()
    bgnbd = fit_bgnbd(f, r, t, snapshot)
    spend = GammaGammaModel().fit(f, monetary)
    x = f + bgnbd.params[0]
    median_wait = (bgnbd.params[1] + t) * (np.power(2.0, 1.0 / x) - 1.0)
    alive = bgnbd.probability_alive(f, r, t)
    return (
        summary.select(KEY)
        .with_columns(
            pl.Series(COLUMNS[0], bgnbd.expected_purchases(horizon_days, f, r, t)),
            pl.Series(COLUMNS[1], alive),
            pl.Series(COLUMNS[2], spend.expected_spend(bgnbd, horizon_days, f, r, t, monetary)),
            pl.Series("next_purchase_days", np.where(alive >= 0.5, median_wait, np.nan)),
        )
        .with_columns(pl.col("next_purchase_days").fill_nan(None))
    )


def _cross_fitted(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, config: CustomerModelSettings
) -> np.ndarray:
    """Out-of-fold Tweedie LightGBM predictions (one row per customer, folds by customer)."""
    out = np.empty(len(y))
    names = [f"f{i}" for i in range(x.shape[1])]
    for k in range(FOLDS):
        held = folds == k
        out[held] = fit_value(config, names, x[~held], y[~held]).spend(x[held])
    return out


def run(settings: Settings, *, register: bool = True) -> ValueTraining:
    """Fit and compare the value predictors on the time split; register the LightGBM model.

    The comparison uses cross-fitted predictions for every customer. The registered model is
    fitted on the customers outside fold 0 and its gate metrics (`mae`, `spearman`) are
    measured on fold 0, which it never saw: that fold is the run's evaluation set.

    Args:
        settings: service settings (data_dir, customers, features, models).
        register: log to MLflow and register as `cashback-clv` challenger.

    Returns:
        The split, the metrics, per-customer predictions, the model and its version.

    Raises:
        CashbackError: when the data are shorter than the horizon allows.
    """
    config = settings.customers
    horizon = timedelta(days=config.value_horizon_days)
    sources = FeatureSources.from_directory(settings.data_dir)
    purchases = sources.transactions.filter(pl.col("amount") > 0).select(KEY, "ts", "amount")
    first = purchases.select(pl.col("ts").min()).collect().item()
    end = latest_close(sources)
    snapshot = _snapshot(first, end, horizon)
    customers = purchases.filter(pl.col("ts") < snapshot).select(KEY).unique()
    at = customers.with_columns(pl.lit(snapshot).cast(pl.Datetime("us", "UTC")).alias("close_ts"))
    later = at.with_columns(pl.col("close_ts") + horizon)
    frame = (
        training_frame(sources, at.rename({"close_ts": "ts"}), SERVICE, settings.features)
        .join(
            _spend(purchases, at, horizon).select(KEY, pl.col("s@h").alias("last_period")), on=KEY
        )
        .join(_spend(purchases, later, horizon).select(KEY, pl.col("s@h").alias("actual")), on=KEY)
        .collect()
        .join(value_columns(purchases, snapshot, config.value_horizon_days), on=KEY, how="left")
        .with_columns(pl.col("last_period", "actual") / 100)
        .sort(KEY)  # a stable row order: the same data give the same model
    )
    features = [*service_features(SERVICE, settings.features), *COLUMNS]
    actual = frame["actual"].to_numpy()
    folds = (frame[KEY].hash(seed=config.seed) % FOLDS).to_numpy()
    lightgbm = _cross_fitted(encode(frame, features), actual, folds, config)
    frame = frame.with_columns(pl.Series("lightgbm_spend", lightgbm))
    metrics = (
        value_metrics(actual, frame["last_period"].to_numpy(), "last_period")
        | value_metrics(actual, frame[COLUMNS[2]].fill_null(0.0).to_numpy(), "gamma_gamma")
        | value_metrics(actual, lightgbm, "lightgbm")
    )
    metrics |= _next_purchase_error(purchases, frame, snapshot)
    metrics["customers"] = float(frame.height)
    held = folds == 0
    x = encode(frame, features)
    model = fit_value(config, features, x[~held], actual[~held])
    found = value_metrics(actual[held], model.spend(x[held]), "gate")
    metrics |= {k.removeprefix("gate_"): v for k, v in found.items()}
    keep = [KEY, "actual", "last_period", COLUMNS[2], "lightgbm_spend", "next_purchase_days"]
    result = ValueTraining(snapshot, horizon, metrics, frame.select(keep), model)
    if register:
        from models.customers.value_lifecycle import register_value  # noqa: PLC0415 - MLflow

        result.version = register_value(
            settings,
            model,
            training=frame.filter(pl.Series(~held)),
            evaluation=frame.filter(pl.Series(held)),
            metrics=metrics,
            snapshot=snapshot.isoformat(),
        )
    return result


def _next_purchase_error(
    purchases: pl.LazyFrame, frame: pl.DataFrame, snapshot: datetime
) -> dict[str, float]:
    """Median absolute error (days) of the expected next purchase, where one happened."""
    first_after = (
        purchases.filter(pl.col("ts") >= snapshot)
        .group_by(KEY)
        .agg(((pl.col("ts").min() - snapshot).dt.total_seconds() / 86_400).alias("waited"))
        .collect()
    )
    both = frame.join(first_after, on=KEY).drop_nulls("next_purchase_days")
    if both.height == 0:
        return {}
    error = (both["next_purchase_days"] - both["waited"]).abs()
    median = error.median()
    return {"next_purchase_median_abs_error_days": float(median) if median is not None else 0.0}  # type: ignore[arg-type]
