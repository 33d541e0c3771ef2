"""`cashback data import` on tiny hand-written files: built-in sources, YAML mappings, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cashback.cli import app
from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import load_table, validate_directory
from pipelines.data_import import run
from pipelines.importers import local_to_utc, observed_weights

DATA = Path(__file__).resolve().parents[1] / "data"
PURCHASES = DATA / "purchases.csv"
PURCHASES_MAPPING = DATA / "purchases_mapping.yaml"
CLAIMS = DATA / "claims.csv"
CLAIMS_MAPPING = DATA / "claims_mapping.yaml"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (empty when absent)."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


# ---------------------------------------------------------------- mapped: a plain purchase log


def test_a_plain_purchase_log_becomes_transactions_customers_and_merchants(
    tmp_path: Path, settings: Settings
) -> None:
    # given a purchase log with only order id, client, Paris local time and total
    out = tmp_path / "out"

    # when it is imported with its mapping
    summary = run("mapped", PURCHASES, out, settings, mapping=PURCHASES_MAPPING)

    # then the tables it implies are written and satisfy the contract together
    assert summary.rows == {"transactions": 4, "customers": 3, "merchants": 1}
    assert validate_directory(out).ok
    txns = load_table(out, "transactions").sort("txn_id")
    assert txns["ts"].to_list() == [
        utc(2024, 1, 15, 9, 0),  # Paris winter time is UTC+1
        utc(2024, 1, 20, 17, 30),
        utc(2024, 7, 15, 8, 0),  # Paris summer time is UTC+2
        utc(2024, 12, 31, 22, 59),
    ]
    assert txns["amount"].to_list() == [19.99, 5.5, 120.0, 42.1]
    assert set(txns["channel"]) == {"online"}
    assert set(txns["merchant_id"]) == {"unknown"}
    customers = load_table(out, "customers").sort("customer_id")
    assert customers["signup_ts"].to_list() == [
        utc(2024, 1, 15, 9, 0),  # c-1 first seen in January, not July
        utc(2024, 1, 20, 17, 30),
        utc(2024, 12, 31, 22, 59),
    ]
    merchants = load_table(out, "merchants")
    assert merchants.rows() == [("unknown", "unknown", settings.default_margin_rate)]
    assert any("default_margin_rate" in note for note in summary.notes)


def test_a_mapped_signup_column_wins_over_first_seen(tmp_path: Path, settings: Settings) -> None:
    # given a log with a signup date per row and a margin column
    log = write(
        tmp_path / "log.csv",
        "id,who,when,eur,joined,shop,margin\n"
        "t1,a,2024-05-01 10:00:00,10,2023-01-01 00:00:00,s1,0.25\n"
        "t2,a,2024-05-02 10:00:00,12.345,2023-01-01 00:00:00,s1,0.25\n",
    )
    mapping = write(
        tmp_path / "m.yaml",
        "table: transactions\n"
        "columns: {txn_id: id, customer_id: who, ts: when, amount: eur, signup_ts: joined,"
        " merchant_id: shop, margin_rate: margin}\n"
        "constants: {channel: store, category: grocery}\n",
    )

    # when it is imported
    summary = run("mapped", log, tmp_path / "out", settings, mapping=mapping)

    # then the signup and margin come from the file, and amounts are rounded to cents
    out = tmp_path / "out"
    assert load_table(out, "customers")["signup_ts"].to_list() == [utc(2023, 1, 1)]
    assert load_table(out, "merchants").rows() == [("s1", "grocery", 0.25)]
    assert load_table(out, "transactions")["amount"].to_list() == [10.0, 12.35]
    assert not any("margin" in note or "first seen" in note for note in summary.notes)


def test_a_parquet_file_with_naive_and_aware_times_is_read_in_its_time_zone(
    tmp_path: Path, settings: Settings
) -> None:
    # given a parquet purchase log with naive New York times and an integer customer id
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "id": ["t1", "t2"],
            "cust": [7, 8],
            "at": [datetime(2024, 1, 1, 12, 0), datetime(2024, 7, 1, 12, 0)],  # noqa: DTZ001
            "total": [1.5, 2.0],
        }
    ).write_parquet(path)
    mapping = write(
        tmp_path / "m.yaml",
        "table: transactions\n"
        "columns: {txn_id: id, customer_id: cust, ts: at, amount: total}\n"
        "timestamps: {ts: {timezone: America/New_York}}\n"
        "constants: {channel: app}\n",
    )

    # when it is imported
    run("mapped", path, tmp_path / "out", settings, mapping=mapping)

    # then the times are converted to UTC and ids are text
    txns = load_table(tmp_path / "out", "transactions")
    assert txns["ts"].to_list() == [utc(2024, 1, 1, 17), utc(2024, 7, 1, 16)]
    assert txns["customer_id"].to_list() == ["7", "8"]


# ---------------------------------------------------------------- mapped: a labelled claims file


def test_a_labelled_claims_file_becomes_claims_transactions_and_labels(
    tmp_path: Path, settings: Settings
) -> None:
    # given a claims file with a fraud column (1/yes fraud, 0 legit, empty unlabelled)
    out = tmp_path / "out"

    # when it is imported with its mapping
    summary = run("mapped", CLAIMS, out, settings, mapping=CLAIMS_MAPPING)

    # then each claim has its own transaction and the labelled claims have a label
    assert summary.rows == {
        "claims": 4,
        "claim_labels": 3,
        "transactions": 4,
        "customers": 3,
        "merchants": 1,
    }
    assert validate_directory(out).ok
    claims = load_table(out, "claims").sort("claim_id")
    assert claims["txn_id"].to_list() == ["txn-k-1", "txn-k-2", "txn-k-3", "txn-k-4"]
    txns = load_table(out, "transactions").sort("txn_id")
    assert txns["amount"].to_list() == claims["amount"].to_list()
    assert txns["customer_id"].to_list() == claims["customer_id"].to_list()
    assert txns["ts"].to_list() == claims["ts"].to_list()
    labels = load_table(out, "claim_labels").sort("claim_id")
    assert labels.select("claim_id", "label", "abuse_type", "source").rows() == [
        ("k-1", "legit", None, "review"),
        ("k-2", "fraud", "other", "review"),
        ("k-3", "fraud", "other", "review"),
    ]
    # a label without a decision time is dated at its claim
    assert labels["decided_ts"].to_list() == [
        utc(2024, 3, 20, 12),
        utc(2024, 4, 2, 8),
        utc(2024, 3, 2, 10, 20),
    ]


def test_claims_sharing_a_mapped_txn_id_share_one_transaction(
    tmp_path: Path, settings: Settings
) -> None:
    # given two claims on the same receipt (same txn_id) by the same customer
    path = write(
        tmp_path / "claims.csv",
        "claim,txn,who,at,amt,cb\n"
        "k1,t1,a,2024-03-01 10:00:00,50,1.5\n"
        "k2,t1,a,2024-03-01 09:00:00,50,1.5\n",
    )
    mapping = write(
        tmp_path / "m.yaml",
        "table: claims\n"
        "columns: {claim_id: claim, txn_id: txn, customer_id: who, ts: at, amount: amt,"
        " cashback_amount: cb}\n"
        "constants: {channel: online, payout_method: points}\n",
    )

    # when it is imported
    run("mapped", path, tmp_path / "out", settings, mapping=mapping)

    # then one transaction is derived, at the earliest claim
    txns = load_table(tmp_path / "out", "transactions")
    assert txns.select("txn_id", "ts").rows() == [("t1", utc(2024, 3, 1, 9))]


# ---------------------------------------------------------------- malformed input


MAPPING_OK = "table: transactions\ncolumns: {txn_id: id, customer_id: who, ts: at, amount: eur}\nconstants: {channel: online}\n"  # noqa: E501


@pytest.mark.parametrize(
    ("content", "encoding", "mapping", "pieces"),
    [
        pytest.param(
            "id,who,eur\nt1,a,1\n",
            "utf-8",
            MAPPING_OK,
            ["missing column(s) at;", "the file has id, who, eur"],
            id="missing-column",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\nt2,a,01/02/2024,2\n",
            "utf-8",
            MAPPING_OK,
            ["data row 2, column at", "%Y-%m-%d %H:%M:%S", "got '01/02/2024'"],
            id="unparsable-date",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,ten\n",
            "utf-8",
            MAPPING_OK,
            ["data row 1, column eur: expected a number (amount), got 'ten'"],
            id="unparsable-number",
        ),
        pytest.param(
            "id,who,at,eur\nt1,,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK,
            ["data row 1, column who", "got an empty cell"],
            id="empty-required-cell",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\nt2,Zoë,2024-01-01 10:00:00,1\n",
            "latin-1",
            MAPPING_OK,
            ["bad encoding: not valid utf-8", "byte 0xeb at data row 2", "encoding: latin-1"],
            id="bad-encoding",
        ),
        pytest.param("", "utf-8", MAPPING_OK, ["empty file"], id="empty-file"),
        pytest.param("id,who,at,eur\n", "utf-8", MAPPING_OK, ["no data rows"], id="header-only"),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK + "colums: {}\n",
            ["invalid mapping: unknown key 'colums'", "expected one of table, format"],
            id="unknown-mapping-key",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK.replace("channel: online", "chanel: online"),
            ["constants: unknown contract column(s) chanel"],
            id="unknown-contract-column",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK.replace("constants: {channel: online}\n", ""),
            ["no source for contract column(s) channel", "set a value under `constants`"],
            id="no-channel",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK.replace("channel: online", "channel: web"),
            ["constants: channel must be one of online, store, app, got 'web'"],
            id="constant-outside-vocabulary",
        ),
        pytest.param(
            "id,who,at,eur\nt1,a,2024-01-01 10:00:00,1\n",
            "utf-8",
            MAPPING_OK + "timestamps: {ts: {timezone: Mars/Olympus}}\n",
            ["unknown time zone 'Mars/Olympus'"],
            id="unknown-time-zone",
        ),
    ],
)
def test_a_malformed_file_gives_one_clear_error_and_writes_nothing(
    tmp_path: Path,
    settings: Settings,
    content: str,
    encoding: str,
    mapping: str,
    pieces: list[str],
) -> None:
    # given a malformed file or mapping
    path = write(tmp_path / "log.csv", content, encoding)
    mapping_path = write(tmp_path / "m.yaml", mapping)
    out = tmp_path / "out"

    # when it is imported
    with pytest.raises(CashbackError) as caught:
        run("mapped", path, out, settings, mapping=mapping_path)

    # then the one-line error names the file (or mapping) and what is wrong; nothing is written
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith((str(path), str(mapping_path)))
    for piece in pieces:
        assert piece in message
    assert not out.exists()


def test_a_failed_import_leaves_an_existing_directory_unchanged(
    tmp_path: Path, settings: Settings
) -> None:
    # given a directory holding a previous import
    out = tmp_path / "out"
    run("mapped", PURCHASES, out, settings, mapping=PURCHASES_MAPPING)
    before = tree(out)

    # when a malformed file is imported into it
    bad = write(tmp_path / "bad.csv", "order_id,client,date,total\no-9,c-9,yesterday,1\n")
    with pytest.raises(CashbackError, match="data row 1, column date"):
        run("mapped", bad, out, settings, mapping=PURCHASES_MAPPING)

    # then the directory is as it was, and no staging directory is left behind
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out"]


def test_data_breaking_the_contract_is_refused_whole(tmp_path: Path, settings: Settings) -> None:
    # given a purchase log with a negative amount (a return without its purchase)
    path = write(tmp_path / "log.csv", "id,who,at,eur\nt1,a,2024-01-01 10:00:00,-5\n")
    mapping = write(tmp_path / "m.yaml", MAPPING_OK)

    # when it is imported, then the contract violation is reported and nothing is written
    with pytest.raises(CashbackError, match="return_link"):
        run("mapped", path, tmp_path / "out", settings, mapping=mapping)
    assert not (tmp_path / "out").exists()


def test_importing_into_a_directory_of_other_tables_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    # given a directory holding a claims import (claims, claim_labels, ...)
    out = tmp_path / "out"
    run("mapped", CLAIMS, out, settings, mapping=CLAIMS_MAPPING)
    before = tree(out)

    # when a purchase log (no claims) is imported into it, then it is refused
    with pytest.raises(CashbackError, match=r"would not replace \(claims, claim_labels\)"):
        run("mapped", PURCHASES, out, settings, mapping=PURCHASES_MAPPING)
    assert tree(out) == before


@pytest.mark.parametrize(
    ("source", "mapping", "message"),
    [
        ("spreadsheet", None, "unknown source 'spreadsheet'; expected one of online_retail"),
        ("mapped", None, "source 'mapped' needs --mapping"),
        ("hillstrom", PURCHASES_MAPPING, "--mapping is only for source 'mapped'"),
    ],
)
def test_a_bad_source_is_refused(
    tmp_path: Path, settings: Settings, source: str, mapping: Path | None, message: str
) -> None:
    with pytest.raises(CashbackError, match=message):
        run(source, PURCHASES, tmp_path / "out", settings, mapping=mapping)


def test_a_missing_file_is_named(tmp_path: Path, settings: Settings) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(CashbackError, match=r"nope\.csv: file not found"):
        run("cookie_cats", missing, tmp_path / "out", settings)


# ---------------------------------------------------------------- built-in: Online Retail


def test_online_retail_groups_invoices_links_returns_and_counts_what_is_left_out(
    tmp_path: Path, settings: Settings
) -> None:
    # given invoice lines covering every rule (see the comments of the expected values)
    out = tmp_path / "out"

    # when they are imported
    summary = run("online_retail", DATA / "online_retail_sample.csv", out, settings)

    # then each line left out is counted once, under its first reason
    assert summary.left_out == {
        "missing_customer_id": 1,  # 100012
        "adjustment": 1,  # A100010 (it has a customer id)
        "non_positive_price": 1,  # 100011
        "duplicate_line": 1,  # the second copy of a 100001 line
        "quantity_sign": 1,  # 100016: a sale of -1
        "return_without_purchase": 2,  # C100006 (item never bought), C100013 (before the purchase)
        # C100005: 100002 was already returned in full; C100017: 4.95 > the 3.95 left of
        # 100008 after the discount C100009 (C100018, 3.30, still fits: a return left out
        # does not count against the later ones)
        "return_exceeds_purchase": 2,
    }
    assert validate_directory(out).ok
    txns = load_table(out, "transactions")
    rows = {r["txn_id"]: r for r in txns.iter_rows(named=True)}
    assert sorted(rows) == [
        "100001",
        "100002",
        "100008",
        "100014",
        "100015",
        "C100003",
        "C100004",
        "C100009",
        "C100018",
    ]
    # returns go to the latest earlier purchase holding all their items
    links = {k: r["original_txn_id"] for k, r in rows.items() if r["original_txn_id"]}
    assert links == {
        "C100003": "100002",
        "C100004": "100001",
        "C100009": "100008",
        "C100018": "100008",
    }
    # one invoice is one basket: three lines (the duplicate dropped), its earliest minute
    assert rows["100001"]["amount"] == 45.80
    assert rows["100001"]["ts"] == utc(2011, 1, 10, 9, 0)
    assert rows["100001"]["category"] == "kitchen"  # the cake stand is the largest line
    assert rows["C100004"]["amount"] == -5.10
    assert rows["C100009"]["category"] == "unknown"  # a discount
    # London time: summer time is UTC+1; the skipped hour moves to 01:00 UTC; the repeated
    # hour reads as summer time
    assert rows["100002"]["ts"] == utc(2011, 6, 1, 11, 0)
    assert rows["100008"]["ts"] == utc(2011, 3, 27, 1, 0)
    assert rows["100014"]["ts"] == utc(2011, 10, 30, 0, 30)
    customers = load_table(out, "customers").sort("customer_id")
    assert customers.select("customer_id", "signup_ts", "region").rows() == [
        ("12345", utc(2011, 1, 10, 9, 0), "United Kingdom"),
        ("55555", utc(2011, 11, 2, 11, 0), None),
        ("67890", utc(2011, 3, 27, 1, 0), "France"),
    ]
    merchants = load_table(out, "merchants")
    assert merchants.rows() == [("online_retail", "kitchen", settings.default_margin_rate)]
    assert any("default_margin_rate" in note for note in summary.notes)


def test_online_retail_in_latin_1_is_read_with_a_note(tmp_path: Path, settings: Settings) -> None:
    # given the file saved as latin-1, with a pound sign in a description
    text = (DATA / "online_retail_sample.csv").read_text().replace("MYSTERY ITEM", "GIFT £5")
    path = write(tmp_path / "retail.csv", text, "latin-1")

    # when it is imported
    summary = run("online_retail", path, tmp_path / "out", settings)

    # then it is read, and the note says how
    assert summary.rows["transactions"] == 9
    assert "the file is not valid utf-8; read it as latin-1" in summary.notes


def test_online_retail_names_the_row_of_a_bad_quantity(tmp_path: Path, settings: Settings) -> None:
    text = (
        (DATA / "online_retail_sample.csv").read_text().replace(",6,2011-01-10", ",six,2011-01-10")
    )
    path = write(tmp_path / "retail.csv", text)
    with pytest.raises(
        CashbackError, match="data row 1, column Quantity: expected an integer, got 'six'"
    ):
        run("online_retail", path, tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_online_retail_lists_missing_columns(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path / "retail.csv", "InvoiceNo,StockCode,Quantity\n1,2,3\n")
    with pytest.raises(CashbackError, match=r"missing column\(s\) Description, InvoiceDate"):
        run("online_retail", path, tmp_path / "out", settings)


def test_online_retail_without_cancellations_has_no_returns(
    tmp_path: Path, settings: Settings
) -> None:
    lines = (DATA / "online_retail_sample.csv").read_text().splitlines(keepends=True)
    path = write(tmp_path / "retail.csv", "".join(x for x in lines if not x.startswith("C")))

    summary = run("online_retail", path, tmp_path / "out", settings)

    assert "return_without_purchase" not in summary.left_out
    txns = load_table(tmp_path / "out", "transactions")
    assert txns.height == 5
    assert txns["original_txn_id"].null_count() == 5


@pytest.mark.parametrize(
    ("source", "sample"),
    [
        ("online_retail", "online_retail_sample.csv"),
        ("hillstrom", "hillstrom_sample.csv"),
        ("cookie_cats", "cookie_cats_sample.csv"),
    ],
)
def test_a_built_in_source_refuses_a_file_with_only_a_header(
    tmp_path: Path, settings: Settings, source: str, sample: str
) -> None:
    header = (DATA / sample).read_text().splitlines()[0]
    path = write(tmp_path / "only_header.csv", header + "\n")
    with pytest.raises(CashbackError, match=r"only_header\.csv: no data rows"):
        run(source, path, tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- built-in: experiments


def test_hillstrom_gives_customers_an_experiment_and_outcomes(
    tmp_path: Path, settings: Settings
) -> None:
    out = tmp_path / "out"
    summary = run("hillstrom", DATA / "hillstrom_sample.csv", out, settings)

    assert summary.rows == {"customers": 4, "experiments": 1, "assignments": 4, "outcomes": 16}
    assert validate_directory(out).ok
    variants = load_table(out, "experiments")["variants"][0].to_list()
    assert [(v["name"], v["weight"], v["policy"]) for v in variants] == [
        ("control", 0.25, "No E-Mail"),
        ("womens", 0.5, "Womens E-Mail"),
        ("mens", 0.25, "Mens E-Mail"),
    ]
    assert load_table(out, "assignments")["variant"].to_list() == [
        "womens",
        "control",
        "womens",
        "mens",
    ]
    customers = load_table(out, "customers")
    assert customers.row(0) == ("1", utc(2007, 5, 1), "Surburban", None, "phone")  # 10 months
    outcomes = load_table(out, "outcomes").filter(pl.col("customer_id") == "3")
    assert dict(outcomes.select("metric", "value").rows()) == {
        "visit": 1.0,
        "conversion": 1.0,
        "spend": 45.5,
        "history": 180.65,
    }


def test_hillstrom_names_an_unknown_segment(tmp_path: Path, settings: Settings) -> None:
    text = (DATA / "hillstrom_sample.csv").read_text().replace("Mens E-Mail", "SMS")
    path = write(tmp_path / "h.csv", text)
    with pytest.raises(
        CashbackError, match="data row 4, column segment: expected one of No E-Mail"
    ):
        run("hillstrom", path, tmp_path / "out", settings)


def test_cookie_cats_gives_an_experiment_assignments_and_outcomes(
    tmp_path: Path, settings: Settings
) -> None:
    out = tmp_path / "out"
    summary = run("cookie_cats", DATA / "cookie_cats_sample.csv", out, settings)

    assert summary.rows == {"experiments": 1, "assignments": 5, "outcomes": 15}
    assert validate_directory(out).ok
    variants = load_table(out, "experiments")["variants"][0].to_list()
    assert [(v["name"], v["weight"]) for v in variants] == [("gate_30", 0.4), ("gate_40", 0.6)]
    outcomes = load_table(out, "outcomes").filter(pl.col("customer_id") == "488")
    assert outcomes.select("metric", "value").rows() == [
        ("sum_gamerounds", 179.0),
        ("retention_1", 1.0),
        ("retention_7", 1.0),
    ]


def test_cookie_cats_names_a_bad_boolean(tmp_path: Path, settings: Settings) -> None:
    text = (DATA / "cookie_cats_sample.csv").read_text().replace("TRUE,TRUE", "TRUE,maybe")
    path = write(tmp_path / "c.csv", text)
    with pytest.raises(
        CashbackError, match="data row 5, column retention_7: expected TRUE or FALSE"
    ):
        run("cookie_cats", path, tmp_path / "out", settings)


# ---------------------------------------------------------------- shared rules


def test_observed_weights_sum_to_one_exactly() -> None:
    weights = observed_weights([21306, 21387, 21307])
    assert weights == [0.3329, 0.3342, 0.3329]
    assert sum(round(w * 10_000) for w in weights) == 10_000
    assert observed_weights([1, 1, 1]) == [0.3334, 0.3333, 0.3333]


def test_local_times_at_daylight_saving_changes_keep_their_order() -> None:
    local = pl.Series(
        [
            datetime(2011, 3, 27, 0, 59),  # noqa: DTZ001 (wall-clock times)
            datetime(2011, 3, 27, 1, 30),  # noqa: DTZ001 skipped: moved to the end of the gap
            datetime(2011, 3, 27, 2, 0),  # noqa: DTZ001
            datetime(2011, 10, 30, 1, 30),  # noqa: DTZ001 repeated: read as summer time
            datetime(2011, 10, 30, 2, 0),  # noqa: DTZ001
        ]
    )
    converted = pl.select(local_to_utc(pl.lit(local), "Europe/London")).to_series()
    assert converted.to_list() == [
        utc(2011, 3, 27, 0, 59),
        utc(2011, 3, 27, 1, 0),
        utc(2011, 3, 27, 1, 0),
        utc(2011, 10, 30, 0, 30),
        utc(2011, 10, 30, 2, 0),
    ]


# ---------------------------------------------------------------- the command line


def test_the_cli_prints_what_it_imported(tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "out"
    args = ["data", "import", "mapped", str(PURCHASES), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--mapping", str(PURCHASES_MAPPING)])
    assert result.exit_code == 0, result.output
    assert "transactions" in result.output
    assert "note: customers.signup_ts is each customer's first transaction" in result.output
    assert validate_directory(out).ok


def test_the_cli_raises_the_user_error_for_main_to_print(
    tmp_path: Path, settings: Settings
) -> None:
    bad = write(tmp_path / "bad.csv", "order_id,client\no-1,c-1\n")
    args = ["data", "import", "mapped", str(bad), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--mapping", str(PURCHASES_MAPPING)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CashbackError)
    assert "missing column(s) date, total" in str(result.exception)


def test_the_command_exits_1_with_one_line_for_a_malformed_file(tmp_path: Path) -> None:
    # given a purchase log whose date column does not parse
    bad = write(tmp_path / "bad.csv", "order_id,client,date,total\no-1,c-1,2024-13-45,1\n")
    out = tmp_path / "out"
    command = Path(sys.executable).with_name("cashback")
    env = {**os.environ, "CASHBACK_DATA_DIR": str(tmp_path / "data")}

    # when the command runs
    result = subprocess.run(
        [
            str(command),
            "data",
            "import",
            "mapped",
            str(bad),
            "--out",
            str(out),
            "--mapping",
            str(PURCHASES_MAPPING),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )

    # then it exits 1 with one clear line on stderr, and writes nothing
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {bad}: data row 1, column date")
    assert "%d/%m/%Y %H:%M" in lines[0]
    assert not out.exists()
