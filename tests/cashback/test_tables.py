"""Reading and writing contract tables: validated, and never half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cashback.tables import (
    TableWriter,
    load_table,
    read_table,
    staged_directory,
    table_path,
    validate_directory,
    write_table,
)
from cashback.validation import ContractError
from tests.cashback.dataset_builder import valid_dataset, with_values

BROKEN_AMOUNT = "transactions row 4 column amount: rule finite: expected a finite number, got inf"


@pytest.fixture(scope="module")
def dataset() -> dict[str, pl.DataFrame]:
    return valid_dataset()


def _files(directory: Path) -> list[str]:
    """Every entry of a directory (hidden temp files included), sorted."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _write_all(directory: Path, dataset: dict[str, pl.DataFrame]) -> None:
    for name, frame in dataset.items():
        write_table(directory, name, frame)


# ---------------------------------------------------------------- write_table


def test_given_a_valid_table_when_written_then_it_reads_back_identical(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    for name, frame in dataset.items():
        path = write_table(tmp_path, name, frame)

        assert path == tmp_path / f"{name}.parquet"
        assert_frame_equal(load_table(tmp_path, name), frame)
    assert _files(tmp_path) == sorted(f"{name}.parquet" for name in dataset)


def test_given_columns_in_another_order_and_extra_columns_then_the_contract_order_is_written(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    frame = dataset["merchants"]
    shuffled = frame.select(reversed(frame.columns)).with_columns(pl.lit(1).alias("extra"))

    write_table(tmp_path, "merchants", shuffled)

    assert_frame_equal(load_table(tmp_path, "merchants"), frame)


def test_given_integral_numbers_of_a_wider_dtype_then_they_are_cast_to_the_contract(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    offers = dataset["offers"]
    wider = offers.with_columns(pl.col("validation_days").cast(pl.Float64))

    write_table(tmp_path, "offers", wider)

    assert_frame_equal(load_table(tmp_path, "offers"), offers)


def test_given_a_fractional_number_for_an_integer_column_then_it_is_refused_not_truncated(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    offers = dataset["offers"].with_columns(pl.col("validation_days").cast(pl.Float64) + 0.5)

    with pytest.raises(ContractError) as raised:
        write_table(tmp_path, "offers", offers)

    assert raised.value.report.messages() == [
        "offers column validation_days: rule dtype: expected dtype Int32, got Float64"
    ]
    assert _files(tmp_path) == []


def test_given_a_row_breaking_a_rule_when_written_then_nothing_is_written(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    broken = with_values(dataset, "transactions", 4, amount=float("inf"))["transactions"]

    with pytest.raises(ContractError) as raised:
        write_table(tmp_path / "data", "transactions", broken)

    assert raised.value.report.messages() == [BROKEN_AMOUNT]
    assert "transactions" in str(raised.value)
    assert BROKEN_AMOUNT in str(raised.value)
    assert not table_path(tmp_path / "data", "transactions").exists()
    assert _files(tmp_path / "data") == []


def test_given_a_missing_column_when_written_then_the_error_names_it(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    with pytest.raises(ContractError) as raised:
        write_table(tmp_path, "customers", dataset["customers"].drop("region"))

    assert raised.value.report.messages() == [
        "customers column region: rule missing_column: column missing"
    ]
    assert _files(tmp_path) == []


def test_given_an_existing_table_when_a_broken_one_is_written_then_the_old_one_is_intact(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    write_table(tmp_path, "transactions", dataset["transactions"])
    broken = with_values(dataset, "transactions", 4, amount=float("inf"))["transactions"]

    with pytest.raises(ContractError):
        write_table(tmp_path, "transactions", broken)

    assert_frame_equal(load_table(tmp_path, "transactions"), dataset["transactions"])
    assert _files(tmp_path) == ["transactions.parquet"]


def test_given_an_existing_table_when_writing_fails_midway_then_the_old_one_is_intact(
    tmp_path: Path, dataset: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_table(tmp_path, "merchants", dataset["merchants"])
    newer = dataset["merchants"].with_columns(pl.lit(0.1).alias("margin_rate"))

    def half_write(self: pl.DataFrame, file: Path, **kwargs: Any) -> None:
        Path(file).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_write)

    with pytest.raises(OSError, match="disk full"):
        write_table(tmp_path, "merchants", newer)

    monkeypatch.undo()
    assert_frame_equal(load_table(tmp_path, "merchants"), dataset["merchants"])
    assert _files(tmp_path) == ["merchants.parquet"]


def test_given_an_existing_table_when_a_valid_one_is_written_then_it_is_replaced(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    write_table(tmp_path, "merchants", dataset["merchants"])
    newer = dataset["merchants"].with_columns(pl.lit(0.1).alias("margin_rate"))

    write_table(tmp_path, "merchants", newer)

    assert_frame_equal(load_table(tmp_path, "merchants"), newer)
    assert _files(tmp_path) == ["merchants.parquet"]


def test_given_an_unknown_table_name_then_the_error_lists_the_contract_tables(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    with pytest.raises(KeyError, match=r"unknown table 'customer'.*customers, merchants"):
        write_table(tmp_path, "customer", dataset["customers"])


# ---------------------------------------------------------------- read_table


def test_given_no_file_when_read_then_the_error_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"customers\.parquet: table 'customers' not found"):
        read_table(tmp_path, "customers")


@pytest.mark.parametrize(
    ("table", "change", "expected"),
    [
        (
            "customers",
            pl.col("region").alias("area"),
            "customers column region: rule missing_column: column missing",
        ),
        (
            "transactions",
            pl.col("amount").cast(pl.String),
            "transactions column amount: rule dtype: expected dtype Float64, got String",
        ),
        (
            "claims",
            pl.col("ts").dt.replace_time_zone(None),
            (
                "claims column ts: rule utc: expected timestamps in UTC, "
                "got Datetime(time_unit='us', time_zone=None)"
            ),
        ),
    ],
    ids=["missing-column", "wrong-dtype", "naive-timestamps"],
)
def test_given_a_parquet_off_contract_when_read_then_the_error_names_file_and_column(
    tmp_path: Path,
    dataset: dict[str, pl.DataFrame],
    table: str,
    change: pl.Expr,
    expected: str,
) -> None:
    path = tmp_path / f"{table}.parquet"
    dataset[table].with_columns(change).drop("region", strict=False).write_parquet(path)

    with pytest.raises(ContractError) as raised:
        read_table(tmp_path, table)

    assert raised.value.report.messages() == [expected]
    assert raised.value.source == str(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_given_a_parquet_with_extra_columns_when_read_then_only_contract_columns_come_back(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    merchants = dataset["merchants"]
    merchants.with_columns(pl.lit("x").alias("notes")).write_parquet(tmp_path / "merchants.parquet")

    assert_frame_equal(read_table(tmp_path, "merchants").collect(), merchants)


# ---------------------------------------------------------------- TableWriter


def _chunks(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(i, size) for i in range(0, frame.height, size)]


def _stream(
    directory: Path, name: str, chunks: list[pl.DataFrame], then_fail: Exception | None = None
) -> TableWriter:
    """Stream the chunks with a TableWriter, raising `then_fail` after the last one."""
    with TableWriter(directory, name) as writer:
        for chunk in chunks:
            writer.write(chunk)
        if then_fail is not None:
            raise then_fail
    return writer


def test_given_several_chunks_when_streamed_then_all_rows_are_written_in_order(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    offers = dataset["offers"]  # list-of-struct and nullable columns included

    writer = _stream(tmp_path, "offers", _chunks(offers, 2))

    assert writer.rows == offers.height
    assert_frame_equal(load_table(tmp_path, "offers"), offers)
    assert _files(tmp_path) == ["offers.parquet"]


def test_given_no_chunk_when_streamed_then_an_empty_table_with_the_schema_is_written(
    tmp_path: Path,
) -> None:
    _stream(tmp_path, "claims", [])

    written = load_table(tmp_path, "claims")
    assert written.height == 0
    assert written.schema == valid_dataset()["claims"].schema


def test_given_an_exception_mid_stream_then_no_file_is_left(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    chunks = _chunks(dataset["transactions"], 2)

    with pytest.raises(RuntimeError, match="source went away"):
        _stream(tmp_path, "transactions", chunks, then_fail=RuntimeError("source went away"))

    assert _files(tmp_path) == []


def test_given_a_broken_chunk_mid_stream_then_the_error_says_where_and_no_file_is_left(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    broken = with_values(dataset, "transactions", 4, amount=float("inf"))["transactions"]

    # the second chunk holds rows 3 and 4 of the table, rows 1 and 2 of the chunk
    with pytest.raises(ContractError) as raised:
        _stream(tmp_path, "transactions", _chunks(broken, 2))

    # row numbers count from the start of the table, not of the chunk
    assert raised.value.report.messages() == [BROKEN_AMOUNT]
    assert str(raised.value).splitlines() == [
        "1 contract violation(s) in transactions (rows from 3):",
        f"  {BROKEN_AMOUNT}",
    ]
    assert _files(tmp_path) == []


def test_given_an_existing_table_when_streaming_fails_then_the_old_one_is_intact(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    write_table(tmp_path, "merchants", dataset["merchants"])

    with pytest.raises(RuntimeError):
        _stream(tmp_path, "merchants", [dataset["merchants"].head(1)], then_fail=RuntimeError())

    assert_frame_equal(load_table(tmp_path, "merchants"), dataset["merchants"])
    assert _files(tmp_path) == ["merchants.parquet"]


# ---------------------------------------------------------------- staged_directory


def test_given_a_job_that_succeeds_then_its_files_replace_those_of_out_and_others_stay(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    out = tmp_path / "data"
    write_table(out, "merchants", dataset["merchants"])
    (out / ".ip_pepper").write_text("kept")
    newer = dataset["merchants"].with_columns(pl.lit(0.1).alias("margin_rate"))

    with staged_directory(out) as staging:
        assert staging != out
        write_table(staging, "merchants", newer)
        write_table(staging / "truth", "customers", dataset["customers"])
        assert_frame_equal(load_table(out, "merchants"), dataset["merchants"])

    assert_frame_equal(load_table(out, "merchants"), newer)
    assert_frame_equal(load_table(out / "truth", "customers"), dataset["customers"])
    assert (out / ".ip_pepper").read_text() == "kept"
    assert _files(tmp_path) == ["data"]


def test_given_a_job_that_fails_then_out_is_left_unchanged(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    out = tmp_path / "data"
    write_table(out, "merchants", dataset["merchants"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def job() -> None:
        with staged_directory(out) as staging:
            write_table(staging, "merchants", dataset["merchants"].head(1))
            write_table(staging, "customers", dataset["customers"])
            raise RuntimeError("job failed")

    with pytest.raises(RuntimeError, match="job failed"):
        job()

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _files(tmp_path) == ["data"]  # the staging directory is gone


def test_given_a_job_that_fails_and_no_out_yet_then_out_is_not_created(tmp_path: Path) -> None:
    out = tmp_path / "data"

    def job() -> None:
        with staged_directory(out):
            raise RuntimeError("job failed")

    with pytest.raises(RuntimeError, match="job failed"):
        job()

    assert _files(tmp_path) == []


# ---------------------------------------------------------------- validate_directory


def test_given_a_directory_of_valid_tables_then_it_validates_clean(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    _write_all(tmp_path, dataset)

    assert validate_directory(tmp_path).ok


def test_given_tables_that_disagree_then_the_cross_table_rules_run_on_the_files(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    # each table is fine alone (write_table accepts it), but the claim is of c2's transaction
    _write_all(tmp_path, with_values(dataset, "claims", 1, txn_id="t3"))

    assert validate_directory(tmp_path).messages() == [
        "claims row 1 column txn_id: rule claim_same_customer: t3 belongs to customer c2"
    ]


def test_given_only_some_tables_then_only_the_rules_between_them_run(
    tmp_path: Path, dataset: dict[str, pl.DataFrame]
) -> None:
    write_table(tmp_path, "transactions", dataset["transactions"])  # customers are absent

    assert validate_directory(tmp_path).ok


def test_given_a_directory_without_tables_then_validation_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no tables here")

    with pytest.raises(FileNotFoundError, match="no contract tables found"):
        validate_directory(tmp_path)
