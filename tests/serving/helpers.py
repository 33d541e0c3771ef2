"""Claims to send to the API in tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import polars as pl

# the served world runs from 2025-01-01 for 150 days: a time at its end
WHEN = "2025-05-30T15:00:00Z"
CUSTOMER = "C00000007"


def claim_body(**changes: Any) -> dict[str, Any]:
    """An ordinary claim of a known customer, with a fresh claim_id."""
    body: dict[str, Any] = {
        "claim_id": f"CL-{uuid.uuid4().hex[:12]}",
        "customer_id": CUSTOMER,
        "txn_id": f"T-{uuid.uuid4().hex[:8]}",
        "amount": 48.5,
        "cashback_amount": 0.97,
        "payout_method": "wallet",
        "device_id": "D-test-1",
        "ip": "198.51.100.23",
        "receipt_hash": f"r-{uuid.uuid4().hex[:10]}",
        "ts": WHEN,
    }
    return body | changes


def eventually(check: Callable[[], bool], seconds: float = 1.0) -> bool:
    """Whether `check()` becomes true within `seconds` (polled)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


OFFERS_BATCH = "/v1/offers/recommend:batch"


def world_customers(api: Any, n: int) -> list[str]:
    """Customers of the world the store knows (bought in its last year)."""
    frame = pl.read_parquet(api.settings.data_dir / "rates" / "customer_rates.parquet")
    return frame["customer_id"].sort().head(n).to_list()


def offers_batch(api: Any, customers: list[str], key: str, **context: Any) -> list[Any]:
    """Offers for these customers at `WHEN` (one batch request): the answers in order."""
    body = {"requests": [{"customer_id": c, "context": {"ts": WHEN, **context}} for c in customers]}
    response = api.client.post(OFFERS_BATCH, json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    return results
