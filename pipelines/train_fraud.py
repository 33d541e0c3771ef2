"""`cashback train fraud`: train, calibrate, evaluate and register the claim risk model.

One straight line:
1. labels known at the cut-off (all of them when trained now), mature claims only, split by
   claim time;
2. point-in-time features of every mature claim (feature service fraud_v1);
3. the anomaly scorer on the training slice; LightGBM learning known frauds against every
   other mature claim of the training slice (positive-unlabelled learning: unlabelled claims
   are not taken as legit; the score ranks), early-stopped on the validation slice; Platt
   calibration on the calibration slice's audit sample, which turns the score into the
   probability of fraud;
4. decision thresholds from the calibration slice (review capacity, review cost, block
   precision);
5. metrics on the test slice, for the model and two baselines (the rules alone, the anomaly
   score alone), on the audit sample, on every labelled claim and, in the simulator, on the
   truth; per abuse type; the threshold report;
6. the model, its metrics, plots and evaluation set logged to MLflow and registered as
   `cashback-fraud` with the alias `challenger`.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import FraudSettings, Settings
from cashback.tables import present_tables, read_table
from cashback.vocab import LabelSource
from features.catalog import service_features
from features.customer_frame import FeatureSources
from features.training import training_frame
from models.fraud.artifacts import save_model
from models.fraud.dataset import (
    LABEL,
    SOURCE,
    SPLIT,
    Periods,
    audited,
    claim_labels,
    encode,
    periods,
)
from models.fraud.decisions import Thresholds, thresholds
from models.fraud.metrics import brier, ranking_metrics, wilson
from models.fraud.model import (
    ANOMALY_FEATURE,
    MIN_CALIBRATION_FRAUDS,
    FraudModel,
    fit_anomaly,
    fit_booster,
    fit_calibrator,
)
from models.fraud.rules import RuleSet, load_rules
from models.fraud.scorer import FraudScorer, flagged

SERVICE = "fraud_v1"
TRUTH = "is_fraud"
TRUE_TYPE = "true_abuse_type"
SCORES = {"model": "probability", "rules": "rule_score", "anomaly": "anomaly_score"}


@dataclass
class FraudTraining:
    """What a training run produced.

    Attributes:
        scorer: the fitted model, thresholds and rules, ready to score.
        metrics: every metric logged (test slice).
        periods: the cut-off and split points.
        test: the test slice's claims, scored (with truth columns in the simulator).
        thresholds: decision thresholds.
        version: the registered model version (None when not registered).
        report: the threshold report rows.
        labels: the mature claims it learned and was judged from that carry a label by the
            cut-off: claim_id, split, label (1 fraud, 0 legit), label_source.
    """

    scorer: FraudScorer
    metrics: dict[str, float]
    periods: Periods
    test: pl.DataFrame
    thresholds: Thresholds
    version: str | None = None
    report: list[dict[str, Any]] = field(default_factory=list)
    labels: pl.DataFrame = field(default_factory=pl.DataFrame)


def configured_rules(settings: Settings, rules_path: Path | None = None) -> RuleSet:
    """The rules file given, else the configured one (`CASHBACK_FRAUD__RULES_FILE`)."""
    path = rules_path or settings.fraud.rules_file
    return load_rules(path) if path else RuleSet.empty()


def _truth(directory: Path) -> pl.LazyFrame | None:
    path = directory / "truth" / "claims.parquet"
    if not path.exists():
        return None
    return pl.scan_parquet(path).select("claim_id", TRUTH, pl.col("abuse_type").alias(TRUE_TYPE))


def _claims(
    settings: Settings, sources: FeatureSources, cutoff: datetime | None
) -> tuple[pl.DataFrame, Periods]:
    """Mature claims with their labels (if known by the cut-off) and split."""
    directory = settings.data_dir
    if "claim_labels" not in present_tables(directory):
        msg = f"{directory}: no claim_labels table; the fraud model learns from labelled claims"
        raise CashbackError(msg)
    span = sources.claims.select(pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b"))
    first, last = span.collect().row(0)
    if first is None:
        msg = f"{directory}: the claims table is empty"
        raise CashbackError(msg)
    config = settings.fraud
    split_at = periods(
        first,
        cutoff or last,
        timedelta(days=config.maturity_days),
        (config.validation_share, config.calibration_share, config.test_share),
    )
    # trained now (no cut-off given), every label of the table is known: reviews decided
    # after the last claim count; a past cut-off sees only the labels decided by then
    labels = claim_labels(read_table(directory, "claim_labels"), cutoff)
    claims = (
        sources.claims.filter(pl.col("ts") < split_at.mature_until)
        .join(labels, on="claim_id", how="left", maintain_order="left")
        .with_columns(split_at.split())
    )
    truth = _truth(directory)
    if truth is not None:
        claims = claims.join(truth, on="claim_id", how="left", maintain_order="left")
    frame = training_frame(sources, claims, SERVICE, settings.features).collect()
    return frame, split_at


def _number(value: object) -> float:
    """A polars scalar (mean, sum) as a float; nan for null."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _rows(frame: pl.DataFrame, condition: pl.Expr) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return frame.select(condition.fill_null(value=False)).to_series().to_numpy()


def _calibration_rows(frame: pl.DataFrame) -> tuple[pl.Expr, str]:
    """Which claims calibrate: the calibration slice's audit sample, widened if too thin."""
    audit = audited(pl.col(SOURCE))
    in_calibration = pl.col(SPLIT) == "calibration"
    frauds = frame.filter(in_calibration & audit & (pl.col(LABEL) == 1)).height
    if frauds >= MIN_CALIBRATION_FRAUDS:
        return in_calibration & audit, "calibration slice, audit sample"
    widened = pl.col(SPLIT).is_in(["validation", "calibration"]) & audit
    if frame.filter(widened & (pl.col(LABEL) == 1)).height > 0:
        return widened, "validation and calibration slices, audit sample"
    labelled = in_calibration & pl.col(LABEL).is_not_null()
    return labelled, "calibration slice, every labelled claim (no audit sample: biased)"


def fit(settings: Settings, frame: pl.DataFrame, split_at: Periods, rules: RuleSet) -> FraudScorer:
    """The anomaly scorer, the booster, the calibrator and the thresholds."""
    config = settings.fraud
    features = service_features(SERVICE, settings.features)
    x = encode(frame, features)
    train = _rows(frame, pl.col(SPLIT) == "train")
    anomaly = fit_anomaly(config, x[train])
    full = np.column_stack([x, anomaly.score(x)])
    names = [*features, ANOMALY_FEATURE]
    label = frame[LABEL].fill_null(-1).to_numpy().astype(np.int8)
    # positive-unlabelled learning: the booster learns "known fraud" against every other
    # mature claim (audited legit, or not known to be fraud by the cut-off); unlabelled
    # claims are not called legit, the calibration on the audit sample maps the score to
    # the probability of fraud (Elkan & Noto 2008)
    known_fraud = (label == 1).astype(np.int8)
    validation = _rows(frame, pl.col(SPLIT) == "validation")
    booster = fit_booster(
        config,
        names,
        (full[train], known_fraud[train]),
        (full[validation], known_fraud[validation]),
    )
    margin = np.asarray(booster.predict(full, raw_score=True))
    condition, fitted_on = _calibration_rows(frame)
    rows = _rows(frame, condition)
    calibrator = fit_calibrator(margin[rows], label[rows], fitted_on)
    typical = {name: float(np.nanmedian(full[train, i])) for i, name in enumerate(names)}
    model = FraudModel(
        features, booster, anomaly, calibrator, typical, _params(config, booster, split_at)
    )
    in_calibration = _rows(frame, pl.col(SPLIT) == "calibration")
    _, calibration_start, test_start = split_at.bounds
    limits = thresholds(
        calibrator.probability(margin[in_calibration]),
        frame["cashback_amount"].to_numpy()[in_calibration],
        test_start - calibration_start,
        config,
    )
    return FraudScorer(model, limits, rules)


def _params(config: FraudSettings, booster: lgb.Booster, split_at: Periods) -> dict[str, Any]:
    return {
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "best_iteration": booster.best_iteration,
        "maturity_days": config.maturity_days,
        "cutoff": split_at.cutoff.isoformat(),
        "mature_until": split_at.mature_until.isoformat(),
        "validation_start": split_at.bounds[0].isoformat(),
        "calibration_start": split_at.bounds[1].isoformat(),
        "test_start": split_at.bounds[2].isoformat(),
    }


def rule_score() -> pl.Expr:
    """The rules alone as a score: hits, and a block above any number of review hits."""
    block = (pl.col("rule_action") == "block").cast(pl.Float64) * 100
    return (block + pl.col("rule_hits").list.len().cast(pl.Float64)).alias("rule_score")


def review_share(frame: pl.DataFrame) -> float:
    """Twice the fraud prevalence estimated on the mature audit sample (0.04 at 2 %)."""
    audit = frame.filter(audited(pl.col(SOURCE)))
    if audit.height == 0:
        labelled = frame.filter(pl.col(LABEL).is_not_null())
        prevalence = _number(labelled[LABEL].mean()) if labelled.height else 0.02
    else:
        prevalence = _number(audit[LABEL].mean())
    return min(max(2 * prevalence, 0.001), 1.0)


def _set_metrics(test: pl.DataFrame, share: float) -> dict[str, float]:
    """Model and baselines on the audit sample, labelled claims and the truth."""
    sets = {
        "audit": (audited(pl.col(SOURCE)), LABEL),
        "labelled": (pl.col(LABEL).is_not_null(), LABEL),
    }
    if TRUTH in test.columns:
        sets["truth"] = (pl.lit(value=True), TRUTH)
    metrics: dict[str, float] = {}
    for set_name, (condition, label_column) in sets.items():
        rows = test.filter(condition)
        label = rows[label_column].cast(pl.Int8).to_numpy()
        for score_name, column in SCORES.items():
            found = ranking_metrics(label, rows[column].to_numpy(), share, set_name)
            prefix = "" if score_name == "model" else f"{score_name}_"
            metrics |= {f"{prefix}{k}": v for k, v in found.items()}
        metrics[f"{set_name}_brier"] = brier(label, rows["probability"].to_numpy())
    return metrics


def _abuse_metrics(test: pl.DataFrame, scorer: FraudScorer, share: float) -> dict[str, float]:
    """Recall per true abuse type at the review share, and abuse type accuracy (simulator)."""
    if TRUTH not in test.columns:
        return {}
    cut = test["probability"].sort(descending=True)[max(int(share * test.height) - 1, 0)]
    top = test.with_columns((pl.col("probability") >= cut).alias("__top"))
    frauds = top.filter(pl.col(TRUTH))
    metrics = {
        f"truth_recall_at_review_{row[TRUE_TYPE]}": _number(row["recall"])
        for row in frauds.group_by(TRUE_TYPE)
        .agg(pl.col("__top").mean().alias("recall"))
        .iter_rows(named=True)
        if row[TRUE_TYPE] is not None
    }
    caught = frauds.filter(pl.col("__top"))
    if caught.height:
        explained = scorer.explain_frame(caught)
        predicted = pl.Series([e.abuse_type for e in explained])
        metrics["truth_abuse_type_accuracy"] = _number((predicted == caught[TRUE_TYPE]).mean())
    return metrics


def threshold_report(test: pl.DataFrame) -> list[dict[str, Any]]:
    """For review and block: claims, precision, recall, cashback caught, honest customers hit.

    Precision and recall come from the audit sample (with a 95 % Wilson interval) and, in the
    simulator, from the truth.
    """
    report = []
    for decision, condition in {
        "review or block": flagged(pl.col("decision")),
        "block": pl.col("decision") == "block",
    }.items():
        chosen = test.with_columns(condition.alias("__hit"))
        row: dict[str, Any] = {
            "decision": decision,
            "claims": int(chosen["__hit"].sum()),
            "share": _number(chosen["__hit"].mean()),
        }
        audit = chosen.filter(audited(pl.col(SOURCE)))
        hits = audit.filter(pl.col("__hit"))
        frauds = audit.filter(pl.col(LABEL) == 1)
        row["audit_precision"] = _number(hits[LABEL].mean())
        row["audit_precision_ci"] = wilson(int(hits[LABEL].sum()), hits.height)
        row["audit_recall"] = _number(frauds["__hit"].mean())
        row["audit_recall_ci"] = wilson(int(frauds["__hit"].sum()), frauds.height)
        if TRUTH in test.columns:
            hit = chosen.filter(pl.col("__hit"))
            true_frauds = chosen.filter(pl.col(TRUTH))
            row["truth_precision"] = _number(hit[TRUTH].mean())
            row["truth_recall"] = _number(true_frauds["__hit"].mean())
            row["cashback_caught"] = _number(hit.filter(pl.col(TRUTH))["cashback_amount"].sum())
            row["honest_customers_hit"] = hit.filter(~pl.col(TRUTH))["customer_id"].n_unique()
        report.append(row)
    return report


def evaluate(scorer: FraudScorer, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, float]]:
    """Score the test slice; metrics of the model and the baselines."""
    test = scorer.score_frame(frame.filter(pl.col(SPLIT) == "test")).with_columns(rule_score())
    share = review_share(frame.filter(pl.col(SPLIT).is_not_null()))
    metrics = _set_metrics(test, share) | _abuse_metrics(test, scorer, share)
    metrics["review_share"] = share
    metrics["test_claims"] = float(test.height)
    return test, metrics


def labelled_claims(frame: pl.DataFrame) -> pl.DataFrame:
    """The claims of the training frame that carry a label, with their split and source."""
    return frame.filter(pl.col(LABEL).is_not_null()).select("claim_id", SPLIT, LABEL, SOURCE)


def label_counts(labels: pl.DataFrame) -> dict[str, float]:
    """Labelled claims by source (`labels_review`, ...); a claim counts for each source."""
    counts = labels.select(
        pl.col(SOURCE).str.contains(source.value).sum().alias(f"labels_{source.value}")
        for source in LabelSource
    )
    return {name: float(value) for name, value in counts.row(0, named=True).items()}


def run(
    settings: Settings,
    *,
    cutoff: datetime | None = None,
    rules_path: Path | None = None,
    register: bool = True,
) -> FraudTraining:
    """Train, evaluate and (by default) register the fraud model.

    Args:
        settings: service settings (data_dir, fraud, features, models).
        cutoff: train as of this time: labels decided by it, claims mature by it (default:
            every label of the table, claims mature by the last claim's time).
        rules_path: rules evaluated with the model (default: the setting).
        register: log to MLflow and register the model as challenger.

    Returns:
        The fitted scorer, the metrics, the scored test slice and the registered version.
    """
    sources = FeatureSources.from_directory(settings.data_dir)
    frame, split_at = _claims(settings, sources, cutoff)
    rules = configured_rules(settings, rules_path)
    scorer = fit(settings, frame, split_at, rules)
    test, metrics = evaluate(scorer, frame)
    labels = labelled_claims(frame)
    metrics |= label_counts(labels)
    result = FraudTraining(
        scorer, metrics, split_at, test, scorer.limits, None, threshold_report(test), labels
    )
    if register:
        from models.fraud.lifecycle import register_fraud  # noqa: PLC0415 - MLflow is slow to import

        with tempfile.TemporaryDirectory(prefix="cashback-fraud-") as tmp:
            files = save_model(scorer.model, scorer.limits, Path(tmp))
            result.version = register_fraud(settings, result, frame, files)
    return result
