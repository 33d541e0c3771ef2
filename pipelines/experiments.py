"""`cashback experiments ...`: define, start, stop and assign experiments.

One function per command. Definitions and first assignments live under the data
directory (see `models.experiments.store`); assignment follows
`models.experiments.assignment` (the same function serving calls).

`assign` reads the customers from the contract customers table, or from a file given with
`--customers` (parquet or CSV with customer_id, and segment and lifecycle for targeting,
such as the output of `cashback segments export`). Customers already assigned keep their
first assignment; holdout customers and customers the experiment does not take get no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import read_table
from cashback.vocab import ExperimentStatus
from models.experiments.assignment import Reason, assign_batch
from models.experiments.definition import ExperimentDefinition, load_definition
from models.experiments.store import ExperimentRow, ExperimentStore

TARGETING_COLUMNS = ("segment", "lifecycle")


@dataclass(frozen=True)
class Shown:
    """An experiment and how many customers each variant has so far."""

    definition: ExperimentDefinition
    assigned: Mapping[str, int]


@dataclass(frozen=True)
class Assigned:
    """What `assign` did.

    Attributes:
        key: the experiment.
        customers: customers considered.
        holdout: of them, in the global holdout.
        taken: of them, taken by the experiment today.
        added: new assignments written.
        kept: customers taken today who already had an assignment (kept as it was).
        variants: customers per variant in the table, after this run.
        at: the time of the assignment.
    """

    key: str
    customers: int
    holdout: int
    taken: int
    added: int
    kept: int
    variants: Mapping[str, int]
    at: datetime


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def create(settings: Settings, path: Path) -> ExperimentDefinition:
    """Create a draft experiment from a YAML definition file."""
    definition = load_definition(path)
    return ExperimentStore.from_settings(settings).create(definition)


def list_all(settings: Settings) -> list[ExperimentRow]:
    """Every experiment of the data directory."""
    return ExperimentStore.from_settings(settings).list_experiments()


def _variant_counts(store: ExperimentStore, key: str) -> dict[str, int]:
    counts = store.assignments(key).group_by("variant").len().collect()
    return dict(zip(counts["variant"].to_list(), counts["len"].to_list(), strict=True))


def show(settings: Settings, key: str) -> Shown:
    """One experiment, with its assignments per variant."""
    store = ExperimentStore.from_settings(settings)
    definition = store.get(key)
    counts = _variant_counts(store, key)
    return Shown(definition, {v.name: counts.get(v.name, 0) for v in definition.variants})


def start(settings: Settings, key: str, now: datetime | None = None) -> ExperimentDefinition:
    """Start a draft experiment (refused when its layer has no room: see the store)."""
    return ExperimentStore.from_settings(settings).start(key, _now(now))


def stop(settings: Settings, key: str, now: datetime | None = None) -> ExperimentDefinition:
    """Stop a running experiment."""
    return ExperimentStore.from_settings(settings).stop(key, _now(now))


def _read_customers(path: Path) -> pl.LazyFrame:
    suffix = path.suffix.lower()
    if not path.exists():
        msg = f"{path}: customers file not found"
        raise CashbackError(msg)
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    if suffix == ".csv":
        return pl.scan_csv(path, schema_overrides={"customer_id": pl.String})
    msg = f"{path}: expected a .parquet or .csv file of customers"
    raise CashbackError(msg)


def customers_frame(
    settings: Settings, definition: ExperimentDefinition, path: Path | None
) -> pl.DataFrame:
    """customer_id, segment and lifecycle of the customers to assign.

    Raises:
        CashbackError: when the file lacks customer_id, or the targeting needs a column
            the source does not have.
    """
    source = str(path) if path else "the customers table"
    lf = _read_customers(path) if path else read_table(settings.data_dir, "customers")
    columns = lf.collect_schema().names()
    if "customer_id" not in columns:
        msg = f"{source}: no customer_id column (columns: {', '.join(columns)})"
        raise CashbackError(msg)
    needed = {
        "segment": bool(definition.targeting.segments),
        "lifecycle": bool(definition.targeting.lifecycle),
    }
    missing = [name for name, needs in needed.items() if needs and name not in columns]
    if missing:
        msg = (
            f"{source}: experiment {definition.key!r} targets by {' and '.join(missing)}, which "
            "it lacks: pass --customers FILE with those columns (e.g. from `cashback segments "
            "export --format parquet`)"
        )
        raise CashbackError(msg)
    chosen = [
        pl.col(name).cast(pl.String) if name in columns else pl.lit(None, pl.String).alias(name)
        for name in TARGETING_COLUMNS
    ]
    return lf.select(pl.col("customer_id").cast(pl.String), *chosen).collect()


def _refuse_inactive(definition: ExperimentDefinition, at: datetime) -> None:
    if definition.active_at(at):
        return
    if definition.status != ExperimentStatus.RUNNING:
        msg = (
            f"experiment {definition.key!r} is {definition.status}: only a running experiment "
            f"assigns (`cashback experiments start {definition.key}`)"
        )
    elif at < definition.start:
        msg = f"experiment {definition.key!r} starts at {definition.start:%Y-%m-%d %H:%M} UTC"
    else:
        msg = f"experiment {definition.key!r} ended at {definition.stop:%Y-%m-%d %H:%M} UTC"
    raise CashbackError(msg)


def assign(
    settings: Settings, key: str, customers: Path | None = None, now: datetime | None = None
) -> Assigned:
    """Assign the customers the experiment takes, and record the first assignments.

    Raises:
        CashbackError: when the experiment is not active, or a customer cannot be assigned
            (nothing is written then).
    """
    at = _now(now)
    store = ExperimentStore.from_settings(settings)
    definition = store.get(key)
    _refuse_inactive(definition, at)
    frame = customers_frame(settings, definition, customers)
    result = assign_batch(
        frame["customer_id"],
        [definition],
        settings,
        segments=frame["segment"],
        lifecycles=frame["lifecycle"],
        at=at,
    )
    failed = result.filter(pl.col("reason") == Reason.ERROR.value)
    if not failed.is_empty():
        msg = (
            f"{failed.height:,} of {result.height:,} customers could not be assigned "
            f"(first: {failed['customer_id'][0]!r}: {failed['error'][0]}); nothing written"
        )
        raise CashbackError(msg)
    taken = result.filter(pl.col("experiment_key") == key).select("customer_id", "variant")
    recorded = store.record_assignments(key, taken, at)
    return Assigned(
        key=key,
        customers=result.height,
        holdout=int(result["holdout"].sum()),
        taken=taken.height,
        added=recorded.added,
        kept=recorded.kept,
        variants=_variant_counts(store, key),
        at=at,
    )
