"""The data contract: the tables of DESIGN.md as polars schemas, with their rules.

A table is described by a `TableSpec` (columns, dtypes, key, per-column checks). Rules that
look at one table are in `table_rules`; rules that join tables are in `dataset_rules`. Both
return violations as a frame with the columns of `VIOLATION_SCHEMA`: table, row (1-based
position in the table, null for a rule about a whole column), column, rule, value, message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl

from cashback.vocab import (
    AbuseType,
    Channel,
    ExperimentStatus,
    Label,
    LabelSource,
    OfferKind,
    Payout,
    PayoutMethod,
)

TS = pl.Datetime("us", "UTC")
ROW = "__row"
TIERS = pl.List(pl.Struct({"threshold": pl.Float64, "rate": pl.Float64}))
VARIANTS = pl.List(pl.Struct({"name": pl.String, "weight": pl.Float64, "policy": pl.String}))

VIOLATION_SCHEMA = pl.Schema(
    {
        "table": pl.String,
        "row": pl.Int64,
        "column": pl.String,
        "rule": pl.String,
        "value": pl.String,
        "message": pl.String,
    }
)


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    Attributes:
        name: column name.
        dtype: polars dtype the column has in every file.
        nullable: whether nulls are allowed.
        vocab: the enum whose values the column takes, if any.
        money: an amount in currency: finite, at most two decimals.
        finite: a float that must be finite (implied by money).
        low: inclusive lower bound, if any.
        high: inclusive upper bound, if any.
    """

    name: str
    dtype: pl.DataType
    nullable: bool = False
    vocab: type[StrEnum] | None = None
    money: bool = False
    finite: bool = False
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class TableSpec:
    """A contract table: its columns and its key."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    description: str = ""
    checks: tuple[Callable[[pl.LazyFrame], pl.LazyFrame], ...] = field(default=())

    @property
    def schema(self) -> pl.Schema:
        """The polars schema of the table, in contract column order."""
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def file_name(self) -> str:
        """Name of the table's parquet file in a data directory."""
        return f"{self.name}.parquet"

    def column(self, name: str) -> Column:
        """The column called `name`."""
        return next(c for c in self.columns if c.name == name)

    def empty(self) -> pl.DataFrame:
        """An empty frame with the table's schema."""
        return pl.DataFrame(schema=self.schema)


def _id(name: str, *, nullable: bool = False) -> Column:
    return Column(name, pl.String(), nullable=nullable)


def _ts(name: str, *, nullable: bool = False) -> Column:
    return Column(name, TS, nullable=nullable)


def _violations(
    table: str, column: str, rule: str, frame: pl.LazyFrame, value: pl.Expr, message: pl.Expr
) -> pl.LazyFrame:
    """Shape rows that break a rule into the violation schema."""
    return frame.select(
        pl.lit(table).alias("table"),
        (pl.col(ROW) + 1).cast(pl.Int64).alias("row"),
        pl.lit(column).alias("column"),
        pl.lit(rule).alias("rule"),
        value.cast(pl.String).alias("value"),
        message.alias("message"),
    )


def _transactions_return_link(lf: pl.LazyFrame) -> pl.LazyFrame:
    """A return (negative amount) has original_txn_id; a purchase has none."""
    bad = lf.filter((pl.col("amount") < 0) != pl.col("original_txn_id").is_not_null())
    return _violations(
        "transactions",
        "original_txn_id",
        "return_link",
        bad,
        pl.col("original_txn_id").fill_null("null"),
        pl.when(pl.col("amount") < 0)
        .then(pl.lit("a return (negative amount) needs original_txn_id"))
        .otherwise(pl.lit("a purchase (positive amount) must not have original_txn_id")),
    )


def _exposures_window(lf: pl.LazyFrame) -> pl.LazyFrame:
    bad = lf.filter(pl.col("valid_until") <= pl.col("ts"))
    return _violations(
        "exposures",
        "valid_until",
        "valid_window",
        bad,
        pl.col("valid_until"),
        pl.lit("expected valid_until after ts"),
    )


def _experiments_window(lf: pl.LazyFrame) -> pl.LazyFrame:
    bad = lf.filter(pl.col("end_ts").is_not_null() & (pl.col("end_ts") <= pl.col("start_ts")))
    return _violations(
        "experiments",
        "end_ts",
        "valid_window",
        bad,
        pl.col("end_ts"),
        pl.lit("expected end_ts after start_ts"),
    )


def _experiments_variants(lf: pl.LazyFrame) -> pl.LazyFrame:
    weight = pl.element().struct.field("weight")
    weights = pl.col("variants").list.eval(weight).list.sum()
    negative = pl.col("variants").list.eval(weight < 0).list.any()
    bad = lf.filter((pl.col("variants").list.len() < 2) | ((weights - 1.0).abs() > 1e-6) | negative)
    return _violations(
        "experiments",
        "variants",
        "variant_weights",
        bad,
        weights,
        pl.lit("expected at least two variants with non-negative weights that sum to 1"),
    )


def _offers_window(lf: pl.LazyFrame) -> pl.LazyFrame:
    bad = lf.filter(
        pl.col("start_ts").is_not_null()
        & pl.col("end_ts").is_not_null()
        & (pl.col("end_ts") <= pl.col("start_ts"))
    )
    return _violations(
        "offers",
        "end_ts",
        "valid_window",
        bad,
        pl.col("end_ts"),
        pl.lit("expected end_ts after start_ts"),
    )


def _offers_kind_fields(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Tiered and cumulative offers carry tiers; category offers a category; seasonal dates."""
    kind = pl.col("kind")
    needs_tiers = kind.is_in([OfferKind.TIERED.value, OfferKind.CUMULATIVE.value])
    missing = (
        pl.when(needs_tiers & (pl.col("tiers").is_null() | (pl.col("tiers").list.len() == 0)))
        .then(pl.lit("tiers"))
        .when((kind == OfferKind.CATEGORY.value) & pl.col("category").is_null())
        .then(pl.lit("category"))
        .when((kind == OfferKind.SEASONAL.value) & pl.col("start_ts").is_null())
        .then(pl.lit("start_ts"))
        .when((kind == OfferKind.SEASONAL.value) & pl.col("end_ts").is_null())
        .then(pl.lit("end_ts"))
        .when(~needs_tiers & pl.col("rate").is_null())
        .then(pl.lit("rate"))
    )
    bad = lf.with_columns(missing.alias("__missing")).filter(pl.col("__missing").is_not_null())
    return bad.select(
        pl.lit("offers").alias("table"),
        (pl.col(ROW) + 1).cast(pl.Int64).alias("row"),
        pl.col("__missing").alias("column"),
        pl.lit("offer_kind_fields").alias("rule"),
        pl.col("kind").alias("value"),
        pl.format("a {} offer needs {}", pl.col("kind"), pl.col("__missing")).alias("message"),
    )


CUSTOMERS = TableSpec(
    "customers",
    (
        _id("customer_id"),
        _ts("signup_ts"),
        Column("region", pl.String(), nullable=True),
        Column("age_band", pl.String(), nullable=True),
        Column("acquisition_channel", pl.String()),
    ),
    key=("customer_id",),
    description="one row per customer",
)
MERCHANTS = TableSpec(
    "merchants",
    (
        _id("merchant_id"),
        Column("category", pl.String()),
        Column("margin_rate", pl.Float64(), finite=True, low=0.0, high=1.0),
    ),
    key=("merchant_id",),
    description="margin_rate: gross margin as a share of the amount",
)
TRANSACTIONS = TableSpec(
    "transactions",
    (
        _id("txn_id"),
        _id("customer_id"),
        _id("merchant_id"),
        _ts("ts"),
        Column("amount", pl.Float64(), money=True),
        Column("category", pl.String()),
        Column("channel", pl.String(), vocab=Channel),
        _id("original_txn_id", nullable=True),
    ),
    key=("txn_id",),
    description="one row per order; a return is a negative amount linked to its purchase",
    checks=(_transactions_return_link,),
)
OFFERS = TableSpec(
    "offers",
    (
        _id("offer_id"),
        Column("kind", pl.String(), vocab=OfferKind),
        Column("rate", pl.Float64(), nullable=True, finite=True, low=0.0, high=1.0),
        Column("tiers", TIERS, nullable=True),
        Column("category", pl.String(), nullable=True),
        _ts("start_ts", nullable=True),
        _ts("end_ts", nullable=True),
        Column("payout", pl.String(), vocab=Payout),
        Column("validation_days", pl.Int32(), low=0, high=365),
    ),
    key=("offer_id",),
    description="the offer catalog; tiers are (threshold, rate) pairs for tiered/cumulative",
    checks=(_offers_window, _offers_kind_fields),
)
EXPOSURES = TableSpec(
    "exposures",
    (
        _id("exposure_id"),
        _id("customer_id"),
        _ts("ts"),
        _ts("valid_until"),
        _id("offer_id"),
        Column("rate", pl.Float64(), finite=True, low=0.0, high=1.0),
        Column("policy_version", pl.String()),
        _id("experiment_id", nullable=True),
        Column("variant", pl.String(), nullable=True),
        Column("propensity", pl.Float64(), nullable=True, finite=True, low=1e-9, high=1.0),
    ),
    key=("exposure_id",),
    description="one offer shown to one customer from ts to valid_until",
    checks=(_exposures_window,),
)
CLAIMS = TableSpec(
    "claims",
    (
        _id("claim_id"),
        _id("customer_id"),
        _id("txn_id"),
        _id("exposure_id", nullable=True),
        _ts("ts"),
        Column("amount", pl.Float64(), money=True, low=0.0),
        Column("cashback_amount", pl.Float64(), money=True, low=0.0),
        Column("payout_method", pl.String(), vocab=PayoutMethod),
        Column("device_id", pl.String(), nullable=True),
        Column("ip_hash", pl.String(), nullable=True),
        Column("receipt_hash", pl.String(), nullable=True),
    ),
    key=("claim_id",),
    description="a cashback request for a transaction",
)
CLAIM_LABELS = TableSpec(
    "claim_labels",
    (
        _id("claim_id"),
        Column("label", pl.String(), vocab=Label),
        Column("abuse_type", pl.String(), nullable=True, vocab=AbuseType),
        _ts("decided_ts"),
        Column("source", pl.String(), vocab=LabelSource),
    ),
    key=("claim_id", "source"),
    description="labels arrive late; one per claim and source",
)
EXPERIMENTS = TableSpec(
    "experiments",
    (
        _id("experiment_id"),
        Column("key", pl.String()),
        Column("layer", pl.String()),
        Column("variants", VARIANTS),
        _ts("start_ts"),
        _ts("end_ts", nullable=True),
        Column("status", pl.String(), vocab=ExperimentStatus),
    ),
    key=("experiment_id",),
    checks=(_experiments_window, _experiments_variants),
)
ASSIGNMENTS = TableSpec(
    "assignments",
    (_id("experiment_id"), _id("customer_id"), Column("variant", pl.String()), _ts("ts")),
    key=("experiment_id", "customer_id"),
    description="first assignment only",
)
OUTCOMES = TableSpec(
    "outcomes",
    (
        _id("experiment_id"),
        _id("customer_id"),
        Column("metric", pl.String()),
        Column("value", pl.Float64(), finite=True),
    ),
    key=("experiment_id", "customer_id", "metric"),
    description="pre-aggregated outcomes of an imported experiment",
)

TABLES: Mapping[str, TableSpec] = {
    t.name: t
    for t in (
        CUSTOMERS,
        MERCHANTS,
        TRANSACTIONS,
        OFFERS,
        EXPOSURES,
        CLAIMS,
        CLAIM_LABELS,
        EXPERIMENTS,
        ASSIGNMENTS,
        OUTCOMES,
    )
}


def spec(name: str) -> TableSpec:
    """The spec of table `name`.

    Raises:
        KeyError: with the list of known tables when `name` is not one.
    """
    try:
        return TABLES[name]
    except KeyError:
        msg = f"unknown table {name!r}; the contract has {', '.join(TABLES)}"
        raise KeyError(msg) from None


# ---------------------------------------------------------------- schema-level checks


def schema_violations(table: TableSpec, schema: pl.Schema) -> pl.DataFrame:
    """Column-level problems: missing columns and wrong dtypes (incl. non-UTC timestamps)."""
    rows: list[dict[str, object]] = []
    for col in table.columns:
        if col.name not in schema:
            rows.append(_column_row(table.name, col.name, "missing_column", None, "column missing"))
            continue
        got = schema[col.name]
        if got != col.dtype:
            wrong_zone = isinstance(got, pl.Datetime) and got.time_zone != TS.time_zone
            rule = "utc" if wrong_zone and col.dtype == TS else "dtype"
            message = (
                f"expected timestamps in UTC, got {got}"
                if rule == "utc"
                else f"expected dtype {col.dtype}, got {got}"
            )
            rows.append(_column_row(table.name, col.name, rule, str(got), message))
    return pl.DataFrame(rows, schema=VIOLATION_SCHEMA)


def _column_row(
    table: str, column: str, rule: str, value: str | None, message: str
) -> dict[str, object]:
    return {
        "table": table,
        "row": None,
        "column": column,
        "rule": rule,
        "value": value,
        "message": message,
    }


# ---------------------------------------------------------------- row-level checks


def _column_checks(table: TableSpec, lf: pl.LazyFrame) -> Iterable[pl.LazyFrame]:
    """Null, vocabulary, finiteness, money and range checks of each column."""
    name = table.name
    for col in table.columns:
        c = pl.col(col.name)
        if not col.nullable:
            yield _violations(
                name,
                col.name,
                "not_null",
                lf.filter(c.is_null()),
                c,
                pl.lit("expected a value, got null"),
            )
        if col.vocab is not None:
            allowed = [v.value for v in col.vocab]
            yield _violations(
                name,
                col.name,
                "vocabulary",
                lf.filter(c.is_not_null() & ~c.is_in(allowed)),
                c,
                pl.format("expected one of {}, got {}", pl.lit(", ".join(allowed)), c),
            )
        if col.money or col.finite:
            yield _violations(
                name,
                col.name,
                "finite",
                lf.filter(c.is_not_null() & ~c.is_finite()),
                c,
                pl.format("expected a finite number, got {}", c),
            )
        if col.money:
            yield _violations(
                name,
                col.name,
                "money_cents",
                lf.filter(c.is_finite() & ((c * 100).round(0) - c * 100).abs().gt(1e-6)),
                c,
                pl.format("expected at most two decimals, got {}", c),
            )
        if col.low is not None or col.high is not None:
            low = -float("inf") if col.low is None else col.low
            high = float("inf") if col.high is None else col.high
            # a non-finite value is reported once, by rule finite
            comparable = c.is_finite() if col.money or col.finite else ~c.is_nan()
            yield _violations(
                name,
                col.name,
                "range",
                lf.filter(c.is_not_null() & comparable & ~c.is_between(low, high)),
                c,
                pl.format("expected a value in [{}, {}], got {}", pl.lit(low), pl.lit(high), c),
            )
    if name == "transactions":
        yield _violations(
            name,
            "amount",
            "nonzero",
            lf.filter(pl.col("amount") == 0),
            pl.col("amount"),
            pl.lit("expected a non-zero amount (purchase > 0, return < 0)"),
        )


def _key_check(table: TableSpec, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Every repeat of a key after its first row (the first row itself is fine)."""
    key = list(table.key)
    first = pl.col(ROW).min().over(key)
    dup = lf.with_columns(first.alias("__first")).filter(pl.col(ROW) > pl.col("__first"))
    value = pl.concat_str([pl.col(k).cast(pl.String).fill_null("null") for k in key], separator="/")
    return _violations(
        table.name,
        "/".join(key),
        "unique",
        dup,
        value,
        pl.format("duplicate key {} (first at row {})", value, pl.col("__first") + 1),
    )


def table_rules(table: TableSpec, lf: pl.LazyFrame) -> list[pl.LazyFrame]:
    """All one-table row rules of `table`, as lazy violation frames.

    `lf` must have the table's schema; its rows are numbered in their current order.
    """
    numbered = lf.with_row_index(ROW)
    checks = [*_column_checks(table, numbered), _key_check(table, numbered)]
    checks.extend(check(numbered) for check in table.checks)
    return checks


# ---------------------------------------------------------------- cross-table checks


def _foreign_key(
    child: str,
    column: str,
    parent: str,
    parent_column: str,
    frames: Mapping[str, pl.LazyFrame],
) -> pl.LazyFrame:
    c = pl.col(column)
    keys = frames[parent].select(pl.col(parent_column).alias(column)).unique()
    orphans = frames[child].filter(c.is_not_null()).join(keys, on=column, how="anti")
    return _violations(
        child,
        column,
        "foreign_key",
        orphans,
        c,
        pl.format("{} not found in {}.{}", c, pl.lit(parent), pl.lit(parent_column)),
    )


FOREIGN_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("transactions", "customer_id", "customers", "customer_id"),
    ("transactions", "merchant_id", "merchants", "merchant_id"),
    ("exposures", "customer_id", "customers", "customer_id"),
    ("exposures", "offer_id", "offers", "offer_id"),
    ("exposures", "experiment_id", "experiments", "experiment_id"),
    ("claims", "customer_id", "customers", "customer_id"),
    ("claims", "txn_id", "transactions", "txn_id"),
    ("claims", "exposure_id", "exposures", "exposure_id"),
    ("claim_labels", "claim_id", "claims", "claim_id"),
    ("assignments", "experiment_id", "experiments", "experiment_id"),
    ("outcomes", "experiment_id", "experiments", "experiment_id"),
)


def _return_rules(frames: Mapping[str, pl.LazyFrame]) -> list[pl.LazyFrame]:
    """A return references an earlier purchase of the same customer and never exceeds it."""
    txns = frames["transactions"]
    purchases = txns.filter(pl.col("amount") > 0).select(
        pl.col("txn_id").alias("original_txn_id"),
        pl.col("customer_id").alias("__orig_customer"),
        pl.col("ts").alias("__orig_ts"),
        pl.col("amount").alias("__orig_amount"),
    )
    returns = txns.filter(pl.col("amount") < 0, pl.col("original_txn_id").is_not_null()).join(
        purchases, on="original_txn_id", how="left"
    )
    link = pl.col("original_txn_id")
    missing = _violations(
        "transactions",
        "original_txn_id",
        "return_original",
        returns.filter(pl.col("__orig_customer").is_null()),
        link,
        pl.format("{} is not a purchase in transactions", link),
    )
    other_customer = _violations(
        "transactions",
        "original_txn_id",
        "return_same_customer",
        returns.filter(
            pl.col("__orig_customer").is_not_null()
            & (pl.col("__orig_customer") != pl.col("customer_id"))
        ),
        link,
        pl.format("{} belongs to customer {}", link, pl.col("__orig_customer")),
    )
    not_earlier = _violations(
        "transactions",
        "ts",
        "return_after_purchase",
        returns.filter(pl.col("ts") < pl.col("__orig_ts")),
        pl.col("ts"),
        pl.format("return at {} precedes its purchase at {}", pl.col("ts"), pl.col("__orig_ts")),
    )
    # returns so far, in time order: the return that crosses the purchase amount is flagged,
    # not the earlier ones that were within it
    returned = pl.col("__returned")
    exceeding = (
        returns.sort("original_txn_id", "ts", ROW)
        .with_columns(pl.col("amount").cum_sum().over("original_txn_id").neg().alias("__returned"))
        .filter(
            pl.col("__orig_amount").is_not_null() & (returned > pl.col("__orig_amount") + 0.005)
        )
    )
    exceeds = _violations(
        "transactions",
        "amount",
        "return_exceeds_purchase",
        exceeding,
        pl.col("amount"),
        pl.format(
            "returns of {} total {} but the purchase was {}",
            link,
            returned.round(2),
            pl.col("__orig_amount"),
        ),
    )
    return [missing, other_customer, not_earlier, exceeds]


def _claim_customer_rule(frames: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    owners = frames["transactions"].select("txn_id", pl.col("customer_id").alias("__txn_customer"))
    joined = frames["claims"].join(owners, on="txn_id", how="inner")
    return _violations(
        "claims",
        "txn_id",
        "claim_same_customer",
        joined.filter(pl.col("__txn_customer") != pl.col("customer_id")),
        pl.col("txn_id"),
        pl.format("{} belongs to customer {}", pl.col("txn_id"), pl.col("__txn_customer")),
    )


def _exposure_overlap_rule(frames: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """At most one valid exposure per customer at a time (windows are half-open)."""
    ordered = frames["exposures"].sort("customer_id", "ts", ROW)
    # the latest end among the customer's earlier windows, and the exposure that has it
    end_so_far = pl.col("valid_until").cum_max().over("customer_id")
    holder = (
        pl.when(pl.col("valid_until") == pl.col("__end_so_far"))
        .then(pl.col("exposure_id"))
        .fill_null(strategy="forward")
        .over("customer_id")
    )
    overlapping = (
        ordered.with_columns(end_so_far.alias("__end_so_far"))
        .with_columns(holder.alias("__holder"))
        .with_columns(
            pl.col("__end_so_far").shift(1).over("customer_id").alias("__prev_end"),
            pl.col("__holder").shift(1).over("customer_id").alias("__prev_id"),
        )
        .filter(pl.col("__prev_end") > pl.col("ts"))
    )
    return _violations(
        "exposures",
        "ts",
        "exposure_overlap",
        overlapping,
        pl.col("ts"),
        pl.format(
            "customer {} already has exposure {} valid until {}",
            pl.col("customer_id"),
            pl.col("__prev_id"),
            pl.col("__prev_end"),
        ),
    )


def dataset_rules(frames: Mapping[str, pl.LazyFrame]) -> list[pl.LazyFrame]:
    """Rules that join tables, for the tables present in `frames`.

    Each frame must carry the row index column `ROW` (see `number_rows`).
    """
    present = set(frames)
    checks = [
        _foreign_key(child, col, parent, pcol, frames)
        for child, col, parent, pcol in FOREIGN_KEYS
        if {child, parent} <= present
    ]
    if "transactions" in present:
        checks.extend(_return_rules(frames))
    if {"claims", "transactions"} <= present:
        checks.append(_claim_customer_rule(frames))
    if "exposures" in present:
        checks.append(_exposure_overlap_rule(frames))
    return checks


def number_rows(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Add the 0-based row index every rule reports from."""
    return lf.with_row_index(ROW)
