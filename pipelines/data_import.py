"""`cashback data import`: map a real data set onto the contract and write its tables.

The importer of the source reads and checks the file and derives the tables (see
`pipelines.importers`); this job writes them into a staging directory, validates them
together, and only then swaps them into `out`. On any error nothing in `out` changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import present_tables, staged_directory, validate_directory, write_table
from cashback.validation import ContractError
from pipelines.importers import Imported, cookie_cats, hillstrom, mapping, online_retail

Importer = Callable[[Path, Settings], Imported]
BUILT_IN: dict[str, Importer] = {
    "online_retail": online_retail.load,
    "hillstrom": hillstrom.load,
    "cookie_cats": cookie_cats.load,
}
MAPPED = "mapped"


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote.

    Attributes:
        rows: table name to the rows written.
        left_out: reason to the number of source rows left out for it.
        notes: facts the user should know (defaults used, fallbacks, stand-in dates).
    """

    rows: dict[str, int]
    left_out: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run(
    source: str, path: Path, out: Path, settings: Settings, *, mapping: Path | None = None
) -> ImportSummary:
    """Import `path` as `source` into the data directory `out`.

    Args:
        source: online_retail, hillstrom, cookie_cats, or mapped (with `mapping`).
        path: the file to import.
        out: the data directory to write the contract tables to.
        settings: service settings (default margin rate).
        mapping: the YAML column mapping, for source `mapped` only.

    Returns:
        Rows written per table, rows left out per reason, and notes.

    Raises:
        CashbackError: a bad source, mapping or file, or `out` holding other contract
            tables; nothing is written.
        ContractError: when the tables break the contract; nothing is written.
    """
    imported = importer(source, mapping)(path, settings)
    _refuse_other_tables(out, imported.tables)
    with staged_directory(out) as staging:
        for name, frame in imported.tables.items():
            _write(staging, name, frame, path)
        report = validate_directory(staging)
        if not report.ok:
            raise ContractError(report, str(path))
    return ImportSummary(
        rows={name: frame.height for name, frame in imported.tables.items()},
        left_out=dict(imported.left_out),
        notes=list(imported.notes),
    )


def importer(source: str, mapping: Path | None) -> Importer:
    """The importer of `source`.

    Raises:
        CashbackError: for an unknown source, `mapped` without a mapping, or a mapping
            given to a built-in source.
    """
    if source == MAPPED:
        if mapping is None:
            msg = "source 'mapped' needs --mapping FILE.yaml (see pipelines/importers/mapping.py)"
            raise CashbackError(msg)
        return partial(_mapped, mapping_path=mapping)
    if source not in BUILT_IN:
        known = ", ".join([*BUILT_IN, MAPPED])
        msg = f"unknown source {source!r}; expected one of {known}"
        raise CashbackError(msg)
    if mapping is not None:
        msg = f"--mapping is only for source 'mapped'; {source} has a built-in mapping"
        raise CashbackError(msg)
    return BUILT_IN[source]


def _mapped(path: Path, settings: Settings, *, mapping_path: Path) -> Imported:
    return mapping.load(path, settings, mapping_path)


def _write(staging: Path, name: str, frame: pl.DataFrame, path: Path) -> None:
    """Write one table; a contract violation names the file it came from.

    Raises:
        ContractError: the rows of `name` break a one-table rule.
    """
    try:
        write_table(staging, name, frame)
    except ContractError as error:
        raise ContractError(error.report, f"{name} imported from {path}") from None


def _refuse_other_tables(out: Path, tables: Mapping[str, object]) -> None:
    """Refuse to mix: `out` may only hold tables this import replaces.

    Raises:
        CashbackError: naming the tables of another import found in `out`.
    """
    if not out.is_dir():
        return
    others = [name for name in present_tables(out) if name not in tables]
    if others:
        msg = (
            f"{out} already holds contract tables this import would not replace "
            f"({', '.join(others)}); import into an empty directory"
        )
        raise CashbackError(msg)
