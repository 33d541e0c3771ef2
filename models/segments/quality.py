"""How good a segmentation is on a set of customers, whatever model made it.

The metrics are computed in a reference space built from the evaluation frame alone (the
clustering space of `models.segments.model`, standardized on the frame's active customers),
not in a model's own space, so that a challenger and a champion with different
standardizations or features are judged alike:
- `silhouette`: mean silhouette of the segments of active customers, on a fixed sample;
- `rfm_eta2`: share of the variance of the RFM total (0-15) among active customers that
  the segments explain (eta squared): segments should tell customer value apart;
- `segments`: distinct segments among active customers; `min_segment_share`: the smallest
  one's share of them;
- `inactive_agreement`: share of customers where "segment is inactive" agrees with "no
  purchase in 365 days" (1 for a model that follows the rule);
- `truth_ari` (simulated worlds, when the frame has `true_segment`): adjusted Rand index
  between the segments and the latent segments, among active customers with a truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score, silhouette_score

from models.segments.model import INACTIVE, FloatArray, active_mask, clustering_space, raw_matrix

TRUE_SEGMENT = "true_segment"
SAMPLE = 5_000
SEED = 0


def reference_coordinates(frame: pl.DataFrame) -> FloatArray:
    """The frame's rows in the reference space (log1p, standardized on the frame, weighted)."""
    space = clustering_space(frame.columns)
    x = raw_matrix(frame, space.columns)
    n_log = len(space.log_columns)
    x[:, :n_log] = np.log1p(x[:, :n_log])
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return np.asarray((x - x.mean(axis=0)) / scale * space.weights, dtype=np.float64)


def _eta2(values: FloatArray, labels: Sequence[str]) -> float:
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return float("nan")
    groups = (
        pl.DataFrame({"v": values, "g": list(labels)})
        .group_by("g")
        .agg(((pl.col("v") - pl.col("v").mean()) ** 2).sum().alias("ss"))
    )
    return 1.0 - float(groups["ss"].sum()) / total


def segmentation_quality(
    frame: pl.DataFrame, segments: Sequence[str], *, sample: int = SAMPLE, seed: int = SEED
) -> dict[str, float]:
    """The metrics of one segmentation of `frame`'s customers.

    Args:
        frame: segments_v1 features of the customers (optionally `true_segment`).
        segments: each row's segment.
        sample: active customers the silhouette is computed on (a fixed seeded sample).
        seed: the sample's seed.

    Returns:
        silhouette, rfm_eta2, segments, min_segment_share, inactive_agreement and, when
        the frame has a truth, truth_ari. NaN where undefined (fewer than two segments).
    """
    labels = np.asarray(list(segments), dtype=object)
    active = active_mask(frame)
    said_inactive = labels == INACTIVE
    metrics = {
        "inactive_agreement": float(np.mean(said_inactive != active)) if len(labels) else 1.0
    }
    rows = frame.filter(pl.Series(active))
    chosen = labels[active]
    names, counts = np.unique(chosen.astype(str), return_counts=True)
    metrics["segments"] = float(len(names))
    metrics["min_segment_share"] = float(counts.min() / counts.sum()) if len(counts) else 0.0
    if len(names) >= 2:
        coords = reference_coordinates(rows)
        pick = np.random.default_rng(seed).permutation(rows.height)[:sample]
        sampled = chosen[pick].astype(str)
        metrics["silhouette"] = (
            float(silhouette_score(coords[pick], sampled))
            if len(np.unique(sampled)) >= 2
            else float("nan")
        )
        rfm = rows["rfm_total"].cast(pl.Float64).fill_null(0.0).to_numpy()
        metrics["rfm_eta2"] = _eta2(rfm, chosen.astype(str).tolist())
    else:
        metrics["silhouette"] = float("nan")
        metrics["rfm_eta2"] = float("nan")
    if TRUE_SEGMENT in frame.columns:
        truth = rows[TRUE_SEGMENT].to_numpy()
        known = rows[TRUE_SEGMENT].is_not_null().to_numpy()
        if known.sum() >= 2:
            metrics["truth_ari"] = float(adjusted_rand_score(truth[known], chosen[known]))
    return metrics
