"""Importing the whole UCI Online Retail file, checked against counts computed independently.

The independent route reads the raw CSV with the csv module and plain Python (dicts, sets,
Decimal), applying the rules as the importer's docstring states them, one line and one
return at a time; it shares no code with the importer.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from cashback.settings import Settings
from cashback.tables import load_table, validate_directory
from pipelines.data_import import run
from tests.conftest import shared_file

pytestmark = pytest.mark.realdata


@dataclass
class Invoice:
    customer: str
    ts: str  # local wall-clock text: same order as the UTC instants (DST policy keeps order)
    is_return: bool
    milli: int = 0
    codes: set[str] = field(default_factory=set)
    lines: int = 0

    @property
    def cents(self) -> int:
        sign = 1 if self.milli > 0 else -1
        return sign * ((abs(self.milli) + 5) // 10)


@dataclass
class Expected:
    raw: Counter[str]
    left_out: Counter[str]
    purchases: set[str]
    links: dict[str, str]
    customers: set[str]
    total_cents: int


def _reason(row: list[str], seen: set[tuple[str, ...]]) -> str | None:
    invoice, _code, _desc, qty, _date, price, customer, _country = row
    if customer == "":
        return "missing_customer_id"
    if invoice.startswith("A"):
        return "adjustment"
    if Decimal(price) <= 0:
        return "non_positive_price"
    if tuple(row) in seen:
        return "duplicate_line"
    if (int(qty) >= 0) if invoice.startswith("C") else (int(qty) <= 0):
        return "quantity_sign"
    return None


def _raw_counts(row: list[str]) -> Counter[str]:
    invoice, price, customer = row[0], row[5], row[6]
    return Counter(
        {
            "lines": 1,
            "no_customer_id": customer == "",
            "cancellation": invoice.startswith("C"),
            "adjustment": invoice.startswith("A"),
            "non_positive_price": Decimal(price) <= 0,
        }
    )


def _read(path: Path) -> tuple[Counter[str], Counter[str], dict[str, Invoice]]:
    raw: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    invoices: dict[str, Invoice] = {}
    seen: set[tuple[str, ...]] = set()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            raw.update(_raw_counts(row))
            reason = _reason(row, seen)
            seen.add(tuple(row))
            if reason is not None:
                left_out[reason] += 1
                continue
            number, code, _, qty, date, price, customer, _ = row
            inv = invoices.setdefault(number, Invoice(customer, date, number.startswith("C")))
            inv.ts = min(inv.ts, date)
            inv.milli += int(qty) * int(Decimal(price) * 1000)
            inv.lines += 1
            if code[:1].isdigit():
                inv.codes.add(code)
    return raw, left_out, invoices


def independent_counts(path: Path) -> Expected:
    raw, left_out, invoices = _read(path)
    purchases_of: dict[str, list[str]] = defaultdict(list)
    returns = []
    for number, inv in invoices.items():
        if inv.cents == 0:
            left_out["zero_amount"] += inv.lines
        elif inv.is_return:
            returns.append((inv.ts, number))
        else:
            purchases_of[inv.customer].append(number)
    remaining: dict[str, int] = {}
    links: dict[str, str] = {}
    for ts, number in sorted(returns):
        ret = invoices[number]
        holding = [
            (invoices[p].ts, p)
            for p in purchases_of[ret.customer]
            if invoices[p].ts <= ts and ret.codes <= invoices[p].codes
        ]
        if not holding:
            left_out["return_without_purchase"] += ret.lines
            continue
        purchase = max(holding)[1]
        left = remaining.get(purchase, invoices[purchase].cents)
        if -ret.cents > left:
            left_out["return_exceeds_purchase"] += ret.lines
            continue
        remaining[purchase] = left + ret.cents
        links[number] = purchase
    purchases = {p for numbers in purchases_of.values() for p in numbers}
    customers = {invoices[p].customer.removesuffix(".0") for p in purchases}
    total = sum(invoices[n].cents for n in [*purchases, *links])
    return Expected(raw, left_out, purchases, links, customers, total)


def test_all_online_retail_lines_import_to_independently_computed_counts(
    tmp_path: Path, settings: Settings
) -> None:
    # given the full file, and what the documented rules give by an independent route
    path = shared_file("online_retail/online_retail.csv.gz")
    expected = independent_counts(path)
    assert expected.raw == {
        "lines": 541_909,
        "no_customer_id": 135_080,
        "cancellation": 9_288,
        "adjustment": 3,
        "non_positive_price": 2_517,
    }

    # when it is imported
    out = tmp_path / "out"
    summary = run("online_retail", path, out, settings)

    # then the lines left out, the transactions and the return links are the same
    assert summary.left_out == {k: v for k, v in expected.left_out.items() if v}
    txns = load_table(out, "transactions")
    links = txns.filter(pl.col("original_txn_id").is_not_null())
    assert dict(links.select("txn_id", "original_txn_id").rows()) == expected.links
    purchases = txns.filter(pl.col("original_txn_id").is_null())
    assert set(purchases["txn_id"]) == expected.purchases
    assert summary.rows["transactions"] == len(expected.purchases) + len(expected.links)
    assert set(load_table(out, "customers")["customer_id"]) == expected.customers
    # and the amounts are the invoices' totals in cents
    assert round(txns["amount"].sum() * 100) == expected.total_cents
    # and the result satisfies the contract
    assert validate_directory(out).ok
