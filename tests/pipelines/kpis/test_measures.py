"""The KPI table against an independent, plain-Python computation on a small program."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cashback.settings import FeatureSettings
from pipelines.kpis.compute import KpiResult, compute
from pipelines.kpis.incremental import Bootstrap
from pipelines.kpis.inputs import KpiInputs
from tests.pipelines.kpis.small_program import OFFERS, SmallProgram, small_program

Row = dict[str, Any]


def _month(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def _expected(program: SmallProgram, by_channel: bool) -> dict[tuple[datetime, str], Row]:
    """Every KPI per (month, group), by loops over the rows."""
    txns = program.rows["transactions"]
    returned: dict[str, float] = defaultdict(float)
    for t in txns:
        if t["amount"] < 0:
            returned[t["original_txn_id"]] += -t["amount"]
    orders = {t["txn_id"]: t for t in txns if t["amount"] > 0}
    group = (lambda t: t["channel"]) if by_channel else (lambda t: "all")
    per_customer: dict[tuple[datetime, str], dict[str, list[Row]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for t in orders.values():
        per_customer[_month(t["ts"]), group(t)][t["customer_id"]].append(t)
    claims_of: dict[str, list[Row]] = defaultdict(list)
    for k in program.rows["claims"]:
        claims_of[k["txn_id"]].append(k)
    fraud = {lab["claim_id"] for lab in program.rows["claim_labels"] if lab["label"] == "fraud"}
    offer_of = {e["exposure_id"]: e["offer_id"] for e in program.rows["exposures"]}
    expected: dict[tuple[datetime, str], Row] = {}
    for (period, name), customers in per_customer.items():
        placed = [t for ts in customers.values() for t in ts]
        claimed_by = {
            c: {t["channel"] for t in ts if claims_of[t["txn_id"]]} for c, ts in customers.items()
        }
        users = [c for c, channels in claimed_by.items() if channels]
        before = per_customer.get((_month(period - timedelta(days=1)), name), {})
        back = (
            [c for c in before if c in customers]
            if by_channel
            else [
                c
                for c in before
                if any(c in cs for (p, _), cs in per_customer.items() if p == period)
            ]
        )
        paid = clawed = lost = 0.0
        for t in placed:
            kept = 1 - min(returned[t["txn_id"]], t["amount"]) / t["amount"]
            for k in claims_of[t["txn_id"]]:
                paid += k["cashback_amount"] * kept
                clawed += k["cashback_amount"] * (1 - kept)
                lost += k["cashback_amount"] * kept if k["claim_id"] in fraud else 0.0
        expected[period, name] = {
            "active_customers": len(customers),
            "orders": len(placed),
            "revenue": sum(t["amount"] for t in placed),
            "average_order_value": sum(t["amount"] for t in placed) / len(placed),
            "purchase_frequency": len(placed) / len(customers),
            "repurchase_rate": sum(len(ts) >= 2 for ts in customers.values()) / len(customers),
            "retention_rate": len(back) / len(before) if before else None,
            "participation_rate": len(users) / len(customers),
            "omnichannel_engagement": (
                None if by_channel else sum(len(claimed_by[c]) > 1 for c in users) / len(users)
            ),
            "cashback_paid": paid,
            "cashback_clawed_back": clawed,
            "fraud_loss": lost,
            "deferred_outstanding": 0.0,
        }
    for k in program.rows["claims"]:
        offer = offer_of.get(k["exposure_id"]) if k["exposure_id"] else None
        if offer is None or OFFERS[offer][1] != "deferred":
            continue
        t = orders[k["txn_id"]]
        due = t["ts"] + timedelta(days=OFFERS[offer][2])
        end = _next_month(_month(k["ts"]))
        while end < due:
            key = (_month(end - timedelta(days=1)), group(t))
            if key in expected:
                expected[key]["deferred_outstanding"] += k["cashback_amount"]
            end = _next_month(end)
    return expected


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SmallProgram]:
    """A small program written to a directory."""
    directory = tmp_path_factory.mktemp("program")
    return directory, small_program(directory)


def _compute(directory: Path, by: str | None) -> KpiResult:
    inputs = KpiInputs.from_directory(directory)
    return compute(inputs, FeatureSettings(), period="month", by=by, bootstrap=Bootstrap(20))  # type: ignore[arg-type]


@pytest.mark.parametrize("by", [None, "channel"])
def test_every_kpi_equals_an_independent_computation(
    program: tuple[Path, SmallProgram], by: str | None
) -> None:
    # given a small program and its KPIs computed by loops over its rows
    directory, rows = program
    expected = _expected(rows, by_channel=by == "channel")

    # when the KPIs are computed per month
    result = _compute(directory, by)

    # then every period and group has every KPI of the loops
    found = {(r["period"], r["group"]): r for r in result.table.iter_rows(named=True)}
    assert set(found) == set(expected)
    for key, wanted in expected.items():
        for name, value in wanted.items():
            got = found[key][name]
            if value is None:
                assert got is None, (key, name)
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name, got, value)
    assert any(r["deferred_outstanding"] > 0 for r in expected.values())
    assert any(r["retention_rate"] for r in expected.values())


def test_the_cashback_breakdown_adds_up_to_the_kpis(program: tuple[Path, SmallProgram]) -> None:
    # given the KPIs of the small program
    directory, rows = program
    result = _compute(directory, None)

    # then the money split by payout method and offer kind sums to each month's totals
    per_month = result.cashback.group_by("period").agg(claims_paid=pl.col("paid").sum())
    totals = dict(zip(result.table["period"], result.table["cashback_paid"], strict=True))
    for period, paid in per_month.iter_rows():
        assert paid == pytest.approx(totals[period], rel=1e-9)
    # and claims outside any exposure are kind "none", the others the offers' kinds
    kinds = set(result.cashback["offer_kind"])
    assert kinds == {"none", "flat"}
    assert set(result.cashback["payout"].drop_nulls()) == {"immediate", "deferred"}
    assert result.cashback["claims"].sum() == len(rows.rows["claims"])


def test_without_randomized_exposures_there_is_no_return_on_cashback(
    program: tuple[Path, SmallProgram],
) -> None:
    # given a program whose exposures were all logged with propensity 1 (no exploration)
    directory, _ = program

    # when its KPIs are computed
    result = _compute(directory, None)

    # then no return on cashback is claimed, and the report says why
    assert result.return_on_cashback.is_empty()
    assert any("no randomized exposures" in note for note in result.notes)


def test_grouping_by_segment_without_scores_says_why_and_reports_everyone(
    program: tuple[Path, SmallProgram],
) -> None:
    # given a program whose customers were never scored (no segments)
    directory, _ = program

    # when KPIs are asked by segment
    result = _compute(directory, "segment")

    # then they are reported for all customers together, with the reason in the notes
    assert set(result.table["group"]) == {"all"}
    assert result.group_key is None
    assert any("cashback customers score" in note for note in result.notes)
