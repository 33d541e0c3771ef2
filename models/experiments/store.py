"""The store of experiment definitions and first assignments, under the data directory.

Files (all written through a temp file and a rename, under an exclusive lock so that two
commands never interleave their read-modify-write):
- `experiments.parquet`: the contract table (experiment_id, key, layer, variants, start_ts,
  end_ts, status): the source of truth for which experiments exist, their status and window;
- `experiment_definitions/<experiment_id>.json`: the rest of each definition created here
  (hypothesis, targeting, metrics, traffic, the layer buckets it owns once started);
  experiments written by the simulator or an importer have none;
- `assignments.parquet`: the contract table of first assignments (one row per experiment
  and customer, never changed once written).

The experiment_id of an experiment created here is its key. Starting allocates the lowest
free range of the layer's buckets (`traffic` of them) that no running experiment of the
same layer holds when their windows and targeting overlap; an experiment without a
definition counts as targeting everyone and holding the whole layer.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from cashback.contract import ASSIGNMENTS, EXPERIMENTS, TS
from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import append_table, load_table, read_table, table_path, write_table
from cashback.vocab import ExperimentStatus
from models.experiments.definition import BucketRange, ExperimentDefinition, Targeting

DEFINITIONS_DIR = "experiment_definitions"
LOCK_FILE = ".experiments.lock"


@dataclass(frozen=True)
class ExperimentRow:
    """One row of the experiments table, and whether a full definition is stored with it."""

    experiment_id: str
    key: str
    layer: str
    status: ExperimentStatus
    start: datetime
    end: datetime | None
    variants: tuple[tuple[str, float, str], ...]
    defined: bool


@dataclass(frozen=True)
class _Holder:
    """A running experiment that holds buckets of a layer."""

    key: str
    start: datetime
    end: datetime | None
    targeting: Targeting
    buckets: BucketRange


@dataclass(frozen=True)
class Recorded:
    """What recording assignments did: rows added and customers already assigned."""

    added: int
    kept: int


def _windows_overlap(
    a: tuple[datetime, datetime | None], b: tuple[datetime, datetime | None]
) -> bool:
    a_ends_after_b_starts = a[1] is None or b[0] < a[1]
    b_ends_after_a_starts = b[1] is None or a[0] < b[1]
    return a_ends_after_b_starts and b_ends_after_a_starts


def free_range(taken: list[BucketRange], size: int, buckets: int) -> BucketRange | None:
    """The lowest [start, start + size) within [0, buckets) that meets no taken range."""
    start = 0
    for held in sorted(taken, key=lambda r: r.start):
        if held.start - start >= size:
            break
        start = max(start, held.end)
    if start + size > buckets:
        return None
    return BucketRange(start=start, end=start + size)


class ExperimentStore:
    """Create, list, get, start and stop experiments; record first assignments.

    Args:
        directory: the data directory.
        buckets: buckets of a layer (`settings.experiments.buckets`).
    """

    def __init__(self, directory: Path, *, buckets: int = 10_000) -> None:
        self.directory = directory
        self.buckets = buckets

    @classmethod
    def from_settings(cls, settings: Settings) -> ExperimentStore:
        """The store of the settings' data directory."""
        return cls(settings.data_dir, buckets=settings.experiments.buckets)

    # ------------------------------------------------------------------------- reading

    def _table(self) -> pl.DataFrame:
        if not table_path(self.directory, EXPERIMENTS.name).exists():
            return EXPERIMENTS.empty()
        return load_table(self.directory, EXPERIMENTS.name)

    def _definition_path(self, experiment_id: str) -> Path:
        return self.directory / DEFINITIONS_DIR / f"{experiment_id}.json"

    def list_experiments(self) -> list[ExperimentRow]:
        """Every experiment of the table, by start time then key."""
        rows = self._table().sort("start_ts", "key").iter_rows(named=True)
        return [self._row(row) for row in rows]

    def _row(self, row: dict[str, Any]) -> ExperimentRow:
        return ExperimentRow(
            experiment_id=row["experiment_id"],
            key=row["key"],
            layer=row["layer"],
            status=ExperimentStatus(row["status"]),
            start=row["start_ts"],
            end=row["end_ts"],
            variants=tuple((v["name"], v["weight"], v["policy"]) for v in row["variants"]),
            defined=self._definition_path(row["experiment_id"]).exists(),
        )

    def _find(self, table: pl.DataFrame, key: str) -> dict[str, Any]:
        found = table.filter(pl.col("key") == key)
        if found.is_empty():
            known = ", ".join(sorted(table["key"].to_list())) or "none yet"
            msg = (
                f"no experiment {key!r} (known: {known}); create it with "
                "`cashback experiments create FILE.yaml`"
            )
            raise CashbackError(msg)
        return found.row(0, named=True)

    def _load(self, row: dict[str, Any]) -> ExperimentDefinition:
        path = self._definition_path(row["experiment_id"])
        if not path.exists():
            msg = (
                f"experiment {row['key']!r} has no definition ({path} is missing): it was "
                "written by the simulator or an importer, and can only be listed"
            )
            raise CashbackError(msg)
        stored = ExperimentDefinition.model_validate_json(path.read_text(encoding="utf-8"))
        state = {"status": row["status"], "start": row["start_ts"], "stop": row["end_ts"]}
        return ExperimentDefinition.model_validate({**stored.model_dump(), **state})

    def get(self, key: str) -> ExperimentDefinition:
        """The experiment `key`, with its status and window from the table.

        Raises:
            CashbackError: when there is no such experiment, or it has no definition.
        """
        return self._load(self._find(self._table(), key))

    def running(self) -> list[ExperimentDefinition]:
        """Every running experiment that has a definition (what serving assigns from)."""
        table = self._table().filter(pl.col("status") == ExperimentStatus.RUNNING.value)
        rows = table.sort("start_ts", "key").iter_rows(named=True)
        return [self._load(r) for r in rows if self._definition_path(r["experiment_id"]).exists()]

    # ------------------------------------------------------------------------- writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _save_definition(self, definition: ExperimentDefinition) -> None:
        path = self._definition_path(definition.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(definition.model_dump_json(indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def _save_row(self, table: pl.DataFrame, definition: ExperimentDefinition) -> None:
        row = pl.DataFrame(
            {
                "experiment_id": [definition.key],
                "key": [definition.key],
                "layer": [definition.layer],
                "variants": [
                    [
                        {"name": v.name, "weight": v.weight, "policy": v.policy}
                        for v in definition.variants
                    ]
                ],
                "start_ts": [definition.start],
                "end_ts": [definition.stop],
                "status": [definition.status.value],
            },
            schema=EXPERIMENTS.schema,
        )
        others = table.filter(pl.col("experiment_id") != definition.key)
        write_table(self.directory, EXPERIMENTS.name, pl.concat([others, row]))

    def create(self, definition: ExperimentDefinition) -> ExperimentDefinition:
        """Add a new experiment, in draft.

        Raises:
            CashbackError: when the key is taken, or the definition is not a draft.
        """
        if definition.status != ExperimentStatus.DRAFT or definition.layer_buckets is not None:
            msg = (
                f"experiment {definition.key!r}: a new experiment is a draft without layer buckets"
            )
            raise CashbackError(msg)
        with self._locked():
            table = self._table()
            taken = table.filter(
                (pl.col("key") == definition.key) | (pl.col("experiment_id") == definition.key)
            )
            if not taken.is_empty():
                status = taken["status"][0]
                msg = (
                    f"experiment {definition.key!r} already exists ({status}): keys are never "
                    "reused, give the new experiment another key"
                )
                raise CashbackError(msg)
            self._save_definition(definition)
            self._save_row(table, definition)
        return definition

    def _holders(self, table: pl.DataFrame, layer: str, key: str) -> list[_Holder]:
        """Running experiments of the layer (other than `key`) and the buckets they hold."""
        running = table.filter(
            (pl.col("layer") == layer)
            & (pl.col("status") == ExperimentStatus.RUNNING.value)
            & (pl.col("key") != key)
        )
        holders = []
        for row in running.iter_rows(named=True):
            whole = BucketRange(start=0, end=self.buckets)
            if self._definition_path(row["experiment_id"]).exists():
                other = self._load(row)
                holders.append(
                    _Holder(
                        other.key,
                        other.start,
                        other.stop,
                        other.targeting,
                        other.layer_buckets or whole,
                    )
                )
            else:
                holders.append(
                    _Holder(row["key"], row["start_ts"], row["end_ts"], Targeting(), whole)
                )
        return holders

    def start(self, key: str, now: datetime) -> ExperimentDefinition:
        """Start a draft: it runs from max(start, now) and gets its range of the layer.

        Raises:
            CashbackError: when it is not a draft, its stop has passed, or the layer has no
                room: naming the running experiments that overlap it in time and targeting.
        """
        with self._locked():
            table = self._table()
            definition = self._load(self._find(table, key))
            started = definition.transition(ExperimentStatus.RUNNING)
            if now >= definition.stop:
                msg = (
                    f"experiment {key!r} was to stop at {definition.stop:%Y-%m-%d %H:%M} UTC: it "
                    "cannot start any more; create a new experiment with a later stop"
                )
                raise CashbackError(msg)
            begin = max(definition.start, now)
            conflicts = [
                h
                for h in self._holders(table, definition.layer, key)
                if _windows_overlap((begin, definition.stop), (h.start, h.end))
                and definition.targeting.overlaps(h.targeting)
            ]
            size = definition.buckets_for(self.buckets)
            taken = free_range([h.buckets for h in conflicts], size, self.buckets)
            if taken is None:
                raise CashbackError(_no_room(definition, conflicts, size, self.buckets))
            started = started.model_copy(update={"start": begin, "layer_buckets": taken})
            self._save_definition(started)
            self._save_row(table, started)
        return started

    def stop(self, key: str, now: datetime) -> ExperimentDefinition:
        """Stop a running experiment; its window ends now when now is inside it.

        Raises:
            CashbackError: when it is not running.
        """
        with self._locked():
            table = self._table()
            definition = self._load(self._find(table, key))
            stopped = definition.transition(ExperimentStatus.STOPPED)
            if definition.start < now < definition.stop:
                stopped = stopped.model_copy(update={"stop": now})
            self._save_row(table, stopped)
        return stopped

    # ------------------------------------------------------------------------- assignments

    def assignments(self, experiment_id: str | None = None) -> pl.LazyFrame:
        """The assignments table (of one experiment), empty when there is none yet."""
        if not table_path(self.directory, ASSIGNMENTS.name).exists():
            lf = ASSIGNMENTS.empty().lazy()
        else:
            lf = read_table(self.directory, ASSIGNMENTS.name)
        return lf if experiment_id is None else lf.filter(pl.col("experiment_id") == experiment_id)

    def record_assignments(
        self, experiment_id: str, assigned: pl.DataFrame, ts: datetime
    ) -> Recorded:
        """Add the customers not yet assigned to the experiment; keep every earlier row.

        Args:
            experiment_id: the experiment.
            assigned: customer_id and variant of today's assignment, and `ts` when each
                customer was assigned at their own time.
            ts: when they were assigned (rows without their own `ts`).

        Returns:
            How many rows were added, and how many customers already had one (kept as is).
        """
        with self._locked():
            existing = self.assignments().collect()
            known = existing.filter(pl.col("experiment_id") == experiment_id).select("customer_id")
            first = assigned.unique("customer_id", keep="first", maintain_order=True)
            stamp = pl.col("ts") if "ts" in first.columns else pl.lit(ts)
            new = first.join(known, on="customer_id", how="anti").select(
                pl.lit(experiment_id).alias("experiment_id"),
                "customer_id",
                "variant",
                stamp.cast(TS).alias("ts"),
            )
            append_table(self.directory, ASSIGNMENTS.name, new)
        return Recorded(added=new.height, kept=first.height - new.height)


def _describe(holder: _Holder) -> str:
    until = f"..{holder.end:%Y-%m-%d}" if holder.end is not None else " onwards"
    return (
        f"{holder.key!r} (running {holder.start:%Y-%m-%d}{until} UTC, buckets "
        f"[{holder.buckets.start}, {holder.buckets.end}))"
    )


def _no_room(
    definition: ExperimentDefinition, conflicts: list[_Holder], size: int, buckets: int
) -> str:
    holders = "; ".join(_describe(h) for h in conflicts)
    return (
        f"cannot start {definition.key!r}: layer {definition.layer!r} has no {size:,} free "
        f"buckets of {buckets:,} for it; overlapping in time, layer and targeting: {holders}. "
        "Stop them, give this experiment disjoint targeting, or lower the traffic of both"
    )
