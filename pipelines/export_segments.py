"""`cashback segments export`: one row per customer for marketers.

Columns: customer_id, segment (from the last `cashback train segments`), lifecycle (as of
the latest close), churn probability (the champion churn model, for customers active in the
last year; null otherwise or without a champion) and CLV (expected spend over the value
horizon: BG/NBD x Gamma-Gamma fitted on the whole history; null for customers who never
bought).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from cashback.tables import write_parquet_atomic
from features.customer_frame import CLOSE, FeatureSources, customer_features
from features.training import training_frame
from models.customers.bgnbd import rfm_summary
from models.customers.gamma_gamma import GammaGammaModel
from models.customers.snapshots import KEY
from models.fraud.dataset import encode
from pipelines.build_features import latest_close
from pipelines.train_churn import BGNBD_FEATURES, _fit_bgnbd, bgnbd_columns

COLUMNS = ("customer_id", "segment", "lifecycle", "churn_probability", "clv")


@dataclass(frozen=True)
class Export:
    """What was exported: where, how many customers, as of which close, and notes."""

    path: Path
    customers: int
    close: str
    notes: tuple[str, ...]


def _segments(settings: Settings) -> pl.DataFrame:
    path = settings.feature_dir / "tables" / "customer_segment.parquet"
    if not path.exists():
        msg = f"{path}: no segments yet (run `cashback train segments`)"
        raise CashbackError(msg)
    return pl.read_parquet(path, columns=[KEY, "segment"])


def _clv(purchases: pl.LazyFrame, close: datetime, horizon_days: int) -> pl.DataFrame:
    summary = rfm_summary(purchases, close, value="amount")
    f, r, t = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    monetary = summary["monetary_value"].fill_null(0.0).to_numpy()
    bgnbd = _fit_bgnbd(f, r, t, close)
    spend = (
        GammaGammaModel().fit(f, monetary).expected_spend(bgnbd, horizon_days, f, r, t, monetary)
    )
    return summary.select(KEY).with_columns(pl.Series("clv", np.round(spend, 2)))


def _churn(
    settings: Settings, sources: FeatureSources, purchases: pl.LazyFrame, close: datetime
) -> tuple[pl.DataFrame | None, str | None]:
    from models.customers.churn import load_churn  # noqa: PLC0415
    from models.registry import champion_artifacts, champion_version  # noqa: PLC0415

    if champion_version(settings, "churn") is None:
        return None, "no churn champion: churn_probability is empty (train and promote churn)"
    model = load_churn(champion_artifacts(settings, "churn"))
    limit = pl.duration(days=settings.customers.inactive_limit_days)
    active = (
        purchases.filter(pl.col("ts") < close, pl.col("ts") >= pl.lit(close) - limit)
        .select(KEY)
        .unique()
        .with_columns(pl.lit(close).cast(pl.Datetime("us", "UTC")).alias("ts"))
    )
    frame = training_frame(sources, active, "churn_v1", settings.features).collect()
    extra = bgnbd_columns(purchases, close, settings.customers.churn_horizon_days)
    frame = frame.join(extra.select(KEY, *BGNBD_FEATURES), on=KEY, how="left")
    probability = model.probability(encode(frame, model.features))
    return frame.select(KEY).with_columns(pl.Series("churn_probability", probability)), None


def run(settings: Settings, out: Path, fmt: Literal["csv", "parquet"]) -> Export:
    """Write the export to `out` (atomically)."""
    sources = FeatureSources.from_directory(settings.data_dir)
    close = latest_close(sources)
    purchases = sources.transactions.filter(pl.col("amount") > 0).select(KEY, "ts", "amount")
    rows = sources.customers.select(KEY).with_columns(
        pl.lit(close).cast(pl.Datetime("us", "UTC")).alias(CLOSE)
    )
    lifecycle = customer_features(sources, rows, settings.features).select(KEY, "lifecycle")
    frame = (
        lifecycle.collect()
        .join(_segments(settings), on=KEY, how="left")
        .join(_clv(purchases, close, settings.customers.value_horizon_days), on=KEY, how="left")
    )
    churn, note = _churn(settings, sources, purchases, close)
    frame = (
        frame.join(churn, on=KEY, how="left")
        if churn is not None
        else frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("churn_probability"))
    )
    frame = frame.select(COLUMNS).sort(KEY)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        write_parquet_atomic(frame, out)
    else:
        tmp = out.with_name(f".{out.name}.tmp")
        frame.write_csv(tmp)
        tmp.replace(out)
    return Export(out, frame.height, f"{close:%Y-%m-%d}", (note,) if note else ())
