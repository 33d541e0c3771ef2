"""Deterministic assignment of customers to experiments: the hash, layers, holdout, variants.

The hash. Every decision is a bucket of a salted customer id:

    bucket(salt, customer_id, B) = fmix64(fnv1a64(utf8(salt + ":" + customer_id))) mod B

- `fnv1a64` is 64-bit FNV-1a over the UTF-8 bytes: h = 0xcbf29ce484222325, then for each
  byte b: h = (h XOR b) * 0x100000001b3 mod 2**64;
- `fmix64` is MurmurHash3's 64-bit finalizer, which spreads every input bit over the low
  bits that `mod B` keeps: h ^= h >> 33; h = h * 0xff51afd7ed558ccd mod 2**64;
  h ^= h >> 33; h = h * 0xc4ceb9fe1a85ec53 mod 2**64; h ^= h >> 33;
- the result is read as an unsigned 64-bit integer, and `mod B` (B =
  `settings.experiments.buckets`, default 10,000) gives the bucket in [0, B).

For instance the hash of "global-holdout:c000001" is 13892169472621316531, so
bucket("global-holdout", "c000001", 10000) = 6531, and bucket("layer:rates", "c000001",
10000) = 4967 (more in `tests/models/experiments/test_assignment.py`). The function is plain
integer arithmetic, the same on every platform and in every language.

The salts:
- the global holdout: `settings.experiments.holdout_salt` (default "global-holdout");
- a layer: "layer:" + layer (so "layer:rates:c000001" is hashed);
- the variants of one experiment: "experiment:" + key.

The rules, in this order (DESIGN.md: holdout, then experiments, then the personalized
policy):
1. the customer id must be a non-empty string (an int is read as its decimal digits);
2. holdout: bucket(holdout_salt) < floor(holdout_share * B + 0.5): the customer gets the
   default rate card and enters no experiment;
3. each experiment in the order given that is active (status running and start <= at <
   stop) takes the customer when the targeting includes the customer's segment and
   lifecycle stage and bucket("layer:" + layer) lies in the experiment's `layer_buckets`
   [start, end); the first one that does wins. Running experiments of one layer whose
   targeting overlaps own disjoint ranges (the store allocates them), so they never share a
   customer; a set that breaks this is an error;
4. the variant: with the running sums of the weights c_i = w_0 + ... + w_i (float64, left to
   right) and the boundaries e_i = floor(c_i * B + 0.5) (the last one set to B), the
   customer gets the first variant i with bucket("experiment:" + key) < e_i.

`assign` decides for one customer (the serving path); `assign_batch` for many at once and
gives the very same answers, vectorized in numpy (over a million customers a second). It
never fails open: when anything is wrong (a broken definition, a missing id) the customer
is in no experiment and not in the holdout: control, the default rate card, with
`reason="error"` and the error stated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from cashback.settings import ExperimentSettings, Settings
from cashback.vocab import ExperimentStatus
from models.experiments.definition import WEIGHT_TOLERANCE, ExperimentDefinition

FNV_OFFSET: Final = 0xCBF29CE484222325
FNV_PRIME: Final = 0x100000001B3
FMIX_1: Final = 0xFF51AFD7ED558CCD
FMIX_2: Final = 0xC4CEB9FE1A85EC53
MASK64: Final = (1 << 64) - 1
LAYER_SALT_PREFIX: Final = "layer:"
EXPERIMENT_SALT_PREFIX: Final = "experiment:"
MISSING_ID: Final = "customer_id is missing or empty"
COLUMNS: Final = ("customer_id", "experiment_key", "variant", "holdout", "reason", "error")

U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]


class Reason(StrEnum):
    """Why a customer got what they got."""

    HOLDOUT = "holdout"
    EXPERIMENT = "experiment"
    NO_EXPERIMENT = "no_experiment"
    ERROR = "error"


class Assignment(BaseModel):
    """One customer's assignment.

    Attributes:
        experiment_key: the experiment the customer is in, None when in none.
        variant: the variant within it, None when in no experiment.
        holdout: whether the customer is in the global holdout (default rate card).
        reason: holdout, experiment, no_experiment, or error.
        error: what went wrong when reason is error (the customer then gets control: no
            experiment, the default rate card).
    """

    model_config = ConfigDict(frozen=True)

    experiment_key: str | None
    variant: str | None
    holdout: bool
    reason: Reason
    error: str | None = None


class AssignmentError(ValueError):
    """A set of experiments or settings that cannot be assigned from."""


# ---------------------------------------------------------------- the hash, one at a time


def fnv1a64(data: bytes, state: int = FNV_OFFSET) -> int:
    """64-bit FNV-1a of `data`, continuing from `state` (the offset basis by default)."""
    for byte in data:
        state = ((state ^ byte) * FNV_PRIME) & MASK64
    return state


def fmix64(h: int) -> int:
    """MurmurHash3's 64-bit finalizer."""
    h ^= h >> 33
    h = (h * FMIX_1) & MASK64
    h ^= h >> 33
    h = (h * FMIX_2) & MASK64
    return h ^ (h >> 33)


@lru_cache(maxsize=4096)
def _salt_state(salt: str) -> int:
    """FNV-1a state after `salt:`, shared by every id hashed with this salt."""
    return fnv1a64(f"{salt}:".encode())


def hash64(salt: str, customer_id: str) -> int:
    """The 64-bit hash of `salt:customer_id` (see the module docstring)."""
    return fmix64(fnv1a64(customer_id.encode(), _salt_state(salt)))


def bucket(salt: str, customer_id: str, buckets: int) -> int:
    """The bucket in [0, buckets) of one customer id under a salt."""
    return hash64(salt, customer_id) % buckets


# ---------------------------------------------------------------- the hash, vectorized


@dataclass(frozen=True)
class Utf8Ids:
    """The UTF-8 bytes of a string Series, with each row's start and length (nulls: 0).

    Converting once lets several salts hash the same ids.
    """

    data: npt.NDArray[np.uint8]
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]

    @classmethod
    def of(cls, ids: pl.Series) -> Utf8Ids:
        """The bytes of a string Series (through its Arrow buffers, no Python loop)."""
        arrow = ids.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
        if arrow.type != pa.large_string():
            arrow = arrow.cast(pa.large_string())
        _, offsets_buffer, data_buffer = arrow.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
            arrow.offset : arrow.offset + len(arrow) + 1
        ]
        data = (
            np.frombuffer(data_buffer, dtype=np.uint8)
            if data_buffer is not None
            else np.zeros(0, dtype=np.uint8)
        )
        return cls(data, offsets[:-1], np.diff(offsets))

    def __len__(self) -> int:
        return len(self.starts)


def hash64_array(salt: str, ids: pl.Series | Utf8Ids) -> U64:
    """`hash64` of every id of a string Series, in numpy (nulls hash as the empty string)."""
    utf8 = ids if isinstance(ids, Utf8Ids) else Utf8Ids.of(ids)
    data, starts, lengths = utf8.data, utf8.starts, utf8.lengths
    h = np.full(len(utf8), _salt_state(salt), dtype=np.uint64)
    if len(utf8) == 0 or data.size == 0:
        return _fmix64_array(h)
    prime = np.uint64(FNV_PRIME)
    shortest, longest = int(lengths.min()), int(lengths.max())
    if shortest == longest:  # rows of one length lie back to back: a (rows, length) view
        first = int(starts[0])
        rows = data[first : first + len(utf8) * shortest].reshape(len(utf8), shortest)
        for j in range(shortest):
            h ^= rows[:, j]
            h *= prime
        return _fmix64_array(h)
    position = starts.copy()
    for j in range(longest):
        if j < shortest:
            h ^= data[position]
            h *= prime
            position += 1
            continue
        rows_left = np.flatnonzero(lengths > j)
        h[rows_left] = (h[rows_left] ^ data[starts[rows_left] + j]) * prime
    return _fmix64_array(h)


def _fmix64_array(h: U64) -> U64:
    shift = np.uint64(33)
    h ^= h >> shift
    h *= np.uint64(FMIX_1)
    h ^= h >> shift
    h *= np.uint64(FMIX_2)
    h ^= h >> shift
    return h


def bucket_array(salt: str, ids: pl.Series | Utf8Ids, buckets: int) -> U64:
    """`bucket` of every id of a string Series (or of ids already converted)."""
    return hash64_array(salt, ids) % np.uint64(buckets)


# ---------------------------------------------------------------- compiling the experiments


@dataclass(frozen=True)
class _Arm:
    """One active experiment, checked and reduced to what assignment needs."""

    definition: ExperimentDefinition
    layer_salt: str
    variant_salt: str
    start: int
    end: int
    boundaries: tuple[int, ...]
    names: tuple[str, ...]

    def takes(self, layer_bucket: int, segment: str | None, lifecycle: str | None) -> bool:
        in_range = self.start <= layer_bucket < self.end
        return in_range and self.definition.targeting.includes(segment, lifecycle)

    def variant(self, variant_bucket: int) -> str:
        return next(
            n for n, e in zip(self.names, self.boundaries, strict=True) if variant_bucket < e
        )


@dataclass(frozen=True)
class _Plan:
    buckets: int
    holdout_salt: str
    holdout_below: int
    arms: tuple[_Arm, ...]


def variant_boundaries(weights: Sequence[float], buckets: int) -> tuple[int, ...]:
    """The exclusive upper bucket of each variant (see rule 4 of the module docstring)."""
    total = 0.0
    ends = []
    for weight in weights:
        total += weight
        ends.append(math.floor(total * buckets + 0.5))
    ends[-1] = buckets
    return tuple(ends)


def _experiment_settings(settings: Settings | ExperimentSettings) -> ExperimentSettings:
    return settings.experiments if isinstance(settings, Settings) else settings


def _check_settings(config: ExperimentSettings) -> None:
    if not isinstance(config.buckets, int) or config.buckets < 1:
        msg = f"experiments.buckets must be a positive integer, got {config.buckets!r}"
        raise AssignmentError(msg)
    if not 0.0 <= config.holdout_share < 1.0:
        msg = f"experiments.holdout_share must be in [0, 1), got {config.holdout_share!r}"
        raise AssignmentError(msg)
    if not isinstance(config.holdout_salt, str) or not config.holdout_salt:
        msg = "experiments.holdout_salt must be a non-empty string"
        raise AssignmentError(msg)


def _arm(experiment: ExperimentDefinition, buckets: int) -> _Arm:
    """Check one active experiment and compile it.

    Raises:
        AssignmentError: naming the experiment and what is wrong with it.
    """
    name = f"experiment {experiment.key!r}"
    weights = [float(v.weight) for v in experiment.variants]
    names = [v.name for v in experiment.variants]
    if not weights or len(set(names)) != len(names):
        msg = f"{name}: needs variants with unique names, got {names}"
        raise AssignmentError(msg)
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        msg = f"{name}: variant weights must be finite and non-negative, got {weights}"
        raise AssignmentError(msg)
    if abs(math.fsum(weights) - 1.0) > WEIGHT_TOLERANCE:
        msg = f"{name}: variant weights sum to {math.fsum(weights)!r}, not 1"
        raise AssignmentError(msg)
    taken = experiment.layer_buckets
    if taken is None:
        msg = (
            f"{name} is running without layer buckets (start it with `cashback experiments start`)"
        )
        raise AssignmentError(msg)
    if not 0 <= taken.start < taken.end <= buckets:
        msg = f"{name}: layer buckets [{taken.start}, {taken.end}) are outside [0, {buckets})"
        raise AssignmentError(msg)
    return _Arm(
        definition=experiment,
        layer_salt=LAYER_SALT_PREFIX + experiment.layer,
        variant_salt=EXPERIMENT_SALT_PREFIX + experiment.key,
        start=taken.start,
        end=taken.end,
        boundaries=variant_boundaries(weights, buckets),
        names=tuple(names),
    )


def _check_exclusive(arms: Sequence[_Arm]) -> None:
    for i, first in enumerate(arms):
        for second in arms[i + 1 :]:
            a, b = first.definition, second.definition
            if (
                a.layer == b.layer
                and first.start < second.end
                and second.start < first.end
                and a.targeting.overlaps(b.targeting)
            ):
                msg = (
                    f"experiments {a.key!r} and {b.key!r} of layer {a.layer!r} share buckets "
                    f"and targeting: a customer could be in both"
                )
                raise AssignmentError(msg)


def _compile(
    experiments: Iterable[object],
    settings: Settings | ExperimentSettings,
    at: datetime,
) -> _Plan:
    """Check the settings and the active experiments, and reduce them to a plan.

    Raises:
        AssignmentError: when anything would make an assignment wrong.
    """
    config = _experiment_settings(settings)
    _check_settings(config)
    arms = []
    for experiment in experiments:
        if not isinstance(experiment, ExperimentDefinition):
            msg = f"expected an ExperimentDefinition, got {type(experiment).__name__}"
            raise AssignmentError(msg)
        if experiment.status not in set(ExperimentStatus):
            msg = f"experiment {experiment.key!r} has an unknown status {experiment.status!r}"
            raise AssignmentError(msg)
        if experiment.active_at(at):
            arms.append(_arm(experiment, config.buckets))
    _check_exclusive(arms)
    return _Plan(
        buckets=config.buckets,
        holdout_salt=config.holdout_salt,
        holdout_below=math.floor(config.holdout_share * config.buckets + 0.5),
        arms=tuple(arms),
    )


def _failure(error: Exception) -> str:
    return (
        f"{type(error).__name__}: {error}" if not isinstance(error, AssignmentError) else str(error)
    )


# ---------------------------------------------------------------- one customer


def _control(error: Exception) -> Assignment:
    return Assignment(
        experiment_key=None, variant=None, holdout=False, reason=Reason.ERROR, error=_failure(error)
    )


def _customer_text(customer_id: object) -> str:
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        return str(customer_id)
    if customer_id is None or customer_id == "":
        raise AssignmentError(MISSING_ID)
    if not isinstance(customer_id, str):
        msg = f"customer_id must be a string, got {type(customer_id).__name__}"
        raise AssignmentError(msg)
    return customer_id


def assign(
    customer_id: str,
    experiments: Iterable[ExperimentDefinition],
    settings: Settings | ExperimentSettings,
    *,
    segment: str | None = None,
    lifecycle: str | None = None,
    at: datetime | None = None,
) -> Assignment:
    """Assign one customer: holdout, else the first active experiment that takes them.

    Args:
        customer_id: the customer.
        experiments: candidate experiments (e.g. every running one of the store); only the
            active ones at `at` count. Give the experiments of one decision: layers are
            orthogonal, a customer may be in one experiment per layer.
        settings: the service settings (or their `experiments` part).
        segment: the customer's segment, for targeting (None: unknown, outside any
            experiment that targets segments).
        lifecycle: the customer's lifecycle stage, likewise.
        at: the time of the decision (default: now).

    Returns:
        The assignment; on any error the customer gets control and `error` says why.
    """
    try:
        plan = _compile(experiments, settings, at or datetime.now(UTC))
        text = _customer_text(customer_id)
        if bucket(plan.holdout_salt, text, plan.buckets) < plan.holdout_below:
            return Assignment(
                experiment_key=None, variant=None, holdout=True, reason=Reason.HOLDOUT
            )
        for arm in plan.arms:
            if arm.takes(bucket(arm.layer_salt, text, plan.buckets), segment, lifecycle):
                variant = arm.variant(bucket(arm.variant_salt, text, plan.buckets))
                return Assignment(
                    experiment_key=arm.definition.key,
                    variant=variant,
                    holdout=False,
                    reason=Reason.EXPERIMENT,
                )
        return Assignment(
            experiment_key=None, variant=None, holdout=False, reason=Reason.NO_EXPERIMENT
        )
    except Exception as error:  # noqa: BLE001 - never fail open: control, with the error
        return _control(error)


# ---------------------------------------------------------------- many customers


def _series(
    values: pl.Series | npt.NDArray[np.generic] | Sequence[object] | None, n: int, name: str
) -> pl.Series:
    if values is None:
        return pl.repeat(None, n, dtype=pl.String, eager=True).alias(name)
    series = values if isinstance(values, pl.Series) else pl.Series(name, values)
    if len(series) != n:
        msg = f"{name} has {len(series):,} values for {n:,} customers"
        raise AssignmentError(msg)
    return series.cast(pl.String).alias(name)


def _id_strings(ids: pl.Series) -> pl.Series:
    if ids.dtype == pl.String:
        return ids
    if ids.dtype.is_integer() or ids.dtype == pl.Null:
        return ids.cast(pl.String)
    msg = f"customer_id must be a string, got {ids.dtype}"
    raise AssignmentError(msg)


def _targeted(arm: _Arm, segments: pl.Series, lifecycles: pl.Series) -> Mask:
    targeting = arm.definition.targeting
    mask = np.ones(len(segments), dtype=np.bool_)
    if targeting.segments:
        mask &= segments.is_in(list(targeting.segments)).fill_null(value=False).to_numpy()
    if targeting.lifecycle:
        stages = [str(stage) for stage in targeting.lifecycle]
        mask &= lifecycles.is_in(stages).fill_null(value=False).to_numpy()
    return mask


def _names(names: Sequence[str], index: npt.NDArray[np.int32], name: str) -> pl.Series:
    """names[index], null where index is -1."""
    if not names or not (index >= 0).any():
        return pl.repeat(None, len(index), dtype=pl.String, eager=True).alias(name)
    positions = pl.Series(name, np.ma.masked_array(index, mask=index < 0))
    return pl.Series(name, list(names), dtype=pl.String).gather(positions).alias(name)


def _errors(ids: pl.Series, message: str) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "customer_id": ids,
            "experiment_key": pl.Series([None] * n, dtype=pl.String),
            "variant": pl.Series([None] * n, dtype=pl.String),
            "holdout": pl.Series([False] * n, dtype=pl.Boolean),
            "reason": pl.Series([Reason.ERROR.value] * n, dtype=pl.String),
            "error": pl.Series([message] * n, dtype=pl.String),
        }
    )


def assign_batch(
    customer_ids: pl.Series | npt.NDArray[np.generic] | Sequence[str],
    experiments: Iterable[ExperimentDefinition],
    settings: Settings | ExperimentSettings,
    *,
    segments: pl.Series | npt.NDArray[np.generic] | Sequence[str | None] | None = None,
    lifecycles: pl.Series | npt.NDArray[np.generic] | Sequence[str | None] | None = None,
    at: datetime | None = None,
) -> pl.DataFrame:
    """Assign many customers at once, exactly as `assign` would one by one.

    Args:
        customer_ids: the customers (strings; ints are read as their digits).
        experiments: candidate experiments (see `assign`).
        settings: the service settings (or their `experiments` part).
        segments: each customer's segment, aligned with the ids (None: all unknown).
        lifecycles: each customer's lifecycle stage, likewise.
        at: the time of the decision (default: now).

    Returns:
        One row per customer, in order: customer_id, experiment_key, variant, holdout,
        reason and error (see `Assignment`).
    """
    ids = customer_ids if isinstance(customer_ids, pl.Series) else pl.Series(customer_ids)
    ids = ids.alias("customer_id")
    try:
        ids = _id_strings(ids)
        plan = _compile(experiments, settings, at or datetime.now(UTC))
        segment_values = _series(segments, len(ids), "segment")
        stage_values = _series(lifecycles, len(ids), "lifecycle")
    except Exception as error:  # noqa: BLE001 - never fail open: control, with the error
        return _errors(ids, _failure(error))
    return _assign_plan(plan, ids, segment_values, stage_values)


def _assign_plan(
    plan: _Plan, ids: pl.Series, segments: pl.Series, lifecycles: pl.Series
) -> pl.DataFrame:
    utf8 = Utf8Ids.of(ids)
    bad = utf8.lengths == 0  # null or empty
    holdout = ~bad & (bucket_array(plan.holdout_salt, utf8, plan.buckets) < plan.holdout_below)
    free = ~bad & ~holdout
    experiment = np.full(len(ids), -1, dtype=np.int32)
    variant = np.full(len(ids), -1, dtype=np.int32)
    names: list[str] = []
    layers: dict[str, U64] = {}
    for i, arm in enumerate(plan.arms):
        if arm.layer_salt not in layers:
            layers[arm.layer_salt] = bucket_array(arm.layer_salt, utf8, plan.buckets)
        layer = layers[arm.layer_salt]
        takes = free & (layer >= arm.start) & (layer < arm.end)
        takes &= _targeted(arm, segments, lifecycles)
        drawn = bucket_array(arm.variant_salt, utf8, plan.buckets)
        ends = np.asarray(arm.boundaries, dtype=np.uint64)
        experiment[takes] = i
        variant[takes] = len(names) + np.searchsorted(ends, drawn[takes], side="right")
        names.extend(arm.names)
        free &= ~takes
    reason = np.select([bad, holdout, experiment >= 0], [3, 0, 1], default=2).astype(np.int32)
    order = [Reason.HOLDOUT, Reason.EXPERIMENT, Reason.NO_EXPERIMENT, Reason.ERROR]
    return pl.DataFrame(
        [
            ids,
            _names([a.definition.key for a in plan.arms], experiment, "experiment_key"),
            _names(names, variant, "variant"),
            pl.Series("holdout", holdout),
            _names([r.value for r in order], reason, "reason"),
            _names([MISSING_ID], np.where(bad, 0, -1).astype(np.int32), "error"),
        ]
    )
