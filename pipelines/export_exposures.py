"""`cashback exposures export`: the API's exposures into the contract tables.

The API stores each offer it decides in the app database (`offer_decisions`). Training
(`cashback train rates` learns from exposures and their propensities) and the experiments'
analysis (`cashback experiments analyze` reads first assignments) read the contract tables
under the data directory. This job copies what is new:

- every stored exposure whose `exposure_id` the `exposures` table lacks, with its offer,
  rate, policy version, experiment, variant and propensity;
- the first assignment of each customer to each experiment the API put them in (the
  exposure's time and variant), through the experiment store (earlier ones are kept).

Run it before training or analysing (e.g. daily from cron). It is idempotent: a second run
adds nothing. Nothing is half-written: each table is written through a temp file (or as a
new part of a table stored in parts) after its rows pass the contract's checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import polars as pl
from sqlalchemy import Table, select

from cashback.contract import EXPOSURES, TS
from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import append_table, read_table, table_lock, table_path
from models.experiments.store import ExperimentStore
from serving.db import open_database
from serving.tables import OfferDecision

OFFERS = cast(Table, OfferDecision.__table__)
COLUMNS = (
    "exposure_id", "customer_id", "ts", "valid_until", "offer_id", "rate", "policy_version",
    "experiment_id", "variant", "propensity",
)  # fmt: skip


@dataclass(frozen=True)
class ExposureExport:
    """What an export added.

    Attributes:
        stored: exposures in the app database.
        added: exposures added to the exposures table.
        assignments: first assignments added, by experiment.
    """

    stored: int
    added: int
    assignments: dict[str, int] = field(default_factory=dict)


def served_exposures(settings: Settings) -> pl.DataFrame:
    """Every exposure the API stored, in the exposures table's columns (oldest first)."""
    database = open_database(settings)
    try:
        query = select(*(OFFERS.c[c] for c in COLUMNS)).order_by(OFFERS.c.id)
        with database.engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        database.close()
    schema = {c: EXPOSURES.schema[c] for c in COLUMNS}
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def _new_exposures(settings: Settings, served: pl.DataFrame) -> pl.DataFrame:
    path = table_path(settings.data_dir, EXPOSURES.name)
    if not path.exists():
        return served
    known = read_table(settings.data_dir, EXPOSURES.name).select("exposure_id").collect()
    return served.join(known, on="exposure_id", how="anti")


def _refuse_overlaps(settings: Settings, new: pl.DataFrame) -> None:
    """Stop when a new exposure overlaps one of the table for the same customer.

    Windows never overlap (DESIGN.md): outcomes belong to the one exposure valid when they
    happen. An overlap means the table holds exposures the API did not know about (e.g.
    the logging policy's, still valid when serving started).

    Raises:
        CashbackError: naming how many overlap and the first pair; nothing is written.
    """
    if new.is_empty() or not table_path(settings.data_dir, EXPOSURES.name).exists():
        return
    existing = (
        read_table(settings.data_dir, EXPOSURES.name)
        .select("customer_id", "exposure_id", "ts", "valid_until")
        .join(new.lazy().select("customer_id").unique(), on="customer_id")
    )
    clashes = (
        new.lazy()
        .select("customer_id", "exposure_id", "ts", "valid_until")
        .join(existing, on="customer_id", suffix="_table")
        .filter(
            pl.col("ts") < pl.col("valid_until_table"), pl.col("ts_table") < pl.col("valid_until")
        )
        .collect()
    )
    if clashes.height:
        first = clashes.row(0, named=True)
        msg = (
            f"{clashes.height:,} served exposures overlap exposures of the table (first: "
            f"{first['exposure_id']} from {first['ts']:%Y-%m-%d %H:%M} overlaps "
            f"{first['exposure_id_table']} valid until "
            f"{first['valid_until_table']:%Y-%m-%d %H:%M}); "
            "nothing written: serve offers after the table's last exposures end"
        )
        raise CashbackError(msg)


def _record_assignments(settings: Settings, served: pl.DataFrame) -> dict[str, int]:
    """First assignments of the API's experiment exposures, per experiment."""
    store = ExperimentStore.from_settings(settings)
    assigned = served.filter(pl.col("experiment_id").is_not_null()).sort("ts")
    added: dict[str, int] = {}
    for (experiment_id,), rows in assigned.group_by("experiment_id", maintain_order=True):
        first = rows.unique("customer_id", keep="first", maintain_order=True)
        at = cast(datetime, first["ts"].min())  # each row carries its own ts
        recorded = store.record_assignments(
            str(experiment_id), first.select("customer_id", "variant", "ts"), at
        )
        added[str(experiment_id)] = recorded.added
    return added


def run(settings: Settings) -> ExposureExport:
    """Copy the API's new exposures and first assignments into the contract tables.

    Args:
        settings: the service settings (data directory, app database).

    Raises:
        ContractError: a stored exposure breaks the exposures table's rules.
        CashbackError: a new exposure overlaps one of the table (nothing is written).
    """
    served = served_exposures(settings).with_columns(pl.col("ts", "valid_until").cast(TS))
    with table_lock(settings.data_dir, EXPOSURES.name):  # two exports never add a row twice
        new = _new_exposures(settings, served)
        _refuse_overlaps(settings, new)
        append_table(settings.data_dir, EXPOSURES.name, new)
    return ExposureExport(
        stored=served.height, added=new.height, assignments=_record_assignments(settings, served)
    )
