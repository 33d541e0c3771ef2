"""Qini and uplift curves of an uplift score for a binary treatment, and their areas (numpy only).

Rows are sorted by decreasing score; at the end of each group of tied scores (the curve is
only defined there, since the order inside a tie is arbitrary), with the first k rows
targeted:
- Qini curve:   Y_t(k) - Y_c(k) * N_t(k) / N_c(k)   (incremental outcomes, in outcome units)
- uplift curve: (Y_t(k) / N_t(k) - Y_c(k) / N_c(k)) * N(k)
where N_t, N_c are the treated and control rows (sums of weights) among the first k, Y_t, Y_c
their summed outcomes, and a ratio with an empty denominator counts as 0. Both start at
(0, 0). Areas are trapezoids over the targeted population (a count, or a sum of weights).

The normalised scores are scikit-uplift 0.5.1's (`sklift.metrics.qini_auc_score`,
`uplift_auc_score`): (area - random) / (perfect - random), where "random" is the straight line
from (0, 0) to the end of the perfect curve and "perfect" the curve of scikit-uplift's perfect
score. Without weights every value here equals scikit-uplift's; a weight w counts a row w
times (integer weights equal repeated rows). scikit-uplift takes (y_true, uplift, treatment);
these functions take (y, treatment, score).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Curve = tuple[FloatArray, FloatArray]


@dataclass(frozen=True)
class UpliftScores:
    """The areas and normalised scores of one uplift score.

    Attributes:
        qini_coefficient: normalised area under the Qini curve, as scikit-uplift's
            `qini_auc_score` (negative_effect=True); None unless the outcome is binary.
        uplift_auc: normalised area under the uplift curve, as scikit-uplift's
            `uplift_auc_score`; None unless the outcome is binary.
        qini_area: area under the Qini curve (unnormalised).
        qini_area_random: area under the random line of the Qini curve (to subtract).
        uplift_area: area under the uplift curve (AUUC, unnormalised).
        uplift_area_random: area under the random line of the uplift curve.
        size: rows (sum of weights).
        treated: treated rows (sum of weights).
    """

    qini_coefficient: float | None
    uplift_auc: float | None
    qini_area: float
    qini_area_random: float
    uplift_area: float
    uplift_area_random: float
    size: float
    treated: float


@dataclass(frozen=True)
class _Cumulative:
    """Running sums at the end of each group of tied scores, in decreasing score order."""

    size: FloatArray
    treated: FloatArray
    treated_outcome: FloatArray
    control: FloatArray
    control_outcome: FloatArray


def _as_vector(name: str, values: npt.ArrayLike) -> FloatArray:
    """A finite 1-D float array, or a ValueError naming the argument."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _checked(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike | None,
    weights: npt.ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Validated (y, treatment, score, weights); score zeros and weights ones when absent."""
    y_ = _as_vector("y", y)
    t = _as_vector("treatment", treatment)
    s = np.zeros_like(y_) if score is None else _as_vector("score", score)
    w = np.ones_like(y_) if weights is None else _as_vector("weights", weights)
    if y_.size == 0:
        raise ValueError("y: no rows")
    if not y_.size == t.size == s.size == w.size:
        raise ValueError(
            f"y, treatment, score, weights: lengths differ ({y_.size}, {t.size}, {s.size}, "
            f"{w.size})"
        )
    if not np.all(np.isin(t, (0.0, 1.0))):
        raise ValueError("treatment: expected 0 (control) or 1 (treated) only")
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights: must be non-negative with a positive total")
    # A row of weight 0 is no row at all (else its score would add a point to the curves).
    keep = w > 0
    return y_[keep], t[keep], s[keep], w[keep]


def _require_both_groups(treatment: FloatArray, weights: FloatArray) -> None:
    """Normalising needs treated and control rows (with positive weight)."""
    treated = float(np.sum(weights * treatment))
    if treated <= 0 or treated >= float(np.sum(weights)):
        raise ValueError("treatment: both treated and control rows (positive weight) needed")


def _require_binary(y: FloatArray) -> None:
    """The perfect curves (scikit-uplift's) are defined for a 0/1 outcome only."""
    if not _is_binary(y):
        raise ValueError("y: the perfect curve needs a binary (0/1) outcome")


def _is_binary(y: FloatArray) -> bool:
    """Whether every outcome is 0 or 1."""
    return bool(np.all(np.isin(y, (0.0, 1.0))))


def _cumulative(y: FloatArray, t: FloatArray, s: FloatArray, w: FloatArray) -> _Cumulative:
    """Running sums by decreasing score, at the end of each group of ties."""
    # Same order as scikit-uplift (reversed stable sort) so that sums add up identically.
    order = np.argsort(s, kind="mergesort")[::-1]
    y, t, s, w = y[order], t[order], s[order], w[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    treated_w = w * t
    control_w = w * (1.0 - t)
    return _Cumulative(
        size=np.cumsum(w)[ends],
        treated=np.cumsum(treated_w)[ends],
        treated_outcome=np.cumsum(treated_w * y)[ends],
        control=np.cumsum(control_w)[ends],
        control_outcome=np.cumsum(control_w * y)[ends],
    )


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """Numerator / denominator, 0 where the denominator is 0 (no such rows targeted yet)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _from_origin(x: FloatArray, values: FloatArray) -> Curve:
    """The curve with (0, 0) prepended unless it already starts there."""
    if x.size == 0 or values[0] != 0 or x[0] != 0:
        return np.r_[0.0, x], np.r_[0.0, values]
    return x, values


def _qini(c: _Cumulative) -> Curve:
    """Qini curve points from the running sums."""
    values = c.treated_outcome - c.control_outcome * _ratio(c.treated, c.control)
    return _from_origin(c.size, values)


def _uplift(c: _Cumulative) -> Curve:
    """Uplift curve points from the running sums."""
    rates = _ratio(c.treated_outcome, c.treated) - _ratio(c.control_outcome, c.control)
    return _from_origin(c.size, rates * c.size)


def _area(curve: Curve) -> float:
    """Trapezoid area under a curve."""
    x, values = curve
    return float(np.trapezoid(values, x))


def _random_area(curve: Curve) -> float:
    """Area under the line from (0, 0) to the curve's end (random targeting)."""
    x, values = curve
    return float(x[-1] * values[-1] / 2.0)


def _normalised(actual: Curve, perfect: Curve) -> float:
    """(actual - random) / (perfect - random); NaN when the perfect curve is the random one."""
    random = _random_area(perfect)
    best = _area(perfect) - random
    return (_area(actual) - random) / best if best != 0 else float("nan")


def _perfect_qini(y: FloatArray, t: FloatArray, w: FloatArray) -> Curve:
    """scikit-uplift's perfect Qini curve with negative effects allowed (checked input)."""
    # Treated responders first, control responders last: the score y*t - y*(1-t).
    return _qini(_cumulative(y, t, y * t - y * (1.0 - t), w))


def _perfect_qini_positive(y: FloatArray, t: FloatArray, w: FloatArray) -> Curve:
    """scikit-uplift's perfect Qini curve when no row can have a negative effect."""
    treated_w = w * t
    control_w = w * (1.0 - t)
    gain = float(
        np.sum(treated_w * y) - np.sum(treated_w) * np.sum(control_w * y) / np.sum(control_w)
    )
    # All the gain is reached after targeting that many rows, then the curve is flat.
    return np.array([0.0, gain, float(np.sum(w))]), np.array([0.0, gain, gain])


def _perfect_uplift(y: FloatArray, t: FloatArray, w: FloatArray) -> Curve:
    """scikit-uplift's perfect uplift curve (checked input, binary y)."""
    control_responders = float(np.sum(w * (y == 1) * (t == 0)))
    treated_non_responders = float(np.sum(w * (y == 0) * (t == 1)))
    # Treated responders and control non-responders first; of the two other kinds, the
    # one with more rows goes last (scikit-uplift's tie rule, kept to match it).
    summand = y if control_responders > treated_non_responders else t
    return _uplift(_cumulative(y, t, 2.0 * (y == t) + summand, w))


def qini_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> Curve:
    """Qini curve of an uplift score.

    Args:
        y: outcome per row (any real outcome; scikit-uplift requires 0/1).
        treatment: 1 for treated rows, 0 for control rows.
        score: predicted uplift per row (higher is targeted first).
        weights: optional non-negative weight per row (a weight w counts the row w times).

    Returns:
        (targeted population, incremental outcomes), starting at (0, 0), one point per
        distinct score.

    Raises:
        ValueError: inconsistent or invalid input (naming the argument).
    """
    return _qini(_cumulative(*_checked(y, treatment, score, weights)))


def uplift_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> Curve:
    """Uplift curve (difference in mean outcome times the targeted population).

    Args:
        y: outcome per row.
        treatment: 1 for treated rows, 0 for control rows.
        score: predicted uplift per row.
        weights: optional non-negative weight per row.

    Returns:
        (targeted population, uplift times population), starting at (0, 0).

    Raises:
        ValueError: inconsistent or invalid input (naming the argument).
    """
    return _uplift(_cumulative(*_checked(y, treatment, score, weights)))


def perfect_qini_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    negative_effect: bool = True,
) -> Curve:
    """The Qini curve of a perfect score, as scikit-uplift 0.5.1 defines it.

    Args:
        y: binary outcome per row.
        treatment: 1 for treated rows, 0 for control rows.
        weights: optional non-negative weight per row.
        negative_effect: whether some rows may be hurt by the treatment (scikit-uplift's
            flag): if not, the perfect curve reaches the total gain at once, then stays flat.

    Returns:
        (targeted population, incremental outcomes) of the perfect score.

    Raises:
        ValueError: invalid input, a non-binary outcome, or no treated or no control row.
    """
    y_, t, _, w = _checked(y, treatment, None, weights)
    _require_binary(y_)
    _require_both_groups(t, w)
    return _perfect_qini(y_, t, w) if negative_effect else _perfect_qini_positive(y_, t, w)


def perfect_uplift_curve(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> Curve:
    """The uplift curve of a perfect score, as scikit-uplift 0.5.1 defines it.

    Args:
        y: binary outcome per row.
        treatment: 1 for treated rows, 0 for control rows.
        weights: optional non-negative weight per row.

    Returns:
        (targeted population, uplift times population) of the perfect score.

    Raises:
        ValueError: invalid input, a non-binary outcome, or no treated or no control row.
    """
    y_, t, _, w = _checked(y, treatment, None, weights)
    _require_binary(y_)
    _require_both_groups(t, w)
    return _perfect_uplift(y_, t, w)


def qini_auc_score(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    negative_effect: bool = True,
) -> float:
    """Qini coefficient: the Qini area over random, divided by the perfect score's.

    Args:
        y: binary outcome per row.
        treatment: 1 for treated rows, 0 for control rows.
        score: predicted uplift per row.
        weights: optional non-negative weight per row.
        negative_effect: scikit-uplift's flag for the perfect curve (see
            `perfect_qini_curve`).

    Returns:
        1 for a perfect ranking, about 0 for a random one; NaN if the perfect curve is the
        random line (no effect to rank).

    Raises:
        ValueError: invalid input, a non-binary outcome, no treated or no control row, or
            negative_effect=False with a negative overall gain.
    """
    y_, t, s, w = _checked(y, treatment, score, weights)
    _require_binary(y_)
    _require_both_groups(t, w)
    perfect = _perfect_qini(y_, t, w) if negative_effect else _perfect_qini_positive(y_, t, w)
    if np.any(np.diff(perfect[0]) < 0):
        # A negative overall gain sends that curve back in x (scikit-uplift refuses it too).
        raise ValueError("negative_effect=False: the treated group gains less than control")
    return _normalised(_qini(_cumulative(y_, t, s, w)), perfect)


def uplift_auc_score(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> float:
    """Normalised AUUC: the uplift curve's area over random, divided by the perfect score's.

    Args:
        y: binary outcome per row.
        treatment: 1 for treated rows, 0 for control rows.
        score: predicted uplift per row.
        weights: optional non-negative weight per row.

    Returns:
        1 for a perfect ranking, about 0 for a random one; NaN if there is no effect to rank.

    Raises:
        ValueError: invalid input, a non-binary outcome, or no treated or no control row.
    """
    y_, t, s, w = _checked(y, treatment, score, weights)
    _require_binary(y_)
    _require_both_groups(t, w)
    return _normalised(_uplift(_cumulative(y_, t, s, w)), _perfect_uplift(y_, t, w))


def uplift_scores(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    score: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> UpliftScores:
    """All the areas of one score; the normalised ones only for a binary outcome.

    Args:
        y: outcome per row (binary for the normalised scores; any real outcome otherwise).
        treatment: 1 for treated rows, 0 for control rows.
        score: predicted uplift per row.
        weights: optional non-negative weight per row.

    Returns:
        The scores (see `UpliftScores`).

    Raises:
        ValueError: invalid input, or no treated or no control row.
    """
    y_, t, s, w = _checked(y, treatment, score, weights)
    _require_both_groups(t, w)
    cumulative = _cumulative(y_, t, s, w)
    qini, uplift = _qini(cumulative), _uplift(cumulative)
    binary = _is_binary(y_)
    return UpliftScores(
        qini_coefficient=_normalised(qini, _perfect_qini(y_, t, w)) if binary else None,
        uplift_auc=_normalised(uplift, _perfect_uplift(y_, t, w)) if binary else None,
        qini_area=_area(qini),
        qini_area_random=_random_area(qini),
        uplift_area=_area(uplift),
        uplift_area_random=_random_area(uplift),
        size=float(np.sum(w)),
        treated=float(np.sum(w * t)),
    )


def qini_by_level(
    y: npt.ArrayLike,
    rate: npt.ArrayLike,
    uplift_by_level: Mapping[float, npt.ArrayLike],
    weights: npt.ArrayLike | None = None,
) -> dict[float, UpliftScores]:
    """Qini and AUUC of each rate level against the 0 % (control) level.

    For each level r > 0: the rows with rate 0 or r, treatment = (rate == r), score = the
    predicted uplift of r over 0 on those rows.

    Args:
        y: outcome per row.
        rate: the rate each row was given (0 is the control level).
        uplift_by_level: for each level r > 0, the predicted uplift of r over 0 for every
            row (the same length as y; only the rows at 0 or r are used).
        weights: optional non-negative weight per row (e.g. inverse propensities).

    Returns:
        The scores of each level, in increasing level order.

    Raises:
        ValueError: a level not above 0, a score of the wrong length, or a level without
            rows or without control rows.
    """
    rates = _as_vector("rate", rate)
    y_ = _as_vector("y", y)
    w = np.ones_like(rates) if weights is None else _as_vector("weights", weights)
    if not rates.size == y_.size == w.size:
        raise ValueError(f"y, rate, weights: lengths differ ({y_.size}, {rates.size}, {w.size})")
    # Rates come from a grid; a tolerance keeps 0.1 + 0.2-style rounding from losing rows.
    control = np.isclose(rates, 0.0, rtol=0.0, atol=1e-12)
    result: dict[float, UpliftScores] = {}
    for level in sorted(uplift_by_level):
        if not level > 0:
            raise ValueError(f"uplift_by_level: level {level} is not above the control (0)")
        score = _as_vector(f"uplift_by_level[{level}]", uplift_by_level[level])
        if score.size != rates.size:
            raise ValueError(f"uplift_by_level[{level}]: {score.size} scores for {rates.size} rows")
        treated = np.isclose(rates, level, rtol=0.0, atol=1e-12)
        if not np.any(treated):
            raise ValueError(f"rate: no row at level {level}")
        keep = control | treated
        result[float(level)] = uplift_scores(y_[keep], treated[keep], score[keep], w[keep])
    return result
