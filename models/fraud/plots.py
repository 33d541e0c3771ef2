"""Figures of a fraud training run: what a risk analyst checks before trusting a model."""

from __future__ import annotations

import matplotlib as mpl

mpl.use("Agg")  # files only: training runs have no display

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve

SCORES = {"model": "probability", "rules alone": "rule_score", "anomaly alone": "anomaly_score"}


def _truth_or_audit(
    test: pl.DataFrame, truth: str, label: str, source: str
) -> tuple[pl.DataFrame, str, str]:
    """The claims and label column the curves describe: the truth, else the audit sample."""
    if truth in test.columns:
        return test, truth, "every test claim (simulator truth)"
    audit = test.filter(pl.col(source).str.contains("audit").fill_null(value=False))
    return audit, label, "test claims in the audit sample"


def pr_curves(test: pl.DataFrame, truth: str, label: str, source: str) -> Figure:
    """Precision against recall for the model and both baselines."""
    rows, column, described = _truth_or_audit(test, truth, label, source)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    y = rows[column].cast(pl.Int8).to_numpy()
    if 0 < y.sum() < len(y):
        for name, score in SCORES.items():
            precision, recall, _ = precision_recall_curve(y, rows[score].to_numpy())
            axes.plot(recall, precision, label=name)
    axes.set(xlabel="recall", ylabel="precision", title=f"Precision-recall: {described}")
    axes.legend()
    figure.tight_layout()
    return figure


def score_distribution(test: pl.DataFrame, truth: str, label: str, source: str) -> Figure:
    """Risk scores of frauds and of legit claims (log scale: frauds are rare)."""
    rows, column, described = _truth_or_audit(test, truth, label, source)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    bins = [float(edge) for edge in np.linspace(0, 100, 41)]
    for value, name in ((0, "legit"), (1, "fraud")):
        scores = rows.filter(pl.col(column).cast(pl.Int8) == value)["risk_score"].to_numpy()
        axes.hist(scores, bins=bins, alpha=0.6, label=f"{name} ({len(scores):,})", log=True)
    axes.set(xlabel="risk score (0-100)", ylabel="claims", title=f"Risk scores: {described}")
    axes.legend()
    figure.tight_layout()
    return figure


def calibration(test: pl.DataFrame, truth: str, label: str, source: str) -> Figure:
    """Predicted probability against the observed fraud rate."""
    rows, column, described = _truth_or_audit(test, truth, label, source)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    y = rows[column].cast(pl.Int8).to_numpy()
    if 0 < y.sum() < len(y):
        observed, predicted = calibration_curve(
            y, rows["probability"].to_numpy(), n_bins=10, strategy="quantile"
        )
        axes.plot(predicted, observed, marker="o", label="model")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axes.set(xlabel="predicted probability", ylabel="observed fraud rate", title=described)
    axes.legend()
    figure.tight_layout()
    return figure


def capacity(test: pl.DataFrame, truth: str, label: str, source: str) -> Figure:
    """Recall against the share of claims reviewed, ranked by risk and by expected loss."""
    rows, column, described = _truth_or_audit(test, truth, label, source)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    y = rows[column].cast(pl.Int8).to_numpy()
    if y.sum() > 0:
        share = np.arange(1, len(y) + 1) / len(y)
        for name, score in (("by risk", "probability"), ("by expected loss", "expected_loss")):
            order = np.argsort(-rows[score].to_numpy(), kind="stable")
            axes.plot(share, np.cumsum(y[order]) / y.sum(), label=name)
        axes.set_xlim(0, min(1.0, 0.25))
    axes.set(xlabel="share of claims reviewed", ylabel="recall", title=described)
    axes.legend()
    figure.tight_layout()
    return figure


def figures(test: pl.DataFrame, truth: str, label: str, source: str) -> dict[str, Figure]:
    """Every figure of a training run, by file name."""
    return {
        name: draw(test, truth, label, source)
        for name, draw in {
            "pr_curves": pr_curves,
            "score_distribution": score_distribution,
            "calibration": calibration,
            "review_capacity": capacity,
        }.items()
    }
