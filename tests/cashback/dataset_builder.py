"""A tiny valid dataset of every contract table, and helpers to break one row of it.

The rows are consistent across tables: every foreign key resolves, the return points at an
earlier purchase of the same customer, each claim belongs to its transaction's customer,
and exposure windows of a customer never overlap (e1 and e2 are back to back).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import polars as pl

from cashback.contract import TABLES, spec
from cashback.validation import ValidationReport, check_dataset

Dataset = dict[str, pl.DataFrame]


def ts(day: int, month: int = 2, hour: int = 12) -> datetime:
    """A UTC timestamp in 2025."""
    return datetime(2025, month, day, hour, tzinfo=UTC)


def _frame(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=spec(name).schema)


def _tiers(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"threshold": t, "rate": r} for t, r in pairs]


def valid_dataset() -> Dataset:
    """Every contract table with a few consistent rows; `check_dataset` finds nothing."""
    rows: dict[str, list[dict[str, Any]]] = {
        "customers": [
            {
                "customer_id": "c1",
                "signup_ts": ts(1, month=1),
                "region": "north",
                "age_band": "25-34",
                "acquisition_channel": "organic",
            },
            {
                "customer_id": "c2",
                "signup_ts": ts(2, month=1),
                "region": None,
                "age_band": None,
                "acquisition_channel": "paid_search",
            },
        ],
        "merchants": [
            {"merchant_id": "m1", "category": "grocery", "margin_rate": 0.3},
            {"merchant_id": "m2", "category": "fashion", "margin_rate": 0.55},
        ],
        "transactions": [
            _txn("t1", "c1", "m1", ts(1), 100.0, "online"),
            _txn("t2", "c1", "m1", ts(5), -40.0, "online", original="t1"),
            _txn("t3", "c2", "m2", ts(3), 55.5, "store"),
            _txn("t4", "c2", "m2", ts(9), 19.99, "app"),
        ],
        "offers": [
            _offer("o-flat", "flat", rate=0.02),
            _offer("o-tiered", "tiered", tiers=_tiers((0.0, 0.01), (100.0, 0.03))),
            _offer("o-category", "category", rate=0.05, category="fashion"),
            _offer("o-seasonal", "seasonal", rate=0.04, start=ts(1), end=ts(28)),
            _offer(
                "o-cumulative",
                "cumulative",
                tiers=_tiers((0.0, 0.0), (250.0, 0.02)),
                payout="deferred",
                validation_days=30,
            ),
        ],
        "exposures": [
            _exposure("e1", "c1", ts(25, month=1), ts(1), "o-flat", 0.02, "x1", "treatment"),
            # back to back with e1: e1 is valid until the instant e2 starts
            _exposure("e2", "c1", ts(1), ts(8), "o-flat", 0.02, "x1", "treatment"),
            _exposure("e3", "c2", ts(2), ts(9), "o-category", 0.05, None, None, 0.8),
        ],
        "claims": [
            _claim("k1", "c1", "t1", "e2", ts(2), 100.0, 2.0, "wallet"),
            _claim("k2", "c2", "t3", "e3", ts(4), 55.5, 2.78, "bank_transfer"),
            _claim("k3", "c2", "t4", None, ts(10), 19.99, 0.2, "points"),
        ],
        "claim_labels": [
            _label("k1", "legit", None, ts(20), "review"),
            _label("k1", "legit", None, ts(21), "audit"),
            _label("k2", "fraud", "receipt_reuse", ts(1, month=4), "chargeback"),
        ],
        "experiments": [
            {
                "experiment_id": "x1",
                "key": "rate-test",
                "layer": "rates",
                "variants": [
                    {"name": "control", "weight": 0.5, "policy": "default"},
                    {"name": "treatment", "weight": 0.5, "policy": "flat-2pct"},
                ],
                "start_ts": ts(1, month=1),
                "end_ts": ts(1, month=3),
                "status": "completed",
            },
            {
                "experiment_id": "x2",
                "key": "copy-test",
                "layer": "messages",
                "variants": [
                    {"name": "a", "weight": 0.25, "policy": "a"},
                    {"name": "b", "weight": 0.25, "policy": "b"},
                    {"name": "c", "weight": 0.5, "policy": "c"},
                ],
                "start_ts": ts(1),
                "end_ts": None,
                "status": "running",
            },
        ],
        "assignments": [
            {"experiment_id": "x1", "customer_id": "c1", "variant": "treatment", "ts": ts(25, 1)},
            {"experiment_id": "x1", "customer_id": "c2", "variant": "control", "ts": ts(26, 1)},
            {"experiment_id": "x2", "customer_id": "c1", "variant": "c", "ts": ts(2)},
        ],
        "outcomes": [
            {"experiment_id": "x1", "customer_id": "c1", "metric": "retention_7", "value": 1.0},
            {"experiment_id": "x1", "customer_id": "c1", "metric": "revenue", "value": 60.0},
            {"experiment_id": "x1", "customer_id": "c2", "metric": "retention_7", "value": 0.0},
        ],
    }
    assert set(rows) == set(TABLES), "the builder must cover every contract table"
    return {name: _frame(name, table_rows) for name, table_rows in rows.items()}


def _txn(
    txn_id: str,
    customer: str,
    merchant: str,
    at: datetime,
    amount: float,
    channel: str,
    original: str | None = None,
) -> dict[str, Any]:
    return {
        "txn_id": txn_id,
        "customer_id": customer,
        "merchant_id": merchant,
        "ts": at,
        "amount": amount,
        "category": "grocery" if merchant == "m1" else "fashion",
        "channel": channel,
        "original_txn_id": original,
    }


def _offer(
    offer_id: str,
    kind: str,
    *,
    rate: float | None = None,
    tiers: list[dict[str, float]] | None = None,
    category: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    payout: str = "immediate",
    validation_days: int = 0,
) -> dict[str, Any]:
    return {
        "offer_id": offer_id,
        "kind": kind,
        "rate": rate,
        "tiers": tiers,
        "category": category,
        "start_ts": start,
        "end_ts": end,
        "payout": payout,
        "validation_days": validation_days,
    }


def _exposure(
    exposure_id: str,
    customer: str,
    start: datetime,
    until: datetime,
    offer: str,
    rate: float,
    experiment: str | None,
    variant: str | None,
    propensity: float = 1.0,
) -> dict[str, Any]:
    return {
        "exposure_id": exposure_id,
        "customer_id": customer,
        "ts": start,
        "valid_until": until,
        "offer_id": offer,
        "rate": rate,
        "policy_version": "v1",
        "experiment_id": experiment,
        "variant": variant,
        "propensity": propensity,
    }


def _claim(
    claim_id: str,
    customer: str,
    txn: str,
    exposure: str | None,
    at: datetime,
    amount: float,
    cashback: float,
    method: str,
) -> dict[str, Any]:
    return {
        "claim_id": claim_id,
        "customer_id": customer,
        "txn_id": txn,
        "exposure_id": exposure,
        "ts": at,
        "amount": amount,
        "cashback_amount": cashback,
        "payout_method": method,
        "device_id": f"d-{customer}",
        "ip_hash": "0" * 32,
        "receipt_hash": None,
    }


def _label(claim: str, label: str, abuse: str | None, at: datetime, source: str) -> dict[str, Any]:
    return {
        "claim_id": claim,
        "label": label,
        "abuse_type": abuse,
        "decided_ts": at,
        "source": source,
    }


# ---------------------------------------------------------------- breaking one row


def with_values(
    dataset: Mapping[str, pl.DataFrame], table: str, row: int, **values: Any
) -> Dataset:
    """A copy of `dataset` where row `row` (1-based) of `table` has the given values."""
    rows = dataset[table].to_dicts()
    rows[row - 1] = {**rows[row - 1], **values}
    return {**dataset, table: _frame(table, rows)}


def with_row(dataset: Mapping[str, pl.DataFrame], table: str, **values: Any) -> Dataset:
    """A copy of `dataset` with one more row in `table`: its last row with the given values."""
    rows = dataset[table].to_dicts()
    rows.append({**rows[-1], **values})
    return {**dataset, table: _frame(table, rows)}


def with_frame(dataset: Mapping[str, pl.DataFrame], table: str, frame: pl.DataFrame) -> Dataset:
    """A copy of `dataset` where `table` is replaced by `frame` (any schema)."""
    return {**dataset, table: frame}


def check(dataset: Mapping[str, pl.DataFrame]) -> ValidationReport:
    """Validate every table of `dataset`, alone and against each other."""
    return check_dataset({name: frame.lazy() for name, frame in dataset.items()}, TABLES)
