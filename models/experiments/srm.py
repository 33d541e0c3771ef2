"""Sample ratio mismatch: are the customers per variant those the weights promise?

A chi-square goodness-of-fit test of the observed counts against the design's weights. A
mismatch (p below a strict threshold, 0.001 by default, since the check runs on every
experiment and every peek) means the assignment or the logging is broken, and the results
should not be trusted until it is explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SrmCheck:
    """Result of the sample ratio mismatch test.

    Attributes:
        observed: customers per variant.
        expected: customers per variant the weights imply for the same total.
        statistic: the chi-square statistic.
        df: its degrees of freedom (variants - 1).
        p_value: chi-square p-value.
        threshold: p-value below which a mismatch is flagged.
        mismatch: whether p_value < threshold.
    """

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    statistic: float
    df: int
    p_value: float
    threshold: float
    mismatch: bool


def check_srm(
    observed: Sequence[int], weights: Sequence[float], *, threshold: float = 0.001
) -> SrmCheck:
    """Chi-square goodness-of-fit of observed counts against expected weights.

    Args:
        observed: customers assigned to each variant (>= 0).
        weights: the design's weight of each variant (> 0; normalized here).
        threshold: flag a mismatch when the p-value is below it.

    Returns:
        The test and the flag.
    """
    counts = np.asarray(observed, dtype=np.int64)
    shares = np.asarray(weights, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or counts.size != shares.size:
        raise ValueError("give one count and one weight per variant, for at least 2 variants")
    if np.any(counts < 0) or counts.sum() == 0:
        raise ValueError(f"counts must be >= 0 with a positive total, got {counts.tolist()}")
    if not np.all(np.isfinite(shares) & (shares > 0)):
        raise ValueError(f"weights must be > 0, got {shares.tolist()}")
    expected = shares / shares.sum() * counts.sum()
    statistic, p_value = stats.chisquare(counts, expected)
    p = float(p_value)
    return SrmCheck(
        observed=tuple(int(c) for c in counts),
        expected=tuple(float(e) for e in expected),
        statistic=float(statistic),
        df=counts.size - 1,
        p_value=p,
        threshold=threshold,
        mismatch=p < threshold,
    )
