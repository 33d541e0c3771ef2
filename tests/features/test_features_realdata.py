"""Customer features of the real Online Retail data, checked against the raw CSV.

The independent route reads the gzipped CSV with pandas, every field as text, and applies
the importer's documented rules to purchase invoices: lines without a CustomerID, with an
InvoiceNo starting with 'A' or with UnitPrice <= 0 are dropped; exact repeats of a line (all
eight columns) are dropped, the first copy kept; purchase invoices (InvoiceNo not starting
with 'C') keep their lines with Quantity > 0; an invoice's amount is the sum of Quantity *
UnitPrice, in exact decimals rounded to cents, and an invoice under half a cent is dropped;
its time is its earliest line, InvoiceDate being UK wall-clock time (Europe/London)
converted to UTC. It shares no code with the importer or the feature platform.

Purchases and spend over a window [close - w days, close) and days since the last purchase
before the close are then compared with `customer_features` for every customer at one close,
and with `features_at` for a few (customer, ts) rows at other times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from cashback.contract import spec
from cashback.settings import FeatureSettings, Settings
from cashback.tables import read_table
from features.customer_frame import FeatureSources, customer_features, features_at
from pipelines.data_import import run
from tests.conftest import shared_file

pytestmark = [pytest.mark.realdata, pytest.mark.xdist_group("online_retail_features")]

CONFIG = FeatureSettings()
CLOSE = datetime(2011, 9, 1, tzinfo=UTC)
WINDOWS = (30, 90, 365)
TIME_ZONE = "Europe/London"


@pytest.fixture(scope="module")
def raw_path() -> Path:
    """The real file (the module is skipped without it)."""
    return shared_file("online_retail/online_retail.csv.gz")


@pytest.fixture(scope="module")
def imported(raw_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Online Retail file imported into a fresh data directory."""
    root = tmp_path_factory.mktemp("online-retail")
    settings = Settings(ip_pepper="test-pepper-not-a-secret", data_dir=root)
    run("online_retail", raw_path, root / "data", settings)
    return root / "data"


def _cents(milli: Decimal) -> int:
    """Thousandths to whole cents, halves away from zero."""
    return int((milli / 10).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.fixture(scope="module")
def invoices(raw_path: Path) -> pd.DataFrame:
    """Purchase invoices computed from the raw CSV: customer_id, ts (UTC), cents."""
    lines = pd.read_csv(raw_path, dtype=str, keep_default_na=False)
    lines = lines[(lines["CustomerID"] != "") & ~lines["InvoiceNo"].str.startswith("A")]
    lines = lines[lines["UnitPrice"].map(Decimal) > 0]
    lines = lines.drop_duplicates(keep="first")
    lines = lines[~lines["InvoiceNo"].str.startswith("C")]
    lines = lines[lines["Quantity"].astype(int) > 0].copy()
    lines["milli"] = [
        int(Decimal(q) * Decimal(p) * 1000)
        for q, p in zip(lines["Quantity"], lines["UnitPrice"], strict=True)
    ]
    local = pd.to_datetime(lines["InvoiceDate"], format="%Y-%m-%d %H:%M:%S")
    # every invoice is between 06:00 and 21:00 UK time, so no time is ambiguous or skipped
    lines["ts"] = local.dt.tz_localize(TIME_ZONE, ambiguous="NaT", nonexistent="NaT")
    assert lines["ts"].notna().all()
    lines["customer_id"] = lines["CustomerID"].str.removesuffix(".0")
    per_invoice = lines.groupby("InvoiceNo").agg(
        customer_id=("customer_id", "first"), ts=("ts", "min"), milli=("milli", "sum")
    )
    per_invoice["cents"] = [_cents(Decimal(m)) for m in per_invoice["milli"]]
    per_invoice["ts"] = per_invoice["ts"].dt.tz_convert("UTC")
    return per_invoice[per_invoice["cents"] > 0].reset_index()


def _expected(invoices: pd.DataFrame, customer: str, close: datetime) -> dict[str, float | None]:
    """Purchases and spend per window, and days since the last purchase, from the raw CSV."""
    mine = invoices[(invoices["customer_id"] == customer) & (invoices["ts"] < close)]
    out: dict[str, float | None] = {}
    for w in WINDOWS:
        inside = mine[mine["ts"] >= close - timedelta(days=w)]
        out[f"purchases_{w}d"] = len(inside)
        out[f"spend_{w}d"] = int(inside["cents"].sum()) / 100
    last = mine["ts"].max()
    out["days_since_last_purchase"] = None if mine.empty else (close - last) / timedelta(days=1)
    return out


def _sources(directory: Path) -> FeatureSources:
    """The imported tables; the file has no cashback program, so no claims, exposures, offers."""
    return FeatureSources(
        transactions=read_table(directory, "transactions"),
        customers=read_table(directory, "customers"),
        claims=spec("claims").empty().lazy(),
        exposures=spec("exposures").empty().lazy(),
        offers=spec("offers").empty(),
    )


def _at_close(directory: Path, sources: FeatureSources, close: datetime) -> pl.DataFrame:
    rows = read_table(directory, "customers").select(
        "customer_id", pl.lit(close).cast(pl.Datetime("us", "UTC")).alias("close_ts")
    )
    return customer_features(sources, rows, CONFIG).collect()


def test_the_import_builds_every_customer_feature(imported: Path) -> None:
    # given the imported Online Retail data directory, read as any data directory
    sources = FeatureSources.from_directory(imported)
    # when every customer's features are computed at a close
    frame = _at_close(imported, sources, CLOSE)
    # then there is one row per customer, and every feature is a finite value or a null
    customers = read_table(imported, "customers").collect()
    assert frame.height == customers.height > 4_000
    assert frame["customer_id"].to_list() == customers["customer_id"].to_list()
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    assert frame.select(pl.col(floats).is_infinite().any() | pl.col(floats).is_nan().any()).row(
        0
    ) == (False,) * len(floats)
    assert frame["lifecycle"].null_count() == 0
    assert frame["purchases_365d"].sum() > 10_000


def test_windows_and_recency_equal_the_raw_csv_for_every_customer(
    imported: Path, invoices: pd.DataFrame
) -> None:
    # given every customer's features at a close inside the year
    got = _at_close(imported, _sources(imported), CLOSE)
    # then the customers are those with a purchase invoice in the raw file
    assert set(got["customer_id"]) == set(invoices["customer_id"])
    # and a handful of real customers have the raw file's counts, spend and recency
    by_customer = {row["customer_id"]: row for row in got.iter_rows(named=True)}
    picked = _pick_customers(invoices, CLOSE)
    for customer in picked:
        expected = _expected(invoices, customer, CLOSE)
        actual = {k: by_customer[customer][k] for k in expected}
        assert actual == pytest.approx(expected, abs=1e-6), customer
    # and the whole columns agree too
    expected = _expected_columns(invoices, CLOSE)
    joined = got.join(expected, on="customer_id", how="left", suffix="_raw")
    for column in expected.columns[1:]:
        assert joined[column].cast(pl.Float64).fill_null(-1.0).to_list() == pytest.approx(
            joined[f"{column}_raw"].cast(pl.Float64).fill_null(-1.0).to_list(), abs=1e-6
        ), column


def _expected_columns(invoices: pd.DataFrame, close: datetime) -> pl.DataFrame:
    """`_expected` for every customer at once (customers without a purchase get zeros)."""
    before = invoices[invoices["ts"] < close]
    out = pd.DataFrame(index=pd.Index(sorted(set(invoices["customer_id"])), name="customer_id"))
    for w in WINDOWS:
        inside = before[before["ts"] >= close - timedelta(days=w)].groupby("customer_id")
        out[f"purchases_{w}d"] = inside.size().reindex(out.index, fill_value=0)
        out[f"spend_{w}d"] = inside["cents"].sum().reindex(out.index, fill_value=0) / 100
    last = before.groupby("customer_id")["ts"].max().reindex(out.index)
    out["days_since_last_purchase"] = (close - last) / timedelta(days=1)
    return pl.from_pandas(out.reset_index())


def _pick_customers(invoices: pd.DataFrame, close: datetime) -> list[str]:
    """A handful of real customers: the busiest of the 90 days before the close, one with
    a single invoice in them, one silent for longer than 90 days, one who started after."""
    before = invoices[invoices["ts"] < close]
    recent = before[before["ts"] >= close - timedelta(days=90)]
    counts = recent.groupby("customer_id").size().sort_values(ascending=False, kind="stable")
    busiest = list(counts.index[:3])
    single = min(counts[counts == 1].index)
    silent = min(set(before["customer_id"]) - set(recent["customer_id"]))
    later = min(set(invoices["customer_id"]) - set(before["customer_id"]))
    return [*busiest, single, silent, "17850", later]


def test_features_at_random_times_equal_the_raw_csv_at_their_close(
    imported: Path, invoices: pd.DataFrame
) -> None:
    # given a few real customers at times of day on other days
    customers = _pick_customers(invoices, CLOSE)
    times = [
        datetime(2011, 3, 14, 9, 41, tzinfo=UTC),
        datetime(2011, 6, 30, 23, 59, 59, tzinfo=UTC),
        datetime(2011, 9, 1, 0, 0, tzinfo=UTC),
        datetime(2011, 10, 30, 12, 5, tzinfo=UTC),  # the day UK clocks went back
        datetime(2011, 11, 20, 16, 30, tzinfo=UTC),
        datetime(2011, 12, 9, 23, 0, tzinfo=UTC),
        datetime(2011, 12, 31, 8, 0, tzinfo=UTC),
    ]
    rows = pl.LazyFrame(
        {
            "customer_id": [c for c in customers for _ in times],
            "ts": [t for _ in customers for t in times],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    # when their features are computed as serving would have seen them at those times
    got = features_at(_sources(imported), rows, CONFIG).collect()
    # then each equals the raw file's figures as of 00:00 UTC of that day
    assert got.height == len(customers) * len(times)
    for row in got.iter_rows(named=True):
        close = row["ts"].replace(hour=0, minute=0, second=0, microsecond=0)
        assert row["close_ts"] == close
        expected = _expected(invoices, row["customer_id"], close)
        actual = {k: row[k] for k in expected}
        assert actual == pytest.approx(expected, abs=1e-6), (row["customer_id"], close)
