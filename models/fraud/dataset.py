"""What the fraud model learns from: labelled, mature claims, split by time, as a matrix.

Labels (DESIGN.md): a claim is fraud when any of its labels says fraud (a chargeback, a
review decision, or the random audit sample), legit when it only has legit labels, and
unknown otherwise: unlabelled claims are never treated as legit. Only labels decided by the
cut-off count, and claims younger than the maturity window at the cut-off are out of
training and metrics (their labels may still be on the way).

Splits are by claim time: train (earliest), validation (early stopping), calibration, test
(latest), each a share of the mature period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from cashback.errors import CashbackError
from cashback.vocab import Label, LabelSource, Lifecycle

LABEL = "label"
SOURCE = "label_source"
SPLIT = "split"
SPLITS = ("train", "validation", "calibration", "test")
CATEGORICAL = {"lifecycle": [stage.value for stage in Lifecycle]}
FloatMatrix = npt.NDArray[np.float64]


def claim_labels(labels: pl.LazyFrame, cutoff: datetime | None) -> pl.LazyFrame:
    """One label per claim from the labels decided by the cut-off.

    Args:
        labels: the claim_labels table.
        cutoff: labels decided after it are not known yet; None: every label of the table
            (all known now, also those decided after the last claim, e.g. by the risk team
            reviewing it).

    Returns:
        claim_id, `label` (1 fraud, 0 legit), `label_source` (the sources that labelled it,
        joined with "+", sorted), and `abuse_type` (of a fraud label, when given).
    """
    known = labels if cutoff is None else labels.filter(pl.col("decided_ts") <= cutoff)
    return known.group_by("claim_id").agg(
        (pl.col("label") == Label.FRAUD.value).any().cast(pl.Int8).alias(LABEL),
        pl.col("source").unique().sort().str.join("+").alias(SOURCE),
        pl.col("abuse_type").filter(pl.col("label") == Label.FRAUD.value).drop_nulls().first(),
    )


def audited(source: pl.Expr) -> pl.Expr:
    """Whether a claim is in the random audit sample (its metrics describe every claim)."""
    return source.str.contains(LabelSource.AUDIT.value).fill_null(value=False)


@dataclass(frozen=True)
class Periods:
    """The mature period of claims and its split points.

    Attributes:
        cutoff: labels known at this time.
        mature_until: claims at or after this are too young.
        bounds: start of validation, calibration and test (claim time).
    """

    cutoff: datetime
    mature_until: datetime
    bounds: tuple[datetime, datetime, datetime]

    def split(self) -> pl.Expr:
        """The split of each claim by its `ts` (null when too young)."""
        validation, calibration, test = self.bounds
        ts = pl.col("ts")
        return (
            pl.when(ts >= self.mature_until)
            .then(None)
            .when(ts >= test)
            .then(pl.lit("test"))
            .when(ts >= calibration)
            .then(pl.lit("calibration"))
            .when(ts >= validation)
            .then(pl.lit("validation"))
            .otherwise(pl.lit("train"))
            .alias(SPLIT)
        )


def periods(
    first_claim: datetime,
    cutoff: datetime,
    maturity: timedelta,
    shares: tuple[float, float, float],
) -> Periods:
    """Split the mature period [first claim, cutoff - maturity) by time.

    Args:
        first_claim: time of the first claim.
        cutoff: labels known at this time.
        maturity: claims younger than this at the cut-off are out.
        shares: validation, calibration and test shares of the mature period (the rest is
            training).

    Raises:
        CashbackError: when the history is shorter than the maturity window.
    """
    mature_until = cutoff - maturity
    span = mature_until - first_claim
    if span <= timedelta(0):
        msg = (
            f"no mature claims: the history ({first_claim:%Y-%m-%d} to {cutoff:%Y-%m-%d}) is "
            f"shorter than the maturity window ({maturity.days} days, setting "
            "CASHBACK_FRAUD__MATURITY_DAYS)"
        )
        raise CashbackError(msg)
    validation, calibration, test = shares
    test_start = mature_until - span * test
    calibration_start = test_start - span * calibration
    validation_start = calibration_start - span * validation
    return Periods(cutoff, mature_until, (validation_start, calibration_start, test_start))


def encode(frame: pl.DataFrame, features: list[str], spare_columns: int = 0) -> FloatMatrix:
    """The feature matrix: floats, NaN for nulls, categoricals as their vocabulary index.

    Args:
        frame: rows with every feature column.
        features: the columns, in model order.
        spare_columns: NaN columns appended after the features: room for columns computed
            from them (the anomaly score) without copying the matrix again.

    Raises:
        CashbackError: naming the missing feature columns.
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        msg = f"claim features missing: {', '.join(missing)}"
        raise CashbackError(msg)
    columns = []
    for name in features:
        column = pl.col(name)
        if name in CATEGORICAL:
            column = column.replace_strict(
                CATEGORICAL[name], list(range(len(CATEGORICAL[name]))), default=None
            )
        columns.append(column.cast(pl.Float64).fill_null(np.nan).alias(name))
    spare = [pl.lit(np.nan, dtype=pl.Float64).alias(f"__spare_{i}") for i in range(spare_columns)]
    return frame.select(*columns, *spare).to_numpy().astype(np.float64, copy=False)


def encode_row(values: dict[str, object], features: list[str]) -> FloatMatrix:
    """The same encoding for one claim's feature mapping (the serving path).

    Raises:
        CashbackError: naming a field whose value is not a number.

    The values are gathered in a list and converted once (a request path: numpy's
    per-item assignment would cost as much as the rest of the conversion).
    """
    row: list[float] = []
    for name in features:
        value = values.get(name)
        if value is None:
            row.append(math.nan)
        elif name in CATEGORICAL:
            vocabulary = CATEGORICAL[name]
            row.append(vocabulary.index(str(value)) if value in vocabulary else math.nan)
        else:
            try:
                row.append(float(value))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                msg = f"claim field {name}: expected a number, got {value!r}"
                raise CashbackError(msg) from None
    return np.array([row], dtype=np.float64)
