"""The baseline of the feature benchmark: windowed customer aggregates in plain pandas.

It computes a subset of the behaviour features of `features/behaviour.py` the way a data
scientist would with pandas: read the transactions table (the columns needed), keep the
purchases, merge the requested (customer, close) rows with their customer's purchases,
keep those strictly before the close, take the latest as the last purchase, keep those in
the longest window, flag each window with a boolean mask and sum the flags and the masked
amounts in one `groupby(...).sum()`. The features are those of the same definitions:

- `purchases_{w}d`, `spend_{w}d` (rounded to cents): purchases (amount > 0) with
  close - w days <= ts < close, for w in 7, 30, 90, 365;
- `days_since_last_purchase`: (close - the last purchase before the close) in days, null
  without one.

A row at time t has the close 00:00 UTC of t's day, as in `features.customer_frame`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

WINDOWS = (7, 30, 90, 365)
SUBSET = (
    *(f"purchases_{w}d" for w in WINDOWS),
    *(f"spend_{w}d" for w in WINDOWS),
    "days_since_last_purchase",
)
KEYS = ("customer_id", "close_ts")


def read_purchases(world: Path) -> pd.DataFrame:
    """The purchases (amount > 0) of a data directory: customer_id, ts, amount."""
    transactions = pd.read_parquet(
        world / "transactions.parquet", columns=["customer_id", "ts", "amount"]
    )
    return transactions[transactions["amount"] > 0]


def window_features(purchases: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The subset of features for each (customer_id, close_ts) row.

    Args:
        purchases: customer_id, ts, amount of every purchase.
        rows: requested rows with customer_id and close_ts (other columns kept).

    Returns:
        `rows` in their order with the `SUBSET` columns.
    """
    requests = rows[list(KEYS)].reset_index(drop=True).rename_axis("row").reset_index()
    merged = requests.merge(purchases, on="customer_id", how="inner")
    merged = merged[merged["ts"] < merged["close_ts"]]
    last = merged.groupby("row")["ts"].max().rename("last_purchase_ts")
    age = merged["close_ts"] - merged["ts"]
    merged = merged[age <= pd.Timedelta(days=max(WINDOWS))].copy()
    age = age.loc[merged.index]
    columns = []
    for w in WINDOWS:
        inside = age <= pd.Timedelta(days=w)
        merged[f"purchases_{w}d"] = inside.astype("int64")
        merged[f"spend_{w}d"] = merged["amount"].where(inside, 0.0)
        columns += [f"purchases_{w}d", f"spend_{w}d"]
    sums = merged.groupby("row")[columns].sum()
    out = requests.join(sums, on="row").join(last, on="row")
    for w in WINDOWS:
        out[f"purchases_{w}d"] = out[f"purchases_{w}d"].fillna(0).astype("int64")
        out[f"spend_{w}d"] = out[f"spend_{w}d"].fillna(0.0).round(2)
    out["days_since_last_purchase"] = (out["close_ts"] - out["last_purchase_ts"]) / pd.Timedelta(
        days=1
    )
    features = out[list(SUBSET)].set_axis(rows.index)
    return pd.concat([rows, features], axis=1)


def _run(world: Path, rows: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Compute the features for `rows`, write them to `out`, return what a benchmark needs."""
    frame = window_features(read_purchases(world), rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return {"rows": len(frame), "features": len(SUBSET), "out": str(out)}


def latest_close_pandas(world: str, close: str, out: str) -> dict[str, Any]:
    """Benchmark entry point: the subset for every customer at one close.

    Args:
        world: the data directory.
        close: the close (ISO time, UTC).
        out: the parquet file to write (customer_id, close_ts and the subset).

    Returns:
        Rows and features computed, and the output path.
    """
    customers = pd.read_parquet(Path(world) / "customers.parquet", columns=["customer_id"])
    customers["close_ts"] = pd.Timestamp(close).tz_convert("UTC")
    return _run(Path(world), customers, Path(out))


def training_frame_pandas(world: str, rows: str, out: str) -> dict[str, Any]:
    """Benchmark entry point: the subset for (customer_id, ts) rows.

    Args:
        world: the data directory.
        rows: a parquet file of rows with customer_id and ts (UTC).
        out: the parquet file to write (the rows, close_ts and the subset).

    Returns:
        Rows and features computed, and the output path.
    """
    requests = pd.read_parquet(rows, columns=["customer_id", "ts"])
    requests["close_ts"] = requests["ts"].dt.floor("D")
    return _run(Path(world), requests, Path(out))
