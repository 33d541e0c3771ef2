"""An anomaly score for claims: an isolation forest, flattened for a single-claim request path.

`AnomalyScorer` fits scikit-learn's `IsolationForest` on the training slice, then copies all
of its trees into a few packed numpy arrays (one entry per node of every tree). Scoring walks
every tree at once, one level per numpy step, instead of calling each tree in turn: sklearn's
`score_samples` pays a Python round trip per tree (milliseconds for one row), the flattened
walk a few microseconds per level. A large batch is cut into row blocks that a small thread
pool walks side by side (numpy releases the GIL in its loops); every row's score is computed
the same way whatever the block, the thread or the batch, so the answers do not change.

The score is the paper's anomaly score `s(x) = 2 ** (-E[h(x)] / c(psi))`, which is exactly
`-IsolationForest.score_samples(x)`: in (0, 1], higher = more unusual. Here `h(x)` is the
depth of the leaf x falls in plus `c(n)` for the `n` training rows that leaf still held,
`c(n)` is the average path length of an unsuccessful search in a binary search tree of `n`
keys, and `psi` is the number of rows each tree was grown on.

Missing values (NaN, or None in `score_one`) are imputed with the training column medians
(`medians_`) before the forest sees them, both when fitting and when scoring; a column with
no value at all in training is imputed with 0.0. ±inf are ordinary values: beyond every
threshold, as in sklearn (they are refused when fitting).

The fitted scorer is stored without pickle: `to_dict`/`from_dict` (JSON-ready) or
`save`/`load` (a `.npz` file of the packed arrays and a JSON header).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError

FORMAT = "cashback-ml/anomaly-scorer/1"
BLOCK_CELLS = 1 << 16  # rows x trees that `score` walks in one block (bounds its memory)
TASK_BLOCKS = 16  # blocks a pool thread walks per task (many tasks: a busy core slows one)
THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
TREE_LEAF = -1  # sklearn's children_left at a leaf

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]
PACKED = ("tree_start", "feature", "threshold", "left", "right", "leaf_value")


def average_path_length(n_samples: npt.ArrayLike) -> FloatArray:
    """`c(n)`, the average path length of an unsuccessful search in a BST of `n` keys.

    The same operations as sklearn's private `_average_path_length` (so the same bits): 0
    for n <= 1, 1 for n = 2, else `2 (ln(n - 1) + euler_gamma) - 2 (n - 1) / n`.

    Args:
        n_samples: training rows in a node (any shape).

    Returns:
        `c(n)` for each entry, float64, in the input's shape.
    """
    n = np.asarray(n_samples)
    shape = n.shape
    n = n.reshape(1, -1)
    out = np.zeros(n.shape)
    many = n > 2
    out[n == 2] = 1.0
    out[many] = 2.0 * (np.log(n[many] - 1.0) + np.euler_gamma) - 2.0 * (n[many] - 1.0) / n[many]
    return out.reshape(shape)


def _float32_at_most(values: FloatArray) -> Float32Array:
    """The largest float32 not above each value.

    sklearn compares a float32 feature value `v` with a float64 threshold `t` in double
    precision: `v <= t` holds exactly when `v <= (largest float32 <= t)`, so the walk can
    compare float32 with float32.
    """
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    above = out.astype(np.float64) > values
    out[above] = np.nextafter(out[above], np.float32(-np.inf))
    return out


@dataclass(frozen=True, slots=True)
class _Walk:
    """The packed trees in the form the walk reads (derived from the fitted attributes).

    A state is twice a node index, `2 * node`: the child taken is `child[state + go_right]`
    (already doubled), so one gather per level picks it. Leaves point to themselves, so
    walking past a leaf stays on it and every row can take `levels` steps.
    """

    feature: IndexArray  # at 2 * node: the node's feature
    threshold: Float32Array  # at 2 * node: go right when x > threshold
    child: IndexArray  # at 2 * node + go_right: 2 * child
    value: FloatArray  # at 2 * node: the leaf's path length (0 at split nodes)
    roots: IndexArray  # 2 * each tree's root
    levels: int
    denominator: float  # n_trees * c(psi)
    medians: Float32Array
    shape: tuple[int]  # (n_features,)

    @classmethod
    def build(cls, scorer: AnomalyScorer) -> _Walk:
        """The walk tables of a fitted (or loaded) scorer."""
        n_nodes = len(scorer.feature_)
        child = np.empty(2 * n_nodes, dtype=np.intp)
        child[0::2] = 2 * scorer.left_
        child[1::2] = 2 * scorer.right_
        n_trees = len(scorer.tree_start_)
        return cls(
            feature=np.repeat(scorer.feature_.astype(np.intp), 2),
            threshold=np.repeat(_float32_at_most(scorer.threshold_), 2),
            child=child,
            value=np.repeat(scorer.leaf_value_, 2),
            roots=2 * scorer.tree_start_.astype(np.intp),
            levels=int(scorer.max_depth_),
            denominator=float(n_trees * average_path_length([scorer.max_samples_])[0]),
            medians=scorer.medians_.astype(np.float32),
            shape=(int(scorer.n_features_in_),),
        )

    def path_lengths(self, x: Float32Array, row_start: IndexArray) -> FloatArray:
        """Sum over the trees of each row's path length.

        Args:
            x: imputed rows, float32, C order, shape (n_rows, n_features).
            row_start: at least n_rows rows of `row * n_features`, shape (>= n_rows, n_trees).

        Returns:
            Summed path lengths, shape (n_rows,).
        """
        rows = len(x)
        flat, row_start = x.ravel(), row_start[:rows]
        feature, threshold, child = self.feature, self.threshold, self.child
        state: IndexArray = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for _ in range(self.levels):
            at = feature.take(state)
            at += row_start  # index of x[row, feature[state]] in `flat`
            slot = np.greater(flat.take(at), threshold.take(state), out=at, casting="unsafe")
            slot += state  # 2 * node + go_right
            state = child.take(slot)
        sums: FloatArray = np.add.reduce(self.value.take(state), axis=1)
        return sums

    def imputed(self, rows: npt.NDArray[Any]) -> Float32Array:
        """A float32, C-order copy of `rows` with NaN (None) replaced by the training medians."""
        with np.errstate(over="ignore"):  # beyond float32: inf, as sklearn's cast
            x = np.array(rows, dtype=np.float32, order="C")
        missing = np.isnan(x)
        if missing.any():
            np.copyto(x, self.medians, where=missing)
        return x

    def anomaly(self, path_lengths: FloatArray) -> FloatArray:
        """`2 ** (-E[h] / c(psi))` from the summed path lengths, as sklearn computes it."""
        if self.denominator == 0.0:  # a single training row: sklearn sets the ratio to 1
            return np.full(path_lengths.shape, 0.5)
        return np.power(2.0, -(path_lengths / self.denominator))


class AnomalyScorer(BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Isolation-forest anomaly score, flattened into numpy arrays for fast scoring.

    Parameters are stored as given (scikit-learn's estimator contract); `fit` does the work.

    Args:
        n_estimators: number of isolation trees.
        max_samples: rows each tree is grown on: "auto" (min(256, n)), a count, or a share.
        random_state: seed (or `RandomState`) of the forest.

    Attributes:
        medians_: training median of each column, float64 (NaN and None are imputed with it;
            0.0 for a column without any value).
        n_features_in_: number of columns.
        max_samples_: rows each tree was grown on (`psi`).
        max_depth_: deepest leaf of any tree, in splits: the walk's number of levels.
        tree_start_: index of each tree's root in the packed node arrays, shape (n_trees,);
            tree k owns nodes `tree_start_[k]` up to the next tree's root.
        feature_: split feature of each node (0 at leaves), shape (n_nodes,).
        threshold_: split threshold of each node, float64 (0.0 at leaves): a row goes left
            when its float32 value is <= the threshold, as in sklearn.
        left_: packed index of each node's left child (a leaf points to itself).
        right_: packed index of each node's right child (a leaf points to itself).
        leaf_value_: path length credited at each leaf: its depth plus `c(n_node_samples)`,
            computed as sklearn does (`depth_from_1 + c(n) - 1.0`); 0.0 at split nodes.
        forest_: the fitted `IsolationForest`, for reference (None once loaded with
            `from_dict` or `load`: scoring needs the packed arrays only).

    Example:
        ```python
        scorer = AnomalyScorer(n_estimators=100, random_state=0).fit(train)
        scorer.score(claims)  # one score per row
        scorer.score_one(claims[0])  # the request path
        ```
    """

    medians_: FloatArray
    n_features_in_: int
    max_samples_: int
    max_depth_: int
    tree_start_: IndexArray
    feature_: IndexArray
    threshold_: FloatArray
    left_: IndexArray
    right_: IndexArray
    leaf_value_: FloatArray
    forest_: IsolationForest | None
    _walk: _Walk

    def __init__(
        self,
        n_estimators: int = 100,
        max_samples: int | float | str = "auto",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        """Tags: NaN is accepted as input (imputed with the training medians)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------------------- fit

    def fit(self, X: npt.ArrayLike, y: object = None) -> Self:  # noqa: N803 - sklearn's name
        """Fit the isolation forest on `X` (NaN imputed with column medians), then pack it.

        Args:
            X: float matrix, shape (n_samples, n_features); NaN allowed, ±inf not.
            y: ignored (scikit-learn API).

        Returns:
            self, fitted.

        Raises:
            ValueError: when `X` is not a non-empty 2-D matrix or holds ±inf.
        """
        del y
        x = np.array(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            msg = f"X must be a non-empty 2-D matrix, got shape {x.shape}"
            raise ValueError(msg)
        if np.isinf(x).any():
            msg = "X holds ±inf: the anomaly scorer fits on finite values and NaN only"
            raise ValueError(msg)
        missing = np.isnan(x)
        present = ~missing.all(axis=0)
        medians = np.zeros(x.shape[1])
        if present.any():
            medians[present] = np.nanmedian(x[:, present], axis=0)
        x[missing] = np.broadcast_to(medians, x.shape)[missing]
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            random_state=self.random_state,
        ).fit(x)
        self.medians_ = medians
        self.n_features_in_ = x.shape[1]
        self.max_samples_ = int(forest.max_samples_)
        self._set_packed(_pack_forest(forest))
        self.forest_ = forest
        return self

    def _set_packed(self, packed: Mapping[str, npt.NDArray[Any]]) -> None:
        """Set the packed node arrays and the walk tables built from them."""
        self.tree_start_ = np.asarray(packed["tree_start"], dtype=np.intp)
        self.feature_ = np.asarray(packed["feature"], dtype=np.intp)
        self.threshold_ = np.asarray(packed["threshold"], dtype=np.float64)
        self.left_ = np.asarray(packed["left"], dtype=np.intp)
        self.right_ = np.asarray(packed["right"], dtype=np.intp)
        self.leaf_value_ = np.asarray(packed["leaf_value"], dtype=np.float64)
        self.max_depth_ = _walk_depth(self.tree_start_, self.left_, self.right_)
        self._walk = _Walk.build(self)

    def _fitted_walk(self) -> _Walk:
        try:
            return self._walk
        except AttributeError:
            msg = "this AnomalyScorer is not fitted yet: call fit (or load one) first"
            raise NotFittedError(msg) from None

    # ----------------------------------------------------------------------------- score

    def score(self, X: npt.ArrayLike) -> FloatArray:  # noqa: N803 - sklearn's name
        """Anomaly score of each row: `-IsolationForest.score_samples`, higher = more unusual.

        All trees and all rows of a block (`BLOCK_CELLS` rows x trees) are walked together,
        one numpy step per tree level; blocks bound the memory of a large `X` (each is
        converted to float32 and imputed on its own, so `X` is never copied whole). Groups of
        `TASK_BLOCKS` blocks go to a pool of `THREADS` threads when there are several.

        Args:
            X: float matrix, shape (n_rows, n_features_in_), any memory layout; NaN (or None)
                is imputed with the training medians.

        Returns:
            Scores in (0, 1], shape (n_rows,).

        Raises:
            NotFittedError: before `fit`.
            ValueError: when `X` does not have the training columns.
        """
        walk = self._fitted_walk()
        x = np.asarray(X)
        if x.ndim != 2 or x.shape[1] != walk.shape[0]:
            msg = f"X must have shape (n_rows, {walk.shape[0]}), got {x.shape}"
            raise ValueError(msg)
        n_rows, n_trees = len(x), len(walk.roots)
        block = max(1, min(n_rows, BLOCK_CELLS // n_trees))
        row_start = np.repeat(np.arange(0, block * x.shape[1], x.shape[1])[:, None], n_trees, 1)
        sums = np.empty(n_rows)

        def walk_rows(start: int) -> None:
            stop = min(start + block * TASK_BLOCKS, n_rows)
            for at in range(start, stop, block):
                rows = walk.imputed(x[at : min(at + block, stop)])
                sums[at : at + len(rows)] = walk.path_lengths(rows, row_start)

        tasks = range(0, n_rows, block * TASK_BLOCKS)
        if THREADS > 1 and len(tasks) > 1:
            with ThreadPoolExecutor(min(THREADS, len(tasks)), "anomaly-score") as pool:
                list(pool.map(walk_rows, tasks))
        else:
            for start in tasks:
                walk_rows(start)
        return walk.anomaly(sums)

    def score_one(self, x: Sequence[float | None] | npt.NDArray[np.floating[Any]]) -> float:
        """Anomaly score of one row, the request path: equal to `score` on that row.

        Args:
            x: the row's n_features_in_ values; None or NaN is imputed with the median.

        Returns:
            The score in (0, 1], higher = more unusual.

        Raises:
            NotFittedError: before `fit`.
            ValueError: when `x` does not have n_features_in_ values.
        """
        walk = self._fitted_walk()
        row = np.array(x, dtype=np.float32)
        if row.shape != walk.shape:
            msg = f"x must hold {walk.shape[0]} values, got shape {row.shape}"
            raise ValueError(msg)
        if math.isnan(np.add.reduce(row)):  # one cheap test; NaN (or inf - inf) is rare
            missing = np.isnan(row)
            row[missing] = walk.medians[missing]
        feature, threshold, child = walk.feature, walk.threshold, walk.child
        state = walk.roots
        for _ in range(walk.levels):
            state = child[state + (row[feature[state]] > threshold[state])]
        if walk.denominator == 0.0:
            return 0.5
        # the same sum as `score` (pairwise, tree order); C pow, as numpy's scalar loop
        return float(2.0 ** -(float(np.add.reduce(walk.value[state])) / walk.denominator))

    # ----------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The fitted scorer as a JSON-ready dict (no pickle); `from_dict` reads it back.

        Returns:
            Format tag, parameters, sizes and the packed arrays as lists.

        Raises:
            NotFittedError: before `fit`.
        """
        self._fitted_walk()
        return {
            "format": FORMAT,
            "params": self._json_params(),
            "n_features_in": int(self.n_features_in_),
            "max_samples": int(self.max_samples_),
            "medians": self.medians_.tolist(),
            **{name: getattr(self, f"{name}_").tolist() for name in PACKED},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A fitted scorer from `to_dict`'s output (lists or arrays).

        Args:
            data: what `to_dict` returned (possibly through JSON).

        Returns:
            The scorer, fitted (`forest_` is None).

        Raises:
            ValueError: when `data` is not a valid anomaly scorer.
        """
        if data.get("format") != FORMAT:
            msg = f"not an anomaly scorer: format {data.get('format')!r}, expected {FORMAT!r}"
            raise ValueError(msg)
        scorer = cls(**data["params"])
        scorer.medians_ = np.asarray(data["medians"], dtype=np.float64)
        scorer.n_features_in_ = int(data["n_features_in"])
        scorer.max_samples_ = int(data["max_samples"])
        packed = {name: np.asarray(data[name]) for name in PACKED}
        _check_packed(packed, scorer.n_features_in_, scorer.medians_)
        scorer._set_packed(packed)
        scorer.forest_ = None
        return scorer

    def save(self, path: Path) -> Path:
        """Write the fitted scorer to a `.npz` file (arrays and a JSON header, no pickle).

        Args:
            path: the file to write (written as given, no suffix added).

        Returns:
            `path`.
        """
        data = self.to_dict()
        arrays = {name: getattr(self, f"{name}_") for name in (*PACKED, "medians")}
        header = {k: v for k, v in data.items() if k not in arrays}
        with Path(path).open("wb") as file:
            np.savez(file, header=np.array(json.dumps(header)), **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a scorer written by `save`.

        Args:
            path: the `.npz` file.

        Returns:
            The scorer, fitted (`forest_` is None).

        Raises:
            ValueError: when the file is not an anomaly scorer.
        """
        with np.load(Path(path), allow_pickle=False) as stored:
            data: dict[str, Any] = {name: stored[name] for name in stored.files}
        header = json.loads(str(data.pop("header")[()]))
        return cls.from_dict({**header, **data})

    def _json_params(self) -> dict[str, Any]:
        """The parameters, with a `RandomState` seed (not JSON) stored as None."""
        params = dict(self.get_params())
        seed = params["random_state"]
        is_seed = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        params["random_state"] = int(seed) if is_seed else None
        return params


def _pack_forest(forest: IsolationForest) -> dict[str, npt.NDArray[Any]]:
    """All trees of a fitted forest as packed node arrays (see `AnomalyScorer` attributes)."""
    trees = [estimator.tree_ for estimator in forest.estimators_]
    sizes = np.array([tree.node_count for tree in trees], dtype=np.intp)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in PACKED[1:]}
    for tree, start in zip(trees, starts, strict=True):
        leaf = tree.children_left == TREE_LEAF
        own = start + np.arange(tree.node_count, dtype=np.intp)
        depth = tree.compute_node_depths()  # the root is at depth 1, as sklearn counts
        credit = depth + average_path_length(tree.n_node_samples) - 1.0
        parts["feature"].append(np.where(leaf, 0, tree.feature))
        parts["threshold"].append(np.where(leaf, 0.0, tree.threshold))
        parts["left"].append(np.where(leaf, own, start + tree.children_left))
        parts["right"].append(np.where(leaf, own, start + tree.children_right))
        parts["leaf_value"].append(np.where(leaf, credit, 0.0))
    return {"tree_start": starts, **{k: np.concatenate(v) for k, v in parts.items()}}


def _walk_depth(tree_start: IndexArray, left: IndexArray, right: IndexArray) -> int:
    """Levels needed for every root to reach a leaf (the deepest leaf, in splits).

    Raises:
        ValueError: when some path does not end in a leaf (a cycle in a corrupt artifact).
    """
    frontier = np.unique(tree_start)
    leaf = (left == right) & (left == np.arange(len(left)))
    levels = 0
    while True:
        frontier = frontier[~leaf[frontier]]
        if len(frontier) == 0:
            return levels
        levels += 1
        if levels > len(left):
            msg = "not an anomaly scorer: the packed trees hold a cycle"
            raise ValueError(msg)
        frontier = np.unique(np.concatenate([left[frontier], right[frontier]]))


def _check_packed(packed: Mapping[str, npt.NDArray[Any]], n_features: int, medians: Any) -> None:
    """Refuse packed arrays that cannot be a forest over `n_features` columns.

    Raises:
        ValueError: naming the first problem.
    """
    n_nodes = len(packed["feature"])
    problems = [
        (np.shape(medians) != (n_features,), f"medians must hold {n_features} values"),
        (any(packed[k].shape != (n_nodes,) for k in PACKED[1:]), "node arrays differ in length"),
        (packed["tree_start"].ndim != 1 or len(packed["tree_start"]) == 0, "no trees"),
    ]
    for bad, what in problems:
        if bad:
            raise ValueError(f"not an anomaly scorer: {what}")
    indices = (packed["tree_start"], packed["left"], packed["right"])
    if any(a.size and (a.min() < 0 or a.max() >= n_nodes) for a in indices):
        raise ValueError("not an anomaly scorer: a node index is out of range")
    if packed["feature"].min() < 0 or packed["feature"].max() >= n_features:
        raise ValueError("not an anomaly scorer: a split feature is out of range")
