"""Checking tables against the contract and reporting what is wrong, row by row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from cashback.contract import (
    VIOLATION_SCHEMA,
    TableSpec,
    dataset_rules,
    number_rows,
    schema_violations,
    table_rules,
)
from cashback.errors import CashbackError

FIRST_ROWS_PER_RULE = 5


class ContractError(CashbackError):
    """Data that breaks the contract; `report` says where and how."""

    def __init__(self, report: ValidationReport, source: str = "") -> None:
        self.report = report
        self.source = source
        super().__init__(report.summary(source))


@dataclass(frozen=True)
class ValidationReport:
    """The violations found, with the first rows of each rule kept and all of them counted.

    Attributes:
        violations: first rows per (table, column, rule), in the violation schema.
        counts: one row per (table, column, rule) with the number of violating rows `n`.
    """

    violations: pl.DataFrame
    counts: pl.DataFrame

    @property
    def ok(self) -> bool:
        """True when nothing breaks the contract."""
        return self.counts.height == 0

    @property
    def total(self) -> int:
        """Number of violations of every rule."""
        return int(self.counts["n"].sum()) if self.counts.height else 0

    def messages(self) -> list[str]:
        """One line per kept violation: `table row N column C: rule R: message`."""
        return [format_violation(v) for v in self.violations.iter_rows(named=True)]

    def summary(self, source: str = "") -> str:
        """A short human-readable summary (first violation of each rule plus counts)."""
        where = f" in {source}" if source else ""
        if self.ok:
            return f"no contract violations{where}"
        lines = [f"{self.total} contract violation(s){where}:"]
        first = self.violations.unique(
            ["table", "column", "rule"], keep="first", maintain_order=True
        )
        counts = {
            (r["table"], r["column"], r["rule"]): r["n"] for r in self.counts.iter_rows(named=True)
        }
        for v in first.iter_rows(named=True):
            n = counts[(v["table"], v["column"], v["rule"])]
            more = f" (and {n - 1} more)" if n > 1 else ""
            lines.append(f"  {format_violation(v)}{more}")
        return "\n".join(lines)


def format_violation(v: Mapping[str, object]) -> str:
    """`transactions row 3 column amount: rule finite: expected a finite number, got inf`."""
    row = "" if v["row"] is None else f" row {v['row']}"
    return f"{v['table']}{row} column {v['column']}: rule {v['rule']}: {v['message']}"


def _report(parts: list[pl.DataFrame]) -> ValidationReport:
    frame = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=VIOLATION_SCHEMA)
    frame = frame.sort("table", "rule", "column", "row", nulls_last=False)
    groups = ["table", "column", "rule"]
    counts = frame.group_by(groups, maintain_order=True).agg(pl.len().alias("n"))
    kept = frame.group_by(groups, maintain_order=True).head(FIRST_ROWS_PER_RULE)
    return ValidationReport(violations=kept.select(VIOLATION_SCHEMA.names()), counts=counts)


def _collect_limited(checks: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    return pl.collect_all(checks) if checks else []


def check_table(table: TableSpec, frame: pl.DataFrame | pl.LazyFrame) -> ValidationReport:
    """Check one table alone: schema, then every one-table row rule.

    Args:
        table: the contract table.
        frame: its rows (columns beyond the contract are ignored).

    Returns:
        The report; row rules are skipped when the schema itself is wrong.
    """
    lf = frame.lazy()
    schema_problems = schema_violations(table, lf.collect_schema())
    if schema_problems.height:
        return _report([schema_problems])
    return _report(_collect_limited(table_rules(table, lf.select(table.schema.names()))))


def check_dataset(
    frames: Mapping[str, pl.LazyFrame], tables: Mapping[str, TableSpec]
) -> ValidationReport:
    """Check several tables, each alone and then against each other.

    Args:
        frames: table name to its rows, for the tables present.
        tables: table name to its spec.

    Returns:
        The report; cross-table rules run only on tables whose schema is right.
    """
    parts: list[pl.DataFrame] = []
    checks: list[pl.LazyFrame] = []
    good: dict[str, pl.LazyFrame] = {}
    for name, lf in frames.items():
        table = tables[name]
        problems = schema_violations(table, lf.collect_schema())
        if problems.height:
            parts.append(problems)
            continue
        contract_lf = lf.select(table.schema.names())
        checks.extend(table_rules(table, contract_lf))
        good[name] = number_rows(contract_lf)
    checks.extend(dataset_rules(good))
    parts.extend(_collect_limited(checks))
    return _report(parts)
