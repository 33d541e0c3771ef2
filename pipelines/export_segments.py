"""`cashback segments export`: one row per customer for marketers.

Columns: customer_id, segment (the champion segment model), lifecycle (as of the latest
close), churn probability (the champion churn model, for customers active within the
inactive limit; null otherwise or without a champion) and CLV (expected spend over the value
horizon: the champion value model, else BG/NBD x Gamma-Gamma; null for customers who never
bought). The same scores `cashback customers score` writes to the feature store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import write_parquet_atomic
from pipelines.score_customers import score

COLUMNS = ("customer_id", "segment", "lifecycle", "churn_probability", "clv")


@dataclass(frozen=True)
class Export:
    """What was exported: where, how many customers, as of which close, and notes."""

    path: Path
    customers: int
    close: str
    notes: tuple[str, ...]


def run(settings: Settings, out: Path, fmt: Literal["csv", "parquet"]) -> Export:
    """Write the export to `out` (atomically).

    Raises:
        CashbackError: without a champion segment model (the export is for segments).
    """
    from models.registry import champion_version  # noqa: PLC0415 - MLflow is slow

    if champion_version(settings, "segments") is None:
        msg = (
            "no segments champion yet: run `cashback train segments`, then "
            "`cashback models promote segments`"
        )
        raise CashbackError(msg)
    scored = score(settings)
    frame = scored.scores.select(COLUMNS).sort("customer_id")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        write_parquet_atomic(frame, out)
    else:
        tmp = out.with_name(f".{out.name}.tmp")
        frame.write_csv(tmp)
        tmp.replace(out)
    return Export(out, frame.height, f"{scored.close:%Y-%m-%d}", scored.notes)
