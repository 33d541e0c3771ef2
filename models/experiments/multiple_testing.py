"""Multiple testing across metrics and variants: Holm (family-wise) and Benjamini-Hochberg (FDR).

Holm controls the chance of any false positive among all the p-values; Benjamini-Hochberg
controls the expected share of false positives among those declared significant, and is
the less conservative choice when many secondary metrics are read. Both return adjusted
p-values, to be compared with the unadjusted alpha; any array shape (e.g. metrics x
variants) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.experiments.stats import FloatArray, check_alpha

Method = Literal["holm", "bh"]


@dataclass(frozen=True, eq=False)
class AdjustedPValues:
    """P-values adjusted for multiplicity.

    Attributes:
        method: "holm" or "bh".
        alpha: the family's error rate.
        p_values: the raw p-values, in the shape given.
        adjusted: the adjusted p-values, same shape.
        rejected: adjusted <= alpha, same shape.
    """

    method: Method
    alpha: float
    p_values: FloatArray
    adjusted: FloatArray
    rejected: npt.NDArray[np.bool_]


def holm(p_sorted: FloatArray) -> FloatArray:
    """Holm step-down adjustment of ascending p-values: running max of (m - i) p_(i)."""
    m = p_sorted.size
    scaled = (m - np.arange(m)) * p_sorted
    return np.minimum(np.maximum.accumulate(scaled), 1.0)


def benjamini_hochberg(p_sorted: FloatArray) -> FloatArray:
    """Benjamini-Hochberg step-up of ascending p-values: min over j >= i of m p_(j) / j."""
    m = p_sorted.size
    scaled = m * p_sorted / np.arange(1, m + 1)
    return np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)


ADJUSTMENTS = {"holm": holm, "bh": benjamini_hochberg}


def adjust_p_values(
    p_values: npt.ArrayLike, *, method: Method, alpha: float = 0.05
) -> AdjustedPValues:
    """Adjust p-values for multiple testing.

    Args:
        p_values: raw p-values in [0, 1], any shape (e.g. metrics x variants).
        method: "holm" (family-wise error rate) or "bh" (false discovery rate).
        alpha: the family's error rate, for `rejected`.

    Returns:
        Adjusted p-values and rejections, in the input's shape.
    """
    check_alpha(alpha)
    raw = np.asarray(p_values, dtype=np.float64)
    flat = raw.ravel()
    if flat.size == 0 or not np.all((flat >= 0) & (flat <= 1)):
        raise ValueError("p_values must be a non-empty array of numbers in [0, 1]")
    # a stable sort keeps tied p-values in input order, so results do not depend on ties
    order = np.argsort(flat, kind="stable")
    if method not in ADJUSTMENTS:
        raise ValueError(f"method must be one of {sorted(ADJUSTMENTS)}, got {method!r}")
    adjust = ADJUSTMENTS[method]
    adjusted = np.empty_like(flat)
    adjusted[order] = adjust(flat[order])
    shaped = adjusted.reshape(raw.shape)
    return AdjustedPValues(method, alpha, raw, shaped, shaped <= alpha)
