"""Quality of a claim score on a set of claims, saying which set it describes.

Sets: `audit` (the random audit sample: describes every claim), `labelled` (every labelled
claim: chargebacks over-represent the frauds that get charged back) and, in the simulator,
`truth` (every claim, with its true status).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from models.fraud.dataset import FloatMatrix

Labels = npt.NDArray[np.int8]
WILSON_Z = 1.959963984540054


def recall_at_share(label: Labels, score: FloatMatrix, share: float) -> float:
    """Share of the frauds among the top `share` of claims by score (ties broken by order)."""
    frauds = int(label.sum())
    if frauds == 0:
        return float("nan")
    top = max(math.ceil(share * len(score)), 1)
    order = np.argsort(-score, kind="stable")[:top]
    return float(label[order].sum() / frauds)


def precision_at_share(label: Labels, score: FloatMatrix, share: float) -> float:
    """Share of frauds among the top `share` of claims by score."""
    top = max(math.ceil(share * len(score)), 1)
    order = np.argsort(-score, kind="stable")[:top]
    return float(label[order].mean())


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (nan, nan without observations)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1 + WILSON_Z**2 / n
    centre = (p + WILSON_Z**2 / (2 * n)) / denominator
    half = WILSON_Z * math.sqrt(p * (1 - p) / n + WILSON_Z**2 / (4 * n * n)) / denominator
    return centre - half, centre + half


def ranking_metrics(
    label: Labels, score: FloatMatrix, share: float, prefix: str
) -> dict[str, float]:
    """PR-AUC, ROC-AUC, recall and precision at a review share, and counts.

    Args:
        label: 1 fraud, 0 legit.
        score: higher = riskier.
        share: the review share (e.g. 0.04 = top 4 % of claims).
        prefix: the set the metrics describe (`audit`, `labelled`, `truth`).

    Returns:
        `{prefix}_pr_auc`, `{prefix}_roc_auc`, `{prefix}_recall_at_review`,
        `{prefix}_precision_at_review`, `{prefix}_claims`, `{prefix}_frauds` (nan where a
        metric is undefined: a single class).
    """
    n, frauds = len(label), int(label.sum())
    both = 0 < frauds < n
    return {
        f"{prefix}_pr_auc": float(average_precision_score(label, score)) if both else math.nan,
        f"{prefix}_roc_auc": float(roc_auc_score(label, score)) if both else math.nan,
        f"{prefix}_recall_at_review": recall_at_share(label, score, share),
        f"{prefix}_precision_at_review": precision_at_share(label, score, share) if n else math.nan,
        f"{prefix}_claims": float(n),
        f"{prefix}_frauds": float(frauds),
    }


def brier(label: Labels, probability: FloatMatrix) -> float:
    """Brier score (lower is better; nan without claims)."""
    return float(brier_score_loss(label, probability)) if len(label) else math.nan
