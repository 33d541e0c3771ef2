"""`cashback train churn`: the churn model against the BG/NBD baseline, on snapshots.

One straight line:
1. plan the snapshots (monthly training snapshots, a calibration snapshot, the validation
   snapshot: every training label window ends before the validation snapshot);
2. the scored population of each snapshot and its label (no purchase in the next H days);
3. point-in-time features (feature service churn_v1) as of each snapshot, and the BG/NBD
   model fitted on the purchases before each snapshot (its expected purchases and
   probability alive are features; its probability of no purchase in (T, T + H] is the
   baseline);
4. LightGBM trained on the training snapshots, calibrated on the calibration snapshot;
5. ROC-AUC, PR-AUC, Brier score and top-decile lift on the validation snapshot for both;
6. logged to MLflow and registered as `cashback-churn` (challenger).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from features.catalog import service_features
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.customers.bgnbd import BetaGeoModel, ConvergenceError, rfm_summary
from models.customers.churn import ChurnModel, churn_metrics, fit_churn
from models.customers.snapshots import KEY, ROLE, SnapshotPlan, plan, population
from models.fraud.dataset import encode
from pipelines.build_features import latest_close

SERVICE = "churn_v1"
BGNBD_FEATURES = ("bgnbd_expected_purchases", "bgnbd_p_alive")
BASELINE = "bgnbd_p_no_purchase"
FIT_TOLERANCES = (1e-12, 1e-9)


@dataclass
class ChurnTraining:
    """What a churn training run produced.

    Attributes:
        model: the fitted model.
        snapshots: the plan.
        metrics: the model's and the baseline's metrics on the validation snapshot.
        validation: the validation snapshot's customers with label, probability and baseline.
        version: the registered version (None when not registered).
    """

    model: ChurnModel
    snapshots: SnapshotPlan
    metrics: dict[str, float]
    validation: pl.DataFrame
    version: str | None = None


def _purchases(sources: FeatureSources) -> pl.LazyFrame:
    return sources.transactions.filter(pl.col("amount") > 0).select(KEY, "ts", "amount")


def fit_bgnbd(
    frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, snapshot: datetime
) -> BetaGeoModel:
    """BG/NBD by maximum likelihood; a looser tolerance when the optimum lies on a flat ridge.

    Early in a program dropout is barely visible: a and b grow together along a ridge of
    equal likelihood, and the strictest tolerance stops short of a declared convergence.
    """
    problem: ConvergenceError | None = None
    for tol in FIT_TOLERANCES:
        try:
            return BetaGeoModel(tol=tol).fit(frequency, recency, age)
        except ConvergenceError as error:
            problem = error
    msg = f"BG/NBD cannot be fitted on the purchases before {snapshot:%Y-%m-%d}: {problem}"
    raise CashbackError(msg)


def bgnbd_columns(purchases: pl.LazyFrame, snapshot: datetime, horizon_days: int) -> pl.DataFrame:
    """BG/NBD fitted on the purchases before a snapshot, and its per-customer quantities.

    Returns:
        customer_id, ts (the snapshot), expected purchases in the next `horizon_days`, the
        probability alive and the probability of no purchase in (T, T + horizon].
    """
    summary = rfm_summary(purchases, snapshot)
    f, r, t = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    model = fit_bgnbd(f, r, t, snapshot)
    return summary.select(KEY).with_columns(
        pl.lit(snapshot).cast(pl.Datetime("us", "UTC")).alias("ts"),
        pl.Series(BGNBD_FEATURES[0], model.expected_purchases(horizon_days, f, r, t)),
        pl.Series(BGNBD_FEATURES[1], model.probability_alive(f, r, t)),
        pl.Series(BASELINE, model.probability_no_purchase(horizon_days, f, r, t)),
    )


def _frame(settings: Settings, sources: FeatureSources, snapshots: SnapshotPlan) -> pl.DataFrame:
    """Every snapshot's population with labels, features and the BG/NBD columns."""
    purchases = _purchases(sources)
    rows = population(purchases, snapshots, settings.customers).collect()
    frame = training_frame(sources, rows.lazy(), SERVICE, settings.features).collect()
    horizon = settings.customers.churn_horizon_days
    bgnbd = pl.concat(
        [bgnbd_columns(purchases, s, horizon) for s in snapshots.roles()], how="vertical"
    )
    return frame.join(bgnbd, on=[KEY, "ts"], how="left", maintain_order="left")


def _matrix(frame: pl.DataFrame, features: list[str], role: str) -> tuple[np.ndarray, np.ndarray]:
    part = frame.filter(pl.col(ROLE) == role)
    return encode(part, features), part["churned"].to_numpy().astype(np.int8)


def run(
    settings: Settings, *, snapshot: datetime | None = None, register: bool = True
) -> ChurnTraining:
    """Train, evaluate and (by default) register the churn model.

    Args:
        settings: service settings (data_dir, customers, features).
        snapshot: the validation snapshot (default: the latest the data allows).
        register: log to MLflow and register as challenger.

    Returns:
        The model, the snapshot plan, the metrics and the scored validation snapshot.
    """
    config = settings.customers
    sources = FeatureSources.from_directory(settings.data_dir)
    first = _purchases(sources).select(pl.col("ts").min()).collect().item()
    snapshots = plan(first, latest_close(sources), config.churn_horizon_days, config, snapshot)
    frame = _frame(settings, sources, snapshots)
    features = [*service_features(SERVICE, settings.features), *BGNBD_FEATURES]
    model = fit_churn(
        config,
        features,
        _matrix(frame, features, "train"),
        _matrix(frame, features, "calibration"),
    )
    x, y = _matrix(frame, features, "validation")
    validation = frame.filter(pl.col(ROLE) == "validation").with_columns(
        pl.Series("probability", model.probability(x))
    )
    metrics = churn_metrics(y, validation["probability"].to_numpy(), "model") | churn_metrics(
        y, validation[BASELINE].to_numpy(), "bgnbd"
    )
    metrics["validation_customers"] = float(len(y))
    metrics["validation_churn_rate"] = float(y.mean())
    result = ChurnTraining(model, snapshots, metrics, validation)
    if register:
        from models.customers.lifecycle import register_churn  # noqa: PLC0415 - MLflow is slow

        result.version = register_churn(settings, result, frame)
    return result
