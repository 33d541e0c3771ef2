"""Importers: each turns one kind of source file into contract tables.

An importer is a function `(path, settings) -> Imported`. It reads and checks the file,
derives the tables and counts what it leaves out; it writes nothing (the job in
`pipelines.data_import` validates and writes). What the importers share lives here: the
result type, reading a CSV in a stated encoding, checking columns, reporting the first
value that does not parse, local times to UTC, and experiment weights from observed shares.

Every problem with the file is a `CashbackError` whose message starts with the file's
path and, where it applies, names the data row (1-based, the header not counted), the
column, the value and what was expected.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from cashback.contract import EXPERIMENTS
from cashback.errors import CashbackError
from cashback.vocab import ExperimentStatus

ROW = "__row"
UTF8 = "utf-8"
GZIP_MAGIC = b"\x1f\x8b"
OFFSET_DIRECTIVE = re.compile(r"%[:#]?[zZ]")


@dataclass(frozen=True)
class Imported:
    """What an importer produced.

    Attributes:
        tables: contract table name to its rows.
        left_out: reason to the number of source rows left out for it (non-zero only).
        notes: facts the user should know (defaults taken from settings, fallbacks used).
    """

    tables: dict[str, pl.DataFrame]
    left_out: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parsed:
    """One column parsed from text, and how to tell that a value did not parse.

    Attributes:
        column: the column's name in the file.
        raw: the value as read (null for an empty cell).
        value: the parsed value, null where it did not parse.
        expected: what a good value looks like, for the error message.
        required: whether an empty cell is an error too.
    """

    column: str
    raw: pl.Expr
    value: pl.Expr
    expected: str
    required: bool = True

    @property
    def failed(self) -> pl.Expr:
        """True on rows where the value is missing (if required) or does not parse."""
        missing = self.raw.is_null() if self.required else pl.lit(value=False)
        return missing | (self.raw.is_not_null() & self.value.is_null())


def file_error(path: Path, message: str) -> CashbackError:
    """A user-facing error about `path`."""
    return CashbackError(f"{path}: {message}")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the file is gzip-compressed.

    Raises:
        CashbackError: when the file is absent, empty, or a broken gzip stream.
    """
    if not path.is_file():
        raise file_error(path, "file not found")
    raw = path.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise file_error(path, f"not a valid gzip file ({error})") from None
    if not raw.strip():
        raise file_error(path, "empty file (no header, no rows)")
    return raw


def to_utf8(path: Path, raw: bytes, encoding: str) -> bytes:
    """Re-encode text bytes as UTF-8 (without a byte-order mark).

    Args:
        path: the file, for messages.
        raw: its bytes.
        encoding: the encoding the file is stated to be in.

    Raises:
        CashbackError: naming the encoding tried and the data row of the first bad byte.
    """
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise file_error(path, f"unknown encoding {encoding!r}") from None
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as error:
        row = raw.count(b"\n", 0, error.start)
        where = "in the header" if row == 0 else f"at data row {row}"
        msg = (
            f"bad encoding: not valid {encoding} (byte 0x{raw[error.start]:02x} {where}); "
            "state the file's encoding, e.g. `encoding: latin-1` under `format` in the mapping"
        )
        raise file_error(path, msg) from None
    if codec == UTF8 and not text.startswith("\ufeff"):
        return raw
    return text.removeprefix("\ufeff").encode(UTF8)


def detect_encoding(raw: bytes, candidates: Sequence[str]) -> str:
    """The first of `candidates` that decodes `raw` (the last one when none does)."""
    for encoding in candidates[:-1]:
        try:
            raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return candidates[-1]


def scan_text_csv(path: Path, data: bytes, *, delimiter: str = ",") -> pl.LazyFrame:
    """Scan UTF-8 CSV bytes with every column as text and a row index `ROW`.

    Raises:
        CashbackError: when polars cannot read the header.
    """
    try:
        lf = pl.scan_csv(data, infer_schema=False, separator=delimiter)
        lf.collect_schema()
    except pl.exceptions.PolarsError as error:
        raise file_error(path, f"could not read as CSV: {first_line(error)}") from None
    return lf.with_row_index(ROW)


def read_csv(
    path: Path,
    *,
    encoding: str = UTF8,
    delimiter: str = ",",
) -> pl.LazyFrame:
    """Scan a CSV file (gzip allowed) in a stated encoding, every column as text.

    Raises:
        CashbackError: when the file is missing, empty, badly encoded or not CSV.
    """
    data = to_utf8(path, read_bytes(path), encoding)
    return scan_text_csv(path, data, delimiter=delimiter)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_columns(path: Path, present: Sequence[str], needed: Iterable[str]) -> None:
    """Fail with the missing columns and the ones the file has.

    Raises:
        CashbackError: when any of `needed` is not in `present`.
    """
    missing = [c for c in needed if c not in present]
    if missing:
        has = ", ".join(c for c in present if c != ROW) or "none"
        msg = f"missing column(s) {', '.join(missing)}; the file has {has}"
        raise file_error(path, msg)


def require_rows(path: Path, rows: int) -> None:
    """Fail when the file has a header but no data rows.

    Raises:
        CashbackError: when `rows` is 0.
    """
    if rows == 0:
        raise file_error(path, "no data rows (only a header)")


def first_failure(lf: pl.LazyFrame, checks: Sequence[Parsed]) -> pl.LazyFrame:
    """The first row (by `ROW`) where any check fails: columns check, row, value.

    The frame is empty when every value parses.
    """
    parts = [
        lf.filter(check.failed)
        .select(
            pl.lit(i, pl.Int64).alias("check"),
            pl.col(ROW).cast(pl.Int64).alias("row"),
            check.raw.cast(pl.String).alias("value"),
        )
        .sort("row")
        .head(1)
        for i, check in enumerate(checks)
    ]
    if not parts:
        return pl.LazyFrame(schema={"check": pl.Int64, "row": pl.Int64, "value": pl.String})
    return pl.concat(parts).sort("row", "check").head(1)


def raise_first_failure(path: Path, failures: pl.DataFrame, checks: Sequence[Parsed]) -> None:
    """Raise the error of the first failing value found by `first_failure`, if any.

    Raises:
        CashbackError: `data row N, column C: expected E, got V`.
    """
    if failures.height == 0:
        return
    first = failures.row(0, named=True)
    check = checks[first["check"]]
    got = "an empty cell" if first["value"] is None else repr(first["value"])
    where = f"data row {first['row'] + 1}, column {check.column}"
    msg = f"{where}: expected {check.expected}, got {got}"
    raise file_error(path, msg)


def local_to_utc(naive: pl.Expr, time_zone: str) -> pl.Expr:
    """Wall-clock times of `time_zone` as UTC instants.

    Policy at daylight-saving changes: an ambiguous time (the repeated hour in autumn) is
    read as the earlier instant (summer time); a time that does not exist (the skipped
    hour in spring) is moved to the end of the gap, the instant the clocks went forward.
    Both keep events in their local order.
    """
    local = naive.dt.replace_time_zone(time_zone, ambiguous="earliest", non_existent="null")
    after_gap = (naive.dt.truncate("1h") + pl.duration(hours=1)).dt.replace_time_zone(
        time_zone, ambiguous="earliest", non_existent="null"
    )
    return pl.coalesce(local, after_gap).dt.convert_time_zone("UTC")


def parse_local_timestamp(raw: pl.Expr, fmt: str, time_zone: str) -> pl.Expr:
    """Parse text in `fmt` as UTC; without an offset in `fmt` the time is local to `time_zone`.

    Unparsable text gives null (see `Parsed`).
    """
    if OFFSET_DIRECTIVE.search(fmt.replace("%%", "")):
        return raw.str.strptime(pl.Datetime("us"), fmt, strict=False).dt.convert_time_zone("UTC")
    return local_to_utc(raw.str.strptime(pl.Datetime("us"), fmt, strict=False), time_zone)


def round_cents(amount: pl.Expr) -> pl.Expr:
    """Money rounded to cents, halves away from zero."""
    return amount.round(2, mode="half_away_from_zero")


def observed_weights(counts: Sequence[int], decimals: int = 4) -> list[float]:
    """Shares of `counts`, rounded to `decimals` so that they sum to 1 exactly.

    Largest remainder: each share is rounded down, then the units left over go to the
    shares that lost most (ties to the earlier one).
    """
    total = sum(counts)
    if total <= 0:
        msg = "observed_weights needs at least one positive count"
        raise ValueError(msg)
    units = 10**decimals
    floors = [c * units // total for c in counts]
    remainders = [c * units % total for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in order[: units - sum(floors)]:
        floors[i] += 1
    return [f / units for f in floors]


@dataclass(frozen=True)
class Variant:
    """One arm of an imported experiment: its name, its policy, how many units it got."""

    name: str
    policy: str
    units: int


def experiment_frame(
    experiment_id: str,
    *,
    layer: str,
    variants: Sequence[Variant],
    start: datetime,
    end: datetime,
) -> pl.DataFrame:
    """The experiments row of a completed, imported experiment.

    The weights are the observed shares of units (see `observed_weights`); the key is the
    experiment id.
    """
    weights = observed_weights([v.units for v in variants])
    return pl.DataFrame(
        {
            "experiment_id": [experiment_id],
            "key": [experiment_id],
            "layer": [layer],
            "variants": [
                [
                    {"name": v.name, "weight": w, "policy": v.policy}
                    for v, w in zip(variants, weights, strict=True)
                ]
            ],
            "start_ts": [start],
            "end_ts": [end],
            "status": [ExperimentStatus.COMPLETED.value],
        },
        schema=EXPERIMENTS.schema,
    )


def assignments_frame(rows: pl.LazyFrame, experiment_id: str, ts: datetime) -> pl.LazyFrame:
    """Assignments of every row (columns `customer_id`, `variant`) at `ts`, in file order."""
    return rows.sort(ROW).select(
        pl.lit(experiment_id).alias("experiment_id"),
        "customer_id",
        "variant",
        pl.lit(ts).alias("ts"),
    )


def outcomes_frame(
    rows: pl.LazyFrame, experiment_id: str, metrics: Mapping[str, pl.Expr]
) -> pl.LazyFrame:
    """Outcomes in long form: one row per unit (`customer_id`) and metric.

    Args:
        rows: one row per unit, with `ROW` and `customer_id`.
        experiment_id: the experiment.
        metrics: metric name to the expression of its value.

    Returns:
        Units in file order, and within a unit the metrics in the order given.
    """
    names = list(metrics)
    rank = pl.col("metric").replace_strict(names, list(range(len(names))))
    return (
        rows.select(
            ROW,
            pl.lit(experiment_id).alias("experiment_id"),
            "customer_id",
            *(expr.cast(pl.Float64).alias(name) for name, expr in metrics.items()),
        )
        .unpivot(
            names,
            index=[ROW, "experiment_id", "customer_id"],
            variable_name="metric",
            value_name="value",
        )
        .sort(ROW, rank)
        .drop(ROW)
    )
