"""`cashback data validate DIR`, run as the installed console script."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import polars as pl
import pytest

from cashback.tables import write_table
from tests.cashback.dataset_builder import valid_dataset, with_values
from tests.console_script import CASHBACK, run_cashback


def run_validate(directory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `cashback data validate DIR` in tmp_path."""
    return run_cashback("data", "validate", str(directory), cwd=tmp_path)


def _write_dataset(directory: Path, dataset: dict[str, pl.DataFrame]) -> None:
    for name, frame in dataset.items():
        write_table(directory, name, frame)


def _row(*cells: str) -> str:
    """A regex for one table row of the output, cells separated by box characters."""
    return r"\W+".join(re.escape(cell) for cell in cells)


@pytest.fixture(scope="module", autouse=True)
def _console_script_installed() -> None:
    if not CASHBACK.exists():
        pytest.fail(f"console script missing: {CASHBACK} (run `make env`)")


def test_given_a_valid_directory_then_validate_says_so_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_dataset(data, valid_dataset())

    result = run_validate(data, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "all tables satisfy the contract" in result.stdout
    assert result.stderr == ""


def test_given_a_broken_directory_then_validate_names_table_row_column_rule_and_exits_1(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # each table is valid alone; together the claim belongs to another customer's order
    _write_dataset(data, with_values(valid_dataset(), "claims", 2, txn_id="t1"))

    result = run_validate(data, tmp_path)

    assert result.returncode == 1
    assert "1 violation(s)" in result.stdout
    assert re.search(
        _row("claims", "2", "txn_id", "claim_same_customer", "t1 belongs to customer c1"),
        result.stdout,
    ), result.stdout
    assert re.search(_row("claims", "txn_id", "claim_same_customer", "1"), result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_given_a_table_with_a_wrong_schema_then_validate_reports_the_column_without_a_row(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _write_dataset(data, valid_dataset())
    merchants = valid_dataset()["merchants"].drop("margin_rate")
    merchants.write_parquet(data / "merchants.parquet")  # behind write_table's back

    result = run_validate(data, tmp_path)

    assert result.returncode == 1
    assert re.search(
        _row("merchants", "-", "margin_rate", "missing_column", "column missing"), result.stdout
    ), result.stdout


@pytest.mark.parametrize("make_dir", [True, False], ids=["empty-dir", "no-dir"])
def test_given_a_directory_without_tables_then_one_error_line_and_exit_1(
    tmp_path: Path, make_dir: bool
) -> None:
    empty = tmp_path / "empty"
    if make_dir:
        empty.mkdir()

    result = run_validate(empty, tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {empty}: no contract tables found (expected files like customers.parquet)"
    ]


def test_given_a_value_that_looks_like_markup_then_it_is_printed_as_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    broken = with_values(valid_dataset(), "transactions", 1, channel="[/web]")
    for name, frame in broken.items():
        frame.write_parquet(data / f"{name}.parquet")  # write_table would refuse it

    result = run_validate(data, tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "got [/web]" in result.stdout
