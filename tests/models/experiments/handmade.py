"""A tiny hand-made experiment on the contract tables, and its metrics computed by hand.

Experiment `handmade` runs from 1 March to 31 March 2025; the data end just after the last
transaction (19 April, 12:00). Customers, variants and what makes each one interesting:

- c1 control: a purchase, its partial return and another purchase in the window; a
  pre-period purchase; a claim labelled fraud by a chargeback and legit by the audit
  (fraud wins); a purchase after the end (outside the window);
- c2 control: a pre-period purchase and claim; one purchase late in the window;
- c3 control: assigned 27 March: its 7-day retention has elapsed, its 30-day one has not;
- c4 treatment: assigned before the start (its window starts at the start); a claim
  labelled fraud only after the data's end (not a loss yet) and one labelled fraud in time;
  a merchant without a margin rate elsewhere;
- c5 treatment: a purchase after the end that counts for the 30-day retention only;
- c6 treatment: assigned 28 March; 30-day window not elapsed;
- c7 control: assigned after the end: not counted;
- c8 treatment: no event at all.

`reference_metrics` recomputes every metric with plain Python from the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from cashback.contract import spec

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 3, 31, tzinfo=UTC)
LAST_EVENT = datetime(2025, 4, 19, 12, tzinfo=UTC)
DATA_END = LAST_EVENT + timedelta(microseconds=1)
DEFAULT_MARGIN = 0.3
MARGINS = {"m1": 0.2, "m2": 0.5}  # m3 has no merchant row: the default margin applies
KEY = "handmade"


def at(month: int, day: int, hour: int = 12) -> datetime:
    """A UTC time in 2025."""
    return datetime(2025, month, day, hour, tzinfo=UTC)


ASSIGNED = {
    "c1": ("control", at(3, 1, 10)),
    "c2": ("control", at(3, 3, 8)),
    "c3": ("control", at(3, 27, 12)),
    "c4": ("treatment", at(2, 25, 9)),
    "c5": ("treatment", at(3, 4, 15)),
    "c6": ("treatment", at(3, 28, 0)),
    "c7": ("control", at(4, 5)),
    "c8": ("treatment", at(3, 10)),
}
# txn_id: (customer, ts, amount, merchant, original purchase)
TRANSACTIONS: dict[str, tuple[str, datetime, float, str, str | None]] = {
    "t1": ("c1", at(2, 10), 50.0, "m1", None),
    "t2": ("c1", at(3, 2), 100.0, "m1", None),
    "t3": ("c1", at(3, 5), -30.0, "m1", "t2"),
    "t4": ("c1", at(3, 20), 80.0, "m2", None),
    "t5": ("c1", at(4, 10), 60.0, "m3", None),
    "t6": ("c2", at(2, 20), 40.0, "m2", None),
    "t7": ("c2", at(3, 25), 120.0, "m3", None),
    "t8": ("c3", at(3, 29), 70.0, "m1", None),
    "t9": ("c3", at(1, 15), 30.0, "m1", None),
    "t10": ("c4", at(2, 26), 90.0, "m1", None),
    "t11": ("c4", at(3, 3), 200.0, "m2", None),
    "t12": ("c4", at(3, 15), 150.0, "m2", None),
    "t13": ("c4", at(3, 30), -50.0, "m2", "t12"),
    "t14": ("c5", at(3, 6), 60.0, "m3", None),
    "t15": ("c5", at(4, 1), 40.0, "m1", None),
    "t16": ("c6", at(3, 29), 300.0, "m1", None),
    "t17": ("c6", LAST_EVENT, 20.0, "m1", None),
}
# claim_id: (customer, txn, ts, cashback)
CLAIMS: dict[str, tuple[str, str, datetime, float]] = {
    "k1": ("c1", "t2", at(3, 2, 13), 2.0),
    "k2": ("c1", "t4", at(3, 20, 13), 1.6),
    "k3": ("c2", "t6", at(2, 20, 13), 0.8),
    "k4": ("c4", "t11", at(3, 3, 13), 6.0),
    "k5": ("c4", "t12", at(3, 15, 13), 4.5),
    "k6": ("c5", "t14", at(3, 6, 13), 1.2),
    "k7": ("c6", "t16", at(3, 29, 13), 9.0),
}
# (claim_id, label, decided, source)
LABELS = [
    ("k1", "fraud", at(4, 1), "chargeback"),
    ("k1", "legit", at(3, 20), "audit"),
    ("k2", "legit", at(3, 25), "audit"),
    ("k4", "fraud", at(5, 1), "chargeback"),
    ("k5", "fraud", at(3, 20), "review"),
]


def _frame(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=spec(name).schema, orient="row")


def tables() -> dict[str, pl.DataFrame]:
    """The contract tables of the hand-made experiment."""
    customers = [
        {
            "customer_id": c,
            "signup_ts": at(1, 1),
            "region": None,
            "age_band": None,
            "acquisition_channel": "organic",
        }
        for c in ASSIGNED
    ]
    merchants = [
        {"merchant_id": m, "category": "groceries", "margin_rate": r} for m, r in MARGINS.items()
    ]
    transactions = [
        {
            "txn_id": t,
            "customer_id": c,
            "merchant_id": m,
            "ts": ts,
            "amount": amount,
            "category": "groceries",
            "channel": "online",
            "original_txn_id": original,
        }
        for t, (c, ts, amount, m, original) in TRANSACTIONS.items()
    ]
    claims = [
        {
            "claim_id": k,
            "customer_id": c,
            "txn_id": t,
            "exposure_id": None,
            "ts": ts,
            "amount": TRANSACTIONS[t][2],
            "cashback_amount": cashback,
            "payout_method": "wallet",
            "device_id": None,
            "ip_hash": None,
            "receipt_hash": None,
        }
        for k, (c, t, ts, cashback) in CLAIMS.items()
    ]
    labels = [
        {"claim_id": k, "label": label, "abuse_type": None, "decided_ts": d, "source": s}
        for k, label, d, s in LABELS
    ]
    experiments = [
        {
            "experiment_id": KEY,
            "key": KEY,
            "layer": "rates",
            "variants": [
                {"name": "control", "weight": 0.5, "policy": "rate_card"},
                {"name": "treatment", "weight": 0.5, "policy": "rate:0.03"},
            ],
            "start_ts": START,
            "end_ts": END,
            "status": "completed",
        }
    ]
    assignments = [
        {"experiment_id": KEY, "customer_id": c, "variant": v, "ts": ts}
        for c, (v, ts) in ASSIGNED.items()
    ]
    rows = {
        "customers": customers,
        "merchants": merchants,
        "transactions": transactions,
        "claims": claims,
        "claim_labels": labels,
        "experiments": experiments,
        "assignments": assignments,
    }
    return {name: _frame(name, r) for name, r in rows.items()}


def counted(end: datetime = END) -> dict[str, tuple[str, datetime]]:
    """Customers assigned before `end`: variant and window start (clipped to the start)."""
    return {c: (v, max(ts, START)) for c, (v, ts) in ASSIGNED.items() if ts < end}


def _window(c: str, lo: datetime, hi: datetime, data_end: datetime) -> dict[str, float]:
    """Sums of one customer's events in [lo, hi), events before data_end only."""
    fraud = {k for k, label, d, _ in LABELS if label == "fraud" and d < data_end}
    txns = [
        (amount, MARGINS.get(m, DEFAULT_MARGIN))
        for cust, ts, amount, m, _ in TRANSACTIONS.values()
        if cust == c and lo <= ts < hi and ts < data_end
    ]
    claims = [
        (k, cashback)
        for k, (cust, _, ts, cashback) in CLAIMS.items()
        if cust == c and lo <= ts < hi and ts < data_end
    ]
    cashback = sum(cb for _, cb in claims)
    return {
        "participation_rate": float(bool(claims)),
        "purchases_per_customer": float(sum(1 for a, _ in txns if a > 0)),
        "spend_per_customer": sum(a for a, _ in txns),
        "gross_spend": sum(a for a, _ in txns if a > 0),
        "cashback_paid": cashback,
        "net_incremental_margin": sum(a * r for a, r in txns) - cashback,
        "fraud_loss": sum(cb for k, cb in claims if k in fraud),
    }


def _bought(c: str, lo: datetime, hi: datetime, data_end: datetime) -> float:
    return float(
        any(
            cust == c and amount > 0 and lo <= ts < hi and ts < data_end
            for cust, ts, amount, _, _ in TRANSACTIONS.values()
        )
    )


def reference_metrics(
    end: datetime = END, data_end: datetime = DATA_END
) -> dict[str, dict[str, float | None]]:
    """Every metric (and its `_pre` value) per counted customer, by hand.

    Args:
        end: the end of the analysis window.
        data_end: the end of the data (retention must have elapsed by then).
    """
    out: dict[str, dict[str, float | None]] = {}
    for c, (_, start) in counted(end).items():
        pre_start = start - (end - start)
        values: dict[str, float | None] = dict(_window(c, start, end, data_end))
        values |= {f"{k}_pre": v for k, v in _window(c, pre_start, start, data_end).items()}
        for name, n in (("retention_7d", 7), ("retention_30d", 30)):
            span = timedelta(days=n)
            elapsed = start + span <= data_end
            values[name] = _bought(c, start, start + span, data_end) if elapsed else None
            values[f"{name}_pre"] = _bought(c, start - span, start, data_end)
        out[c] = values
    return out
