"""A small random cashback program (every contract table KPIs read), written to a directory.

Customers buy in three channels over about three months; some orders are partly or fully
returned; most orders are claimed, on the customer's weekly exposure (a flat immediate
offer or a deferred one with a 30-day validation) or outside any; some claims are labelled
fraud. Rows are plain dicts too, so tests can compute the KPIs independently of polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cashback.contract import spec
from cashback.tables import write_table

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
DAYS = 84
CHANNELS = ("online", "store", "app")
METHODS = ("bank_transfer", "wallet", "points")
OFFERS = {"o-flat": ("flat", "immediate", 0), "o-later": ("flat", "deferred", 30)}


@dataclass(frozen=True)
class SmallProgram:
    """The rows of each table (as written)."""

    rows: dict[str, list[dict[str, Any]]]

    def frame(self, name: str) -> pl.DataFrame:
        """A table as a frame with the contract's schema."""
        return pl.DataFrame(self.rows[name], schema=spec(name).schema)


def _exposures(customers: int) -> list[dict[str, Any]]:
    rows = []
    for c in range(customers):
        for week in range(DAYS // 7 + 1):
            start = START + timedelta(days=7 * week)
            offer = "o-flat" if (c + week) % 2 == 0 else "o-later"
            rows.append(
                {
                    "exposure_id": f"e{c}-{week}",
                    "customer_id": f"c{c}",
                    "ts": start,
                    "valid_until": start + timedelta(days=7),
                    "offer_id": offer,
                    "rate": 0.02,
                    "policy_version": "v1",
                    "experiment_id": None,
                    "variant": None,
                    "propensity": 1.0,
                }
            )
    return rows


def _orders(rng: np.random.Generator, customers: int) -> tuple[list[dict[str, Any]], ...]:
    txns, claims, labels = [], [], []
    for c in range(customers):
        for n in range(int(rng.poisson(6))):
            at = START + timedelta(days=float(rng.uniform(0, DAYS)))
            amount = round(float(rng.uniform(5, 200)), 2)
            txn = f"t{c}-{n}"
            txns.append(
                {
                    "txn_id": txn,
                    "customer_id": f"c{c}",
                    "merchant_id": "m1",
                    "ts": at,
                    "amount": amount,
                    "category": "grocery",
                    "channel": CHANNELS[int(rng.integers(3))],
                    "original_txn_id": None,
                }
            )
            if rng.random() < 0.2:  # a return, partial or full, a few days later
                back = round(amount * float(rng.choice([0.5, 1.0])), 2)
                txns.append(
                    {
                        **txns[-1],
                        "txn_id": f"r{c}-{n}",
                        "amount": -back,
                        "ts": at + timedelta(days=3),
                        "original_txn_id": txn,
                    }
                )
            if rng.random() < 0.7:
                week = int((at - START).days // 7)
                exposure = f"e{c}-{week}" if rng.random() < 0.8 else None
                claim = f"k{c}-{n}"
                claims.append(
                    {
                        "claim_id": claim,
                        "customer_id": f"c{c}",
                        "txn_id": txn,
                        "exposure_id": exposure,
                        "ts": at + timedelta(hours=2),
                        "amount": amount,
                        "cashback_amount": round(amount * 0.02, 2),
                        "payout_method": METHODS[int(rng.integers(3))],
                        "device_id": f"d{c}",
                        "ip_hash": "0" * 32,
                        "receipt_hash": None,
                    }
                )
                if rng.random() < 0.1:
                    labels.append(
                        {
                            "claim_id": claim,
                            "label": "fraud",
                            "abuse_type": "other",
                            "decided_ts": at + timedelta(days=9),
                            "source": "review",
                        }
                    )
    return txns, claims, labels


def small_program(directory: Path, *, customers: int = 40, seed: int = 5) -> SmallProgram:
    """Write the program's tables into `directory` and return their rows."""
    rng = np.random.default_rng(seed)
    txns, claims, labels = _orders(rng, customers)
    rows: dict[str, list[dict[str, Any]]] = {
        "customers": [
            {
                "customer_id": f"c{c}",
                "signup_ts": START - timedelta(days=400),
                "region": None,
                "age_band": None,
                "acquisition_channel": "organic",
            }
            for c in range(customers)
        ],
        "merchants": [{"merchant_id": "m1", "category": "grocery", "margin_rate": 0.3}],
        "transactions": txns,
        "offers": [
            {
                "offer_id": o,
                "kind": k,
                "rate": 0.02,
                "tiers": None,
                "category": None,
                "start_ts": None,
                "end_ts": None,
                "payout": p,
                "validation_days": d,
            }
            for o, (k, p, d) in OFFERS.items()
        ],
        "exposures": _exposures(customers),
        "claims": claims,
        "claim_labels": labels,
    }
    program = SmallProgram(rows)
    for name in rows:
        write_table(directory, name, program.frame(name))
    return program
