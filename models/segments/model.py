"""The segment model: where customers sit in the clustering space, and which cluster is nearest.

The clustering space is made of segments_v1 features:
- frequency, basket size, recency and tenure (`purchases_365d`, `avg_basket_365d`,
  `days_since_last_purchase`, `tenure_days`): skewed counts and amounts, so `log1p`;
- the channel mix and the category mix (`share_<channel>_<N>d`, `share_<category>_<N>d`):
  shares in [0, 1], as they are.

Every column is then standardized, and each mix is weighted by `1 / sqrt(columns in it)`,
so that the channel mix and the category mix each weigh as much as one of the four
behaviour columns (eight category shares would otherwise outvote frequency and basket).

A customer with no purchase in the last 365 days is not clustered: its segment is
`inactive`. Everyone else gets the nearest cluster centre (k-means).

On disk the model is one JSON file (no pickle): the columns, the standardization (means
and scales), the weights, the centres and the segment names. `SegmentModel.clusters`
re-implements the fitted scikit-learn pipeline's `predict` in numpy; the tests check both
give the same clusters.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from cashback.errors import CashbackError
from cashback.vocab import Channel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ACTIVITY = "purchases_365d"
INACTIVE = "inactive"
LOG_COLUMNS = ("purchases_365d", "avg_basket_365d", "days_since_last_purchase", "tenure_days")
MODEL_FILE = "segments.json"
FORMAT = 1
_SHARE = re.compile(r"^share_(?P<what>.+)_(?P<days>\d+)d$")


@dataclass(frozen=True)
class ClusterSpace:
    """Which features make the clustering space, how they are transformed and weighted.

    Attributes:
        log_columns: behaviour columns, transformed with `log1p`.
        share_groups: groups of share columns (channel mix, category mix), as they are.
    """

    log_columns: tuple[str, ...]
    share_groups: tuple[tuple[str, ...], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every input column, in matrix order: the log columns, then each group."""
        return self.log_columns + tuple(c for group in self.share_groups for c in group)

    @property
    def weights(self) -> FloatArray:
        """Weight of each standardized column: 1, or 1 / sqrt(size of its group)."""
        weights = [1.0] * len(self.log_columns)
        for group in self.share_groups:
            weights += [1.0 / float(np.sqrt(len(group)))] * len(group)
        return np.asarray(weights, dtype=np.float64)

    @property
    def channel_columns(self) -> tuple[str, ...]:
        """The channel mix columns."""
        return self.share_groups[0]

    @property
    def category_columns(self) -> tuple[str, ...]:
        """The category mix columns."""
        return self.share_groups[1] if len(self.share_groups) > 1 else ()


def share_label(column: str) -> str:
    """What a share column is the share of (`share_app_90d` -> `app`)."""
    match = _SHARE.match(column)
    return match.group("what") if match else column


def clustering_space(columns: Sequence[str]) -> ClusterSpace:
    """The clustering space over the feature columns available (the segments_v1 features).

    The channel mix is every `share_<channel>_<N>d` column; the category mix every other
    `share_<name>_<N>d` column (not the payout-method shares, which segments_v1 lacks).

    Raises:
        CashbackError: naming what is missing when a behaviour column or the channel mix is
            not among the columns.
    """
    present = list(columns)
    missing = [c for c in LOG_COLUMNS if c not in present]
    channels = tuple(
        c for c in present if _SHARE.match(c) and share_label(c) in {ch.value for ch in Channel}
    )
    if missing or not channels:
        what = missing + ([] if channels else ["share_<channel>_<N>d"])
        msg = f"segments need the features {', '.join(what)} (feature service segments_v1)"
        raise CashbackError(msg)
    categories = tuple(c for c in present if _SHARE.match(c) and c not in channels)
    groups = (channels, categories) if categories else (channels,)
    return ClusterSpace(log_columns=LOG_COLUMNS, share_groups=groups)


def raw_matrix(frame: pl.DataFrame, columns: Sequence[str]) -> FloatArray:
    """The columns as a float matrix, nulls (and NaN) as 0, negative values clipped to 0.

    Nulls only occur for customers the model does not cluster (no purchase in the year:
    no basket, no recency); shares are already 0 without purchases in their window.
    """
    matrix = frame.select(
        pl.col(c).cast(pl.Float64).fill_nan(None).fill_null(0.0).clip(lower_bound=0.0)
        for c in columns
    ).to_numpy()
    return np.ascontiguousarray(matrix, dtype=np.float64)


def active_mask(frame: pl.DataFrame) -> npt.NDArray[np.bool_]:
    """Customers with a purchase in the last 365 days (the clustered ones)."""
    return frame.select(pl.col(ACTIVITY).fill_null(0) > 0).to_series().to_numpy()


@dataclass(frozen=True)
class SegmentModel:
    """A fitted segment model, readable without scikit-learn.

    Attributes:
        log_columns: columns transformed with `log1p` (the first columns of the matrix).
        columns: every input column, in matrix order.
        weights: weight of each standardized column.
        mean: the standardization's means (of the transformed columns).
        scale: the standardization's scales.
        centers: cluster centres in the weighted standardized space, one row per cluster.
        names: the segment name of each cluster.
        params: what it was trained with (close, k, ...).
    """

    log_columns: tuple[str, ...]
    columns: tuple[str, ...]
    weights: FloatArray
    mean: FloatArray
    scale: FloatArray
    centers: FloatArray
    names: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centers.shape[0])

    @property
    def segments(self) -> tuple[str, ...]:
        """Every segment the model assigns: the clusters' names, then `inactive`."""
        return (*self.names, INACTIVE)

    def coordinates(self, frame: pl.DataFrame) -> FloatArray:
        """Each row's position in the clustering space (weighted standardized features)."""
        x = raw_matrix(frame, self.columns)
        n_log = len(self.log_columns)
        x[:, :n_log] = np.log1p(x[:, :n_log])
        return np.asarray((x - self.mean) / self.scale * self.weights, dtype=np.float64)

    def nearest(self, coordinates: FloatArray) -> IntArray:
        """The nearest centre of each row (squared euclidean distance, as k-means)."""
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centre of a row
        distance = (self.centers**2).sum(axis=1) - 2.0 * coordinates @ self.centers.T
        return np.asarray(np.argmin(distance, axis=1), dtype=np.int64)

    def clusters(self, frame: pl.DataFrame) -> IntArray:
        """The cluster of each row; -1 for customers without a purchase in the last year."""
        out = np.full(frame.height, -1, dtype=np.int64)
        active = active_mask(frame)
        if active.any():
            out[active] = self.nearest(self.coordinates(frame.filter(pl.Series(active))))
        return out

    def names_of(self, clusters: IntArray) -> list[str]:
        """The segment name of each cluster number (-1: `inactive`)."""
        lookup = np.asarray(self.segments, dtype=object)
        return [str(name) for name in lookup[clusters]]

    def assign(self, frame: pl.DataFrame) -> pl.Series:
        """The segment name of each row (`inactive` for customers not active in the year)."""
        return pl.Series("segment", self.names_of(self.clusters(frame)), dtype=pl.String)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (floats are kept exactly: JSON writes their shortest repr)."""
        return {
            "format": FORMAT,
            "log_columns": list(self.log_columns),
            "columns": list(self.columns),
            "weights": self.weights.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "centers": self.centers.tolist(),
            "names": list(self.names),
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentModel:
        """The model of `to_dict`'s output.

        Raises:
            CashbackError: for another format or inconsistent shapes.
        """
        if data.get("format") != FORMAT:
            msg = f"segment model format {data.get('format')!r} is not {FORMAT}"
            raise CashbackError(msg)
        model = cls(
            log_columns=tuple(data["log_columns"]),
            columns=tuple(data["columns"]),
            weights=np.asarray(data["weights"], dtype=np.float64),
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            centers=np.asarray(data["centers"], dtype=np.float64).reshape(len(data["names"]), -1),
            names=tuple(data["names"]),
            params=dict(data.get("params", {})),
        )
        d = len(model.columns)
        shapes = {model.weights.shape, model.mean.shape, model.scale.shape}
        if shapes != {(d,)} or model.centers.shape[1] != d:
            msg = f"segment model arrays do not match its {d} columns"
            raise CashbackError(msg)
        return model

    def save(self, directory: Path) -> Path:
        """Write `segments.json` into `directory` (created; replaced atomically)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MODEL_FILE
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SegmentModel:
        """Read a model written by `save` (a `segments.json` file or its directory).

        Raises:
            FileNotFoundError: naming the missing file.
        """
        path = path / MODEL_FILE if path.is_dir() else path
        if not path.exists():
            msg = f"{path}: segment model file missing"
            raise FileNotFoundError(msg)
        return cls.from_dict(json.loads(path.read_text()))
