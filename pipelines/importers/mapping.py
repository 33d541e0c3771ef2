"""Import any CSV or parquet file whose columns map onto a contract table, by a YAML mapping.

A mapping (see tests/data/purchases_mapping.yaml and tests/data/claims_mapping.yaml):

    table: transactions            # what one row of the file is: transactions or claims
    format:                        # optional; the type defaults from the file's suffix
      type: csv                    # csv or parquet
      delimiter: ","
      encoding: utf-8              # any Python codec name, e.g. latin-1
    columns:                       # contract column: file column
      txn_id: order_id
      customer_id: client
      ts: date
      amount: total
    timestamps:                    # per timestamp column; default "%Y-%m-%d %H:%M:%S", UTC
      ts: {format: "%d/%m/%Y %H:%M", timezone: Europe/Paris}
    constants:                     # contract column: value, for columns the file lacks
      channel: online
    label:                         # claims only: a label column becomes claim_labels
      column: is_fraud
      fraud_values: ["1", "yes"]   # compared without case or surrounding spaces
      legit_values: ["0", "no"]    # default: every other non-empty value; empty = unlabelled
      source: audit                # chargeback, review or audit
      decided_ts: audited_at       # optional file column; default: the claim's ts
      abuse_type: other            # optional, given to fraud labels

Unknown keys are errors. Timestamps without an offset in their format are wall-clock
times of `timezone` (see `local_to_utc` for daylight-saving changes); with one (%z) the
offset wins. Amounts are rounded to cents.

What a file implies:

- a transactions file: transactions; customers (signup_ts = the first transaction unless
  a signup_ts column is mapped; region, age_band and acquisition_channel from mapped
  columns, the first non-empty value); merchants (each distinct merchant_id, category =
  its most frequent transaction category, margin_rate mapped or the setting
  default_margin_rate, with a note).
- a claims file: claims; one transaction per distinct txn_id (the mapped txn_id, else
  'txn-' + claim_id), taken from its first claim: same customer, ts and amount; customers
  and merchants as above; claim_labels when `label` is given.

Columns that can be mapped or set are those of the file's table and of the tables it
implies (customers: signup_ts, region, age_band, acquisition_channel; merchants:
margin_rate; for claims, transactions: merchant_id, category, channel). Defaults:
merchant_id, category and acquisition_channel 'unknown'; nullable columns null. Every
other column must be mapped or set (e.g. channel; for claims also cashback_amount and
payout_method).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cashback.contract import CLAIMS, CUSTOMERS, MERCHANTS, TRANSACTIONS, TS, Column, TableSpec
from cashback.settings import Settings
from cashback.vocab import AbuseType, Label, LabelSource
from pipelines.importers import (
    ROW,
    Imported,
    Parsed,
    file_error,
    first_failure,
    first_line,
    local_to_utc,
    parse_local_timestamp,
    raise_first_failure,
    read_csv,
    require_columns,
    require_rows,
    round_cents,
)

DEFAULT_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
UNKNOWN = "unknown"
DERIVED_TXN_PREFIX = "txn-"
PARQUET_SUFFIXES = (".parquet", ".pq")
FILE_TABLES: dict[str, TableSpec] = {"transactions": TRANSACTIONS, "claims": CLAIMS}
IMPLIED: dict[str, tuple[tuple[TableSpec, tuple[str, ...]], ...]] = {
    "transactions": (
        (CUSTOMERS, ("signup_ts", "region", "age_band", "acquisition_channel")),
        (MERCHANTS, ("margin_rate",)),
    ),
    "claims": (
        (TRANSACTIONS, ("merchant_id", "category", "channel")),
        (CUSTOMERS, ("signup_ts", "region", "age_band", "acquisition_channel")),
        (MERCHANTS, ("margin_rate",)),
    ),
}
DEFAULTS: dict[str, str] = {
    "merchant_id": UNKNOWN,
    "category": UNKNOWN,
    "acquisition_channel": UNKNOWN,
}
DERIVED = ("signup_ts", "margin_rate")  # computed from the data or the settings when absent
MONEY = ("amount", "cashback_amount")


def mappable(table: str) -> dict[str, Column]:
    """The contract columns a file of `table` may map or set, by name."""
    columns = {c.name: c for c in FILE_TABLES[table].columns}
    for spec, names in IMPLIED[table]:
        columns.update({name: spec.column(name) for name in names})
    return columns


def needs_source(table: str, column: Column) -> bool:
    """Whether `column` must be mapped or set: not nullable, no default, not derived."""
    derived_txn = table == "claims" and column.name == "txn_id"
    return not (column.nullable or column.name in DEFAULTS or column.name in DERIVED or derived_txn)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileFormat(_Strict):
    """How to read the file."""

    type: Literal["csv", "parquet"] | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"


class TimestampFormat(_Strict):
    """How to read one timestamp column."""

    format: str = DEFAULT_TIMESTAMP_FORMAT
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r} (expected an IANA name like Europe/Paris)"
            raise ValueError(msg) from None
        return value


class LabelSpec(_Strict):
    """A claims file's label column."""

    column: str
    fraud_values: list[str] = Field(min_length=1)
    legit_values: list[str] | None = None
    source: LabelSource
    decided_ts: str | None = None
    abuse_type: AbuseType | None = None

    @field_validator("fraud_values", "legit_values", mode="before")
    @classmethod
    def _values_as_text(cls, values: object) -> object:
        """Numbers as text (YAML reads `1` as a number); refuse YAML's booleans."""
        if not isinstance(values, list):
            return values
        if any(isinstance(v, bool) for v in values):
            msg = 'quote yes/no/true/false (e.g. "yes"): YAML reads them as booleans'
            raise ValueError(msg)
        return [str(v) if isinstance(v, int | float) else v for v in values]


class ColumnMapping(_Strict):
    """A YAML mapping of a file onto the contract (see the module docstring)."""

    table: Literal["transactions", "claims"]
    format: FileFormat = FileFormat()
    columns: dict[str, str]
    timestamps: dict[str, TimestampFormat] = {}
    constants: dict[str, str | float] = {}
    label: LabelSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnMapping:
        allowed = mappable(self.table)
        for section, keys in (("columns", self.columns), ("constants", self.constants)):
            unknown = [k for k in keys if k not in allowed]
            if unknown:
                msg = (
                    f"{section}: unknown contract column(s) {', '.join(unknown)}; "
                    f"a {self.table} file can map {', '.join(allowed)}"
                )
                raise ValueError(msg)
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            msg = f"{', '.join(both)} both mapped under columns and set under constants"
            raise ValueError(msg)
        missing = [
            name
            for name, column in allowed.items()
            if needs_source(self.table, column)
            and name not in self.columns
            and name not in self.constants
        ]
        if missing:
            msg = (
                f"no source for contract column(s) {', '.join(missing)}: map a file column "
                "under `columns` or set a value under `constants`"
            )
            raise ValueError(msg)
        self._check_timestamps(allowed)
        self._check_constants(allowed)
        if self.label is not None and self.table != "claims":
            msg = "`label` is only for a claims file"
            raise ValueError(msg)
        return self

    def _check_timestamps(self, allowed: dict[str, Column]) -> None:
        stamps = {n for n, c in allowed.items() if c.dtype == TS} | {"decided_ts"}
        unknown = [k for k in self.timestamps if k not in stamps]
        if unknown:
            msg = f"timestamps: {', '.join(unknown)} not a timestamp column ({', '.join(stamps)})"
            raise ValueError(msg)

    def _check_constants(self, allowed: dict[str, Column]) -> None:
        for name, value in self.constants.items():
            column = allowed[name]
            if column.dtype == TS:
                msg = f"constants: {name} is a timestamp; map it to a file column instead"
                raise ValueError(msg)
            if column.dtype == pl.Float64 and isinstance(value, str):
                msg = f"constants: {name} must be a number, got {value!r}"
                raise ValueError(msg)
            if column.vocab is not None and str(value) not in {v.value for v in column.vocab}:
                expected = ", ".join(v.value for v in column.vocab)
                msg = f"constants: {name} must be one of {expected}, got {value!r}"
                raise ValueError(msg)

    def file_columns(self) -> list[str]:
        """The columns the file must have."""
        names = list(self.columns.values())
        if self.label is not None:
            names.append(self.label.column)
            if self.label.decided_ts is not None:
                names.append(self.label.decided_ts)
        return list(dict.fromkeys(names))

    def timestamp(self, name: str) -> TimestampFormat:
        """How to read timestamp column `name` (the default when not stated)."""
        return self.timestamps.get(name, TimestampFormat())


def read_mapping(path: Path) -> ColumnMapping:
    """Read and check a YAML mapping.

    Raises:
        CashbackError: naming the file and the first problems (unknown keys, missing
            columns, bad values).
    """
    if not path.is_file():
        raise file_error(path, "mapping file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise file_error(path, f"not valid YAML: {first_line(error)}") from None
    if not isinstance(data, dict):
        raise file_error(path, "expected a YAML mapping with keys table, columns, ...")
    try:
        return ColumnMapping.model_validate(data)
    except ValidationError as error:
        raise file_error(path, f"invalid mapping: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    """The validation errors of a mapping, on one line."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}{_allowed_keys(item['loc'][:-1])}")
        elif item["type"] == "missing":
            parts.append(f"missing key {where!r}")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _allowed_keys(parent: tuple[int | str, ...]) -> str:
    models: dict[tuple[int | str, ...], type[BaseModel]] = {
        (): ColumnMapping,
        ("format",): FileFormat,
        ("label",): LabelSpec,
    }
    model = TimestampFormat if parent[:1] == ("timestamps",) else models.get(parent)
    return "" if model is None else f" (expected one of {', '.join(model.model_fields)})"


# ---------------------------------------------------------------- reading the file


@dataclass(frozen=True)
class _Read:
    """The file's rows as contract columns, and the checks of every parsed value."""

    frame: pl.LazyFrame
    checks: list[Parsed]


def load(path: Path, settings: Settings, mapping_path: Path) -> Imported:
    """Import a file by its YAML mapping.

    Args:
        path: the CSV or parquet file.
        settings: for default margins.
        mapping_path: the YAML mapping.

    Returns:
        The file's table and the tables it implies, and notes on the defaults used.

    Raises:
        CashbackError: for a bad mapping, a missing/empty/badly encoded file, missing
            columns, or a value that does not parse (with its row and column).
    """
    mapping = read_mapping(mapping_path)
    rows = _scan(path, mapping.format)
    schema = rows.collect_schema()
    require_columns(path, schema.names(), mapping.file_columns())
    read = _contract_columns(rows, schema, mapping)
    try:
        failures, frame = pl.collect_all([first_failure(rows, read.checks), read.frame])
    except pl.exceptions.PolarsError as error:
        raise file_error(path, f"could not read: {first_line(error)}") from None
    raise_first_failure(path, failures, read.checks)
    require_rows(path, frame.height)
    return _derive(frame, mapping, settings)


def _scan(path: Path, file_format: FileFormat) -> pl.LazyFrame:
    kind = file_format.type or ("parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "csv")
    if kind == "csv":
        return read_csv(path, encoding=file_format.encoding, delimiter=file_format.delimiter)
    if not path.is_file():
        raise file_error(path, "file not found")
    try:
        lf = pl.scan_parquet(path)
        lf.collect_schema()
    except pl.exceptions.PolarsError as error:
        raise file_error(path, f"could not read as parquet: {first_line(error)}") from None
    return lf.with_row_index(ROW)


def _contract_columns(rows: pl.LazyFrame, schema: pl.Schema, mapping: ColumnMapping) -> _Read:
    """Every mappable contract column (mapped, constant, default or null) and the label."""
    exprs: list[pl.Expr] = [pl.col(ROW)]
    checks: list[Parsed] = []
    for name, column in mappable(mapping.table).items():
        source = mapping.columns.get(name)
        if source is None:
            exprs.append(_unmapped(name, column, mapping).alias(name))
            continue
        value = _parse(pl.col(source), schema[source], column, mapping.timestamp(name))
        if name in DEFAULTS:
            value = value.fill_null(DEFAULTS[name])
        expected = _expected(column, mapping, name)
        required = needs_source(mapping.table, column)
        checks.append(Parsed(source, pl.col(source), value, expected, required=required))
        exprs.append(value.alias(name))
    if mapping.label is not None:
        label_exprs, label_checks = _label_columns(mapping.label, schema, mapping)
        exprs.extend(label_exprs)
        checks.extend(label_checks)
    return _Read(rows.select(exprs), checks)


def _unmapped(name: str, column: Column, mapping: ColumnMapping) -> pl.Expr:
    if name in mapping.constants:
        value = mapping.constants[name]
        return pl.lit(value if column.dtype == pl.Float64 else str(value), column.dtype)
    return pl.lit(DEFAULTS.get(name), column.dtype)


def _parse(raw: pl.Expr, source: pl.DataType, column: Column, stamp: TimestampFormat) -> pl.Expr:
    """A file column as the contract dtype; null where a value does not parse."""
    if column.dtype == TS:
        return _timestamp(raw, source, stamp)
    if column.dtype == pl.Float64:
        number = raw.str.strip_chars() if source == pl.String else raw
        value = number.cast(pl.Float64, strict=False)
        return round_cents(value) if column.name in MONEY else value
    text = raw.cast(pl.String).str.strip_chars()
    if column.vocab is not None:
        text = text.str.to_lowercase()
        return pl.when(text.is_in([v.value for v in column.vocab])).then(text)
    return pl.when(text != "").then(text)


def _timestamp(raw: pl.Expr, source: pl.DataType, stamp: TimestampFormat) -> pl.Expr:
    if isinstance(source, pl.Datetime):
        if source.time_zone is None:
            return local_to_utc(raw.cast(pl.Datetime("us")), stamp.timezone)
        return raw.dt.convert_time_zone("UTC").cast(TS)
    if source == pl.Date:
        return local_to_utc(raw.cast(pl.Datetime("us")), stamp.timezone)
    text = raw.cast(pl.String).str.strip_chars()
    return parse_local_timestamp(text, stamp.format, stamp.timezone)


def _expected(column: Column, mapping: ColumnMapping, name: str) -> str:
    if column.dtype == TS:
        stamp = mapping.timestamp(name)
        return f"a time in the format {stamp.format} ({name})"
    if column.dtype == pl.Float64:
        return f"a number ({name})"
    if column.vocab is not None:
        return f"one of {', '.join(v.value for v in column.vocab)} ({name})"
    return f"a value ({name})"


def _label_columns(
    label: LabelSpec, schema: pl.Schema, mapping: ColumnMapping
) -> tuple[list[pl.Expr], list[Parsed]]:
    """The label, its decision time and abuse type, and their checks."""
    raw = pl.col(label.column).cast(pl.String).str.strip_chars()
    text = pl.when(raw != "").then(raw.str.to_lowercase())
    is_fraud = text.is_in([v.strip().lower() for v in label.fraud_values])
    is_legit = (
        text.is_not_null()
        if label.legit_values is None
        else text.is_in([v.strip().lower() for v in label.legit_values])
    )
    value = (
        pl.when(is_fraud)
        .then(pl.lit(Label.FRAUD.value))
        .when(is_legit)
        .then(pl.lit(Label.LEGIT.value))
    )
    values = [*label.fraud_values, *(label.legit_values or [])]
    checks = [
        Parsed(label.column, text, value, f"one of {', '.join(values)} (label)", required=False)
    ]
    abuse = pl.when(value == Label.FRAUD.value).then(
        pl.lit(None if label.abuse_type is None else label.abuse_type.value, pl.String)
    )
    decided = pl.lit(None, TS)
    if label.decided_ts is not None:
        stamp = mapping.timestamp("decided_ts")
        decided = _timestamp(pl.col(label.decided_ts), schema[label.decided_ts], stamp)
        expected = f"a time in the format {stamp.format} (decided_ts)"
        checks.append(
            Parsed(label.decided_ts, pl.col(label.decided_ts), decided, expected, required=False)
        )
    return [value.alias("label"), abuse.alias("abuse_type"), decided.alias("decided_ts")], checks


# ---------------------------------------------------------------- deriving the tables


def _derive(frame: pl.DataFrame, mapping: ColumnMapping, settings: Settings) -> Imported:
    """The file's table and the tables it implies."""
    rows = frame.lazy()
    notes: list[str] = []
    tables: dict[str, pl.LazyFrame] = {}
    if mapping.table == "claims":
        rows = rows.pipe(_claim_transaction_ids, mapping, notes)
        tables["claims"] = rows.sort(ROW).select(CLAIMS.schema.names())
        if mapping.label is not None:
            tables["claim_labels"] = _claim_labels(rows, mapping.label)
        first_claim = pl.col(ROW).sort_by("ts", ROW).first().over("txn_id")
        purchases = rows.filter(pl.col(ROW) == first_claim).with_columns(
            pl.lit(None, pl.String).alias("original_txn_id")
        )
    else:
        purchases = rows
    tables["transactions"] = purchases.sort("ts", ROW).select(TRANSACTIONS.schema.names())
    tables["customers"] = _customers(rows)
    tables["merchants"] = _merchants(purchases, settings.default_margin_rate)
    if "signup_ts" not in mapping.columns:
        notes.append("customers.signup_ts is each customer's first transaction (first seen)")
    names = list(tables)
    collected = dict(zip(names, pl.collect_all([tables[n] for n in names]), strict=True))
    notes.extend(_margin_notes(collected["merchants"], purchases, settings))
    return Imported(tables=collected, notes=tuple(notes))


def _claim_transaction_ids(
    rows: pl.LazyFrame, mapping: ColumnMapping, notes: list[str]
) -> pl.LazyFrame:
    """Claims without a txn_id column get one derived from their claim_id."""
    if "txn_id" in mapping.columns or "txn_id" in mapping.constants:
        return rows
    notes.append(
        f"the claims have no txn_id: each is its own transaction {DERIVED_TXN_PREFIX}<claim_id>"
    )
    return rows.with_columns((pl.lit(DERIVED_TXN_PREFIX) + pl.col("claim_id")).alias("txn_id"))


def _claim_labels(rows: pl.LazyFrame, label: LabelSpec) -> pl.LazyFrame:
    """One label per labelled claim; decided at decided_ts, else at the claim's ts."""
    return (
        rows.filter(pl.col("label").is_not_null())
        .sort(ROW)
        .select(
            "claim_id",
            "label",
            "abuse_type",
            pl.coalesce("decided_ts", "ts").alias("decided_ts"),
            pl.lit(label.source.value).alias("source"),
        )
    )


def _first_value(name: str) -> pl.Expr:
    """The first non-null value of a column in time order (then file order)."""
    return pl.col(name).sort_by("ts", ROW).drop_nulls().first()


def _customers(rows: pl.LazyFrame) -> pl.LazyFrame:
    """One row per customer: signup given or first seen, attributes first given."""
    return (
        rows.group_by("customer_id")
        .agg(
            pl.coalesce(pl.col("signup_ts").min(), pl.col("ts").min()).alias("signup_ts"),
            _first_value("region"),
            _first_value("age_band"),
            _first_value("acquisition_channel").fill_null(UNKNOWN),
        )
        .select(CUSTOMERS.schema.names())
        .sort("customer_id")
    )


def _merchants(transactions: pl.LazyFrame, default_margin: float) -> pl.LazyFrame:
    """One row per merchant: its most frequent category (ties: first in alphabetical order)."""
    most_frequent = pl.col("category").sort_by(["n", "category"], descending=[True, False])
    categories = (
        transactions.group_by("merchant_id", "category")
        .agg(pl.len().alias("n"))
        .group_by("merchant_id")
        .agg(most_frequent.first())
    )
    margins = transactions.group_by("merchant_id").agg(_first_value("margin_rate"))
    return (
        categories.join(margins, on="merchant_id")
        .with_columns(pl.col("margin_rate").fill_null(default_margin))
        .select(MERCHANTS.schema.names())
        .sort("merchant_id")
    )


def _margin_notes(
    merchants: pl.DataFrame, transactions: pl.LazyFrame, settings: Settings
) -> list[str]:
    """Say which merchants took the default margin (those without a margin in the file)."""
    given = transactions.filter(pl.col("margin_rate").is_not_null()).select("merchant_id")
    defaulted = merchants.lazy().join(given.unique(), on="merchant_id", how="anti").collect()
    if defaulted.height == 0:
        return []
    note = (
        f"margin_rate {settings.default_margin_rate} of {defaulted.height} merchant(s) comes "
        "from the setting default_margin_rate (the file has no margins for them)"
    )
    return [note]
