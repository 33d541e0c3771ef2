"""Reading and writing contract tables: validated, and atomic (temp file, then rename)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import polars as pl
import pyarrow.parquet as pq

from cashback.contract import TABLES, TableSpec, spec
from cashback.errors import CashbackError
from cashback.validation import ContractError, ValidationReport, check_dataset, check_table

PARQUET_COMPRESSION: Final[Literal["zstd"]] = "zstd"
ROW_GROUP_SIZE: Final = 1_000_000
ExportFormat = Literal["csv", "parquet"]
EXPORT_FORMATS: Final[dict[str, ExportFormat]] = {"csv": "csv", "parquet": "parquet"}


def table_path(directory: Path, name: str) -> Path:
    """Where table `name` lives in a data directory."""
    return directory / spec(name).file_name


def conform(table: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Select the contract columns in order, casting compatible dtypes (e.g. Int64 to Float64).

    Raises:
        ContractError: when a column is missing or cannot be cast.
    """
    # the schema only (no rows): row rules are the caller's, with the right row numbers
    report = check_table(table, _castable(table, frame).head(0))
    if not report.ok:
        raise ContractError(report, table.name)
    return frame.select(table.schema.names()).cast(table.schema)


def _castable(table: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast what casts losslessly so that the schema check only reports real mismatches.

    A numeric or temporal cast is kept only when casting back gives the original values (7.0
    becomes 7; 7.5 stays a float and is reported as a dtype mismatch).
    """
    casts = {}
    for name, dtype in table.schema.items():
        if name in frame.columns and frame.schema[name] != dtype:
            original = frame[name]
            with contextlib.suppress(pl.exceptions.PolarsError):
                cast = original.cast(dtype, strict=True)
                source = original.dtype
                numeric = source.is_numeric() or source.is_temporal()
                if not numeric or cast.cast(source, strict=True).equals(original):
                    casts[name] = cast
    return frame.with_columns(list(casts.values())) if casts else frame


def read_table(directory: Path, name: str) -> pl.LazyFrame:
    """Scan a contract table, checking its schema.

    Args:
        directory: the data directory.
        name: the table name.

    Returns:
        A lazy frame with exactly the contract columns.

    Raises:
        FileNotFoundError: naming the missing file.
        ContractError: when a column is missing or has the wrong dtype.
    """
    table = spec(name)
    path = table_path(directory, name)
    if not path.exists():
        msg = (
            f"{path}: table {name!r} not found "
            "(run `cashback data simulate` or `cashback data import`)"
        )
        raise FileNotFoundError(msg)
    lf = scan_parquet_path(path)
    report = check_table(table, lf.head(0).collect())
    if not report.ok:
        raise ContractError(report, str(path))
    return lf.select(table.schema.names())


def scan_parquet_path(path: Path) -> pl.LazyFrame:
    """Scan a parquet file, or a directory of parquet parts (read in part-name order)."""
    if path.is_dir():
        return pl.scan_parquet(sorted(path.glob("*.parquet")) or path / "*.parquet")
    return pl.scan_parquet(path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp file beside `path` to write; renamed onto `path` only when the block succeeds.

    Yields:
        The temp file's path (in the same directory, created if needed, so the rename is
        atomic). On error it is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write one parquet file through a temp file and a rename."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression=PARQUET_COMPRESSION, statistics=True)
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    """Write a UTF-8 text file (a report, a JSON document) through a temp file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def export_format(path: Path) -> ExportFormat:
    """The file format a path's suffix names.

    Raises:
        CashbackError: when the suffix is neither `.csv` nor `.parquet`.
    """
    suffix = path.suffix.lower().removeprefix(".")
    if suffix not in EXPORT_FORMATS:
        msg = f"{path}: cannot tell the format from the suffix; name a .csv or .parquet file"
        raise CashbackError(msg)
    return EXPORT_FORMATS[suffix]


def write_export(frame: pl.DataFrame, path: Path, file_format: ExportFormat) -> Path:
    """Write a frame for people and other tools (CSV or parquet), atomically."""
    if file_format == "parquet":
        return write_parquet_atomic(frame, path)
    return write_text_atomic(frame.write_csv(), path)


def write_table_part(directory: Path, name: str, part: int, frame: pl.DataFrame) -> Path:
    """Write one part of a table stored as a directory of parts (`<name>.parquet/part-N`).

    Parts let several processes write one table; readers scan them in part order. Keys
    unique across parts are the caller's job (check with `validate_directory`).

    Raises:
        ContractError: nothing is written when a row breaks a one-table rule.
    """
    table = spec(name)
    data = conform(table, frame)
    report = check_table(table, data)
    if not report.ok:
        raise ContractError(report, f"{table.name} part {part}")
    return write_parquet_atomic(data, table_path(directory, name) / f"part-{part:05d}.parquet")


def next_part(path: Path) -> int:
    """The number after the highest `part-N.parquet` of a table stored as parts."""
    numbers = [int(p.stem.removeprefix("part-")) for p in path.glob("part-*.parquet")]
    return max(numbers, default=-1) + 1


@contextlib.contextmanager
def table_lock(directory: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on a table, for a read-then-append that must not interleave.

    Two jobs appending to one table (e.g. two exports started by cron) would otherwise both
    read the same keys and add the same rows, or write the same part number.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f".{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_table(directory: Path, name: str, new: pl.DataFrame) -> None:
    """Add rows to a contract table, atomically, creating it when absent.

    A table stored as parts (the simulator writes them) gets a new part; a one-file table is
    rewritten with the rows added. Keys unique across the old and new rows are the caller's
    job (hold `table_lock` while finding which rows are new).

    Raises:
        ContractError: nothing is written when a row breaks a one-table rule.
    """
    path = table_path(directory, name)
    if path.is_dir():
        if not new.is_empty():
            write_table_part(directory, name, next_part(path), new)
    elif path.exists():
        if not new.is_empty():
            write_table(directory, name, pl.concat([load_table(directory, name), new]))
    else:
        write_table(directory, name, new)


def load_table(directory: Path, name: str) -> pl.DataFrame:
    """Read a contract table into memory (see `read_table`)."""
    return read_table(directory, name).collect()


def write_table(directory: Path, name: str, frame: pl.DataFrame) -> Path:
    """Validate a table against its one-table rules and write it atomically.

    Raises:
        ContractError: nothing is written when a row breaks a rule.
    """
    table = spec(name)
    data = conform(table, frame)
    report = check_table(table, data)
    if not report.ok:
        raise ContractError(report, table.name)
    return write_parquet_atomic(data, table_path(directory, name))


class ParquetAppender:
    """Append frames to one parquet file; the file appears only when all went well."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._tmp = _temp_sibling(path)
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, frame: pl.DataFrame) -> None:
        """Append one chunk (its schema must match the first chunk's)."""
        arrow = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._tmp, arrow.schema, compression=PARQUET_COMPRESSION
            )
        self._writer.write_table(arrow, row_group_size=ROW_GROUP_SIZE)
        self.rows += frame.height

    def _close(self, ok: bool) -> None:
        if self._writer is not None:
            self._writer.close()
        if ok:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(ok=exc_type is None and self._writer is not None)


class TableWriter(ParquetAppender):
    """Stream a contract table to parquet chunk by chunk, checking each chunk.

    Each chunk is checked against the one-table rules before it is appended. Keys unique
    across chunks are the caller's job (check the whole directory afterwards with
    `validate_directory`). An empty table is still written, with its schema.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.table = spec(name)
        super().__init__(table_path(directory, name))

    def write(self, frame: pl.DataFrame) -> None:
        """Check and append one chunk.

        Raises:
            ContractError: naming the rows of this chunk that break a rule (numbered from
                the start of the table, not of the chunk).
        """
        data = conform(self.table, frame)
        report = check_table(self.table, data)
        if not report.ok:
            in_table = ValidationReport(
                violations=report.violations.with_columns(pl.col("row") + self.rows),
                counts=report.counts,
            )
            raise ContractError(in_table, f"{self.table.name} (rows from {self.rows + 1})")
        super().write(data)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._writer is None:
            super().write(self.table.empty())
        self._close(ok=exc_type is None)


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Build a whole data directory aside and swap it in only when complete.

    Yields:
        A staging directory next to `out`; on success it replaces `out` (files of `out`
        that the job did not write, such as an IP pepper, are kept); on error it is removed
        and `out` is left as it was.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, out: Path) -> None:
    """Replace each top-level entry of out by staging's (a table file or a table's parts)."""
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        target = out / item.name
        if item.is_file() and (target.is_file() or not target.exists()):
            item.replace(target)  # one atomic rename
            continue
        trash = staging / f".old-{item.name}"
        if target.exists():
            target.replace(trash)  # a directory is swapped by two renames
        item.replace(target)
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)


def present_tables(directory: Path) -> list[str]:
    """Names of the contract tables that have a file in `directory`."""
    return [name for name, t in TABLES.items() if (directory / t.file_name).exists()]


def validate_directory(directory: Path) -> ValidationReport:
    """Check every contract table present in a directory, alone and against each other.

    Raises:
        FileNotFoundError: when the directory holds no contract table.
    """
    names = present_tables(directory)
    if not names:
        msg = f"{directory}: no contract tables found (expected files like customers.parquet)"
        raise FileNotFoundError(msg)
    frames: Mapping[str, pl.LazyFrame] = {
        name: scan_parquet_path(table_path(directory, name)) for name in names
    }
    return check_dataset(frames, TABLES)
