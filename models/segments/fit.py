"""Fitting the clusters: a scikit-learn pipeline, k chosen by silhouette among stable k.

The pipeline: `log1p` of the behaviour columns (passthrough for the shares), a
`StandardScaler`, the mix weights (`ClusterSpace.weights`), then `KMeans`.

Choosing k in `[k_min, k_max]`: the fit rows are split into two random halves; for each k
a pipeline is fitted on each half (different seeds) and both predict every fit row. Their
adjusted Rand index (ARI) is the stability of k: it says whether another sample of the
same customers would give the same segments. The silhouette of k is that of the first
half's clusters on a sample of the fit rows, in its own space. The chosen k has the best
silhouette among the k whose stability reaches `min_stability` (the most stable k when
none does). The model is then refitted on every fit row with that k, and its clusters are
numbered by size, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from cashback.settings import SegmentSettings
from models.segments.model import ClusterSpace, FloatArray, IntArray, SegmentModel


def weigh(x: FloatArray, weights: FloatArray) -> FloatArray:
    """Multiply each column by its weight (a pipeline step)."""
    return np.asarray(x * weights, dtype=np.float64)


def build_pipeline(space: ClusterSpace, k: int, seed: int, n_init: int) -> Pipeline:
    """The unfitted pipeline over a raw matrix of `space.columns`."""
    n_log = len(space.log_columns)
    n_all = len(space.columns)
    transform = ColumnTransformer(
        [
            ("log1p", FunctionTransformer(np.log1p), list(range(n_log))),
            ("shares", "passthrough", list(range(n_log, n_all))),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline(
        [
            ("transform", transform),
            ("scale", StandardScaler()),
            ("weigh", FunctionTransformer(weigh, kw_args={"weights": space.weights})),
            ("cluster", KMeans(n_clusters=k, n_init=n_init, random_state=seed)),
        ]
    )


def coordinates(pipeline: Pipeline, x: FloatArray) -> FloatArray:
    """Rows of a raw matrix in a fitted pipeline's clustering space."""
    return np.asarray(pipeline[:-1].transform(x), dtype=np.float64)


def predict(pipeline: Pipeline, x: FloatArray) -> IntArray:
    """The fitted pipeline's clusters."""
    return np.asarray(pipeline.predict(x), dtype=np.int64)


@dataclass(frozen=True)
class ClusterFit:
    """The fitted clusters and how k was chosen.

    Attributes:
        pipeline: the scikit-learn pipeline fitted on every fit row, clusters numbered by
            size (largest first).
        k: the chosen number of clusters.
        silhouette: the chosen k's silhouette (final fit, on the silhouette sample).
        stability: the chosen k's two-halves ARI.
        selection: per k tried: silhouette, stability, and whether it was chosen.
        fit_rows: the rows of the input matrix the pipeline was fitted on.
        note: how k was chosen when no k was stable enough, else None.
    """

    pipeline: Pipeline
    k: int
    silhouette: float
    stability: float
    selection: pl.DataFrame
    fit_rows: npt.NDArray[np.int64]
    note: str | None = None


def _fit(space: ClusterSpace, x: FloatArray, k: int, seed: int, config: SegmentSettings) -> Any:
    return build_pipeline(space, k, seed, config.n_init).fit(x)


def _silhouette(pipeline: Pipeline, x: FloatArray) -> float:
    labels = predict(pipeline, x)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(coordinates(pipeline, x), labels))


def _renumber_by_size(pipeline: Pipeline, x: FloatArray) -> None:
    """Number the clusters by size on `x`, largest first (ties: lower old number first)."""
    kmeans: KMeans = pipeline[-1]
    counts = np.bincount(predict(pipeline, x), minlength=kmeans.n_clusters)
    order = np.lexsort((np.arange(len(counts)), -counts))
    kmeans.cluster_centers_ = np.ascontiguousarray(kmeans.cluster_centers_[order])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    kmeans.labels_ = inverse[kmeans.labels_]


def choose_k(selection: pl.DataFrame, min_stability: float) -> tuple[int, str | None]:
    """The k with the best silhouette among those with stability >= `min_stability`.

    Ties go to the smaller k. When no k is stable enough: the most stable k (ties: the
    smaller), with a note saying so.

    Args:
        selection: `k`, `silhouette` (NaN when undefined) and `stability` per k tried.
        min_stability: the stability bar.

    Returns:
        The chosen k, and the note (None when some k was stable enough).
    """
    stable = selection.filter(pl.col("stability") >= min_stability).filter(
        pl.col("silhouette").is_not_nan()
    )
    if stable.height:
        return int(stable.sort(["silhouette", "k"], descending=[True, False])["k"][0]), None
    k = int(selection.sort(["stability", "k"], descending=[True, False])["k"][0])
    ks = selection["k"].to_list()
    note = (
        f"no k in {min(ks)}..{max(ks)} reached stability {min_stability}: k = {k}, the most stable"
    )
    return k, note


def fit_clusters(space: ClusterSpace, x: FloatArray, config: SegmentSettings) -> ClusterFit:
    """Choose k and fit the clusters on the raw matrix `x` of active customers.

    Args:
        space: the clustering space (`x` has its columns, in order).
        x: one row per active customer.
        config: k range, stability bar, samples, seed.

    Returns:
        The fitted pipeline and the selection table.
    """
    rng = np.random.default_rng(config.seed)
    n = x.shape[0]
    fit_rows = np.sort(rng.permutation(n)[: config.fit_customers]).astype(np.int64)
    fit_x = x[fit_rows]
    half = rng.random(fit_x.shape[0]) < 0.5
    sample = rng.permutation(fit_x.shape[0])[: config.silhouette_sample]
    rows: list[dict[str, Any]] = []
    with threadpool_limits(limits=config.threads):
        for k in range(config.k_min, config.k_max + 1):
            first = _fit(space, fit_x[half], k, config.seed + 1, config)
            second = _fit(space, fit_x[~half], k, config.seed + 2, config)
            stability = float(adjusted_rand_score(predict(first, fit_x), predict(second, fit_x)))
            rows.append(
                {"k": k, "silhouette": _silhouette(first, fit_x[sample]), "stability": stability}
            )
        table = pl.DataFrame(
            rows, schema={"k": pl.Int64, "silhouette": pl.Float64, "stability": pl.Float64}
        )
        k, note = choose_k(table, config.min_stability)
        pipeline = _fit(space, fit_x, k, config.seed, config)
        _renumber_by_size(pipeline, fit_x)
        silhouette = _silhouette(pipeline, fit_x[sample])
    chosen = table.filter(pl.col("k") == k)
    return ClusterFit(
        pipeline=pipeline,
        k=k,
        silhouette=silhouette,
        stability=float(chosen["stability"][0]),
        selection=table.with_columns((pl.col("k") == k).alias("chosen")),
        fit_rows=fit_rows,
        note=note,
    )


def native_model(
    fitted: Pipeline, space: ClusterSpace, names: tuple[str, ...], params: dict[str, Any]
) -> SegmentModel:
    """The fitted pipeline's numbers as a `SegmentModel` (assignment in plain numpy)."""
    scaler: StandardScaler = fitted.named_steps["scale"]
    kmeans: KMeans = fitted.named_steps["cluster"]
    return SegmentModel(
        log_columns=space.log_columns,
        columns=space.columns,
        weights=space.weights.copy(),
        mean=np.asarray(scaler.mean_, dtype=np.float64).copy(),
        scale=np.asarray(scaler.scale_, dtype=np.float64).copy(),
        centers=np.asarray(kmeans.cluster_centers_, dtype=np.float64).copy(),
        names=names,
        params=params,
    )
