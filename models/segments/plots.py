"""Figures of a segments training run: sizes, profiles, and the clusters in two dimensions."""

from __future__ import annotations

import matplotlib as mpl

mpl.use("Agg")  # files only: training runs have no display

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from models.segments.model import FloatArray

HEATMAP_COLUMNS = {
    "purchases_365d": "purchases 365d",
    "avg_basket": "avg basket",
    "spend_365d": "spend 365d",
    "recency_days": "days since last",
    "rfm_total": "RFM total",
    "lifecycle_at_risk": "at risk share",
    "churn_rate": "churn rate",
    "avg_rate_365d": "avg cashback rate",
    "rate_response_relative": "response per point",
}
PCA_POINTS = 5_000


def sizes(profiles: pl.DataFrame) -> Figure:
    """Customers per segment."""
    figure, axes = plt.subplots(figsize=(7, 0.5 * profiles.height + 1.5))
    names = profiles["segment"].to_list()[::-1]
    counts = profiles["customers"].to_numpy()[::-1]
    bars = axes.barh(names, counts, color="tab:blue")
    for bar, share in zip(bars, profiles["share"].to_numpy()[::-1], strict=True):
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {share:.0%}", va="center")
    axes.set(xlabel="customers", title="Segment sizes")
    figure.tight_layout()
    return figure


def profiles_heatmap(profiles: pl.DataFrame) -> Figure:
    """Each segment's profile, colored by how far it is from the other segments (z-score)."""
    columns = [c for c in HEATMAP_COLUMNS if profiles[c].null_count() < profiles.height]
    values = profiles.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()
    mean = np.nanmean(values, axis=0)
    spread = np.nanstd(values, axis=0)
    spread[~(spread > 0)] = 1.0
    z = (values - mean) / spread
    figure, axes = plt.subplots(figsize=(1.3 * len(columns) + 3, 0.6 * profiles.height + 2))
    axes.imshow(np.nan_to_num(z), cmap="RdBu_r", vmin=-2.5, vmax=2.5, aspect="auto")
    axes.set_xticks(range(len(columns)), [HEATMAP_COLUMNS[c] for c in columns], rotation=35)
    axes.set_yticks(range(profiles.height), profiles["segment"].to_list())
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "" if np.isnan(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
            axes.text(j, i, text, ha="center", va="center", fontsize=8)
    axes.set_title("Segment profiles (color: z-score across segments)")
    figure.tight_layout()
    return figure


def projection(coordinates: FloatArray, segments: list[str], seed: int = 0) -> Figure:
    """Active customers in the first two principal components of the clustering space."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(coordinates.shape[0])[:PCA_POINTS]
    points = coordinates[pick]
    labels = np.asarray(segments, dtype=object)[pick]
    figure, axes = plt.subplots(figsize=(7.5, 6))
    if points.shape[0] >= 2 and points.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=seed).fit(points)
        xy = pca.transform(points)
        for name in sorted(set(labels.tolist())):
            rows = labels == name
            axes.scatter(xy[rows, 0], xy[rows, 1], s=4, alpha=0.5, label=str(name))
        ratio = pca.explained_variance_ratio_
        axes.set(xlabel=f"PC1 ({ratio[0]:.0%})", ylabel=f"PC2 ({ratio[1]:.0%})")
        axes.legend(markerscale=4, fontsize=8)
    axes.set_title("Active customers, first two principal components")
    figure.tight_layout()
    return figure


def figures(
    profiles: pl.DataFrame, coordinates: FloatArray, segments: list[str]
) -> dict[str, Figure]:
    """Every figure of a training run, by file name."""
    return {
        "segment_sizes": sizes(profiles),
        "segment_profiles": profiles_heatmap(profiles),
        "segment_pca": projection(coordinates, segments),
    }
