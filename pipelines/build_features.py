"""Job: the batch feature tables as of a daily close (`cashback features build`).

Customer views hold every customer who had signed up by the close; device and IP views hold
the devices and IPs with a claim in the 30 days before it, plus those that left that window
within the store's staleness horizon (with zero counts), so no older value lingers online.
Each table is what the online store serves until the next close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from cashback.errors import CashbackError
from cashback.progress import progress_bar
from cashback.settings import Settings
from cashback.tables import write_parquet_atomic
from features.catalog import CLOSE, views
from features.customer_frame import FeatureSources, customer_features
from features.network import ENTITIES, SHARED_WINDOW_DAYS, network_features
from features.store import EVENT_TS, batch_table_path

TS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class BuiltTables:
    """The close the tables are as of, and rows written per view."""

    close: datetime
    rows: dict[str, int]
    paths: dict[str, Path]


def latest_close(sources: FeatureSources) -> datetime:
    """The first close after every recorded event (00:00 UTC of the next day).

    Raises:
        CashbackError: when there are no transactions at all.
    """
    last = (
        pl.concat([sources.transactions.select("ts"), sources.claims.select("ts")])
        .select(pl.col("ts").max())
        .collect()
        .item()
    )
    if not isinstance(last, datetime):
        msg = "no transactions or claims to build features from (cashback data simulate|import)"
        raise CashbackError(msg)
    return last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _customer_rows(sources: FeatureSources, close: datetime) -> pl.LazyFrame:
    return sources.customers.filter(pl.col("signup_ts") < close).select(
        "customer_id", pl.lit(close).cast(TS).alias(CLOSE)
    )


def _network_rows(
    sources: FeatureSources, key: str, close: datetime, settings: Settings
) -> pl.LazyFrame:
    # entities that just left the 30-day window get a row of zeros too, so that values of
    # an earlier close never linger in the online store
    horizon = timedelta(days=SHARED_WINDOW_DAYS + settings.feature_store.max_staleness_days)
    recent = sources.claims.filter(pl.col("ts") < close, pl.col("ts") >= close - horizon)
    return (
        recent.select(key)
        .filter(pl.col(key).is_not_null())
        .unique()
        .sort(key)
        .with_columns(pl.lit(close).cast(TS).alias(CLOSE))
    )


def batch_tables(
    sources: FeatureSources, close: datetime, settings: Settings
) -> dict[str, pl.DataFrame]:
    """Each view's rows as of `close`, with Feast's event timestamp.

    The customer features are computed once for the three customer views; the device and
    IP views are computed alongside, in the same collect.
    """
    catalog = views(settings.features)
    plans = {
        "customers": customer_features(sources, _customer_rows(sources, close), settings.features)
    }
    for entity, key in ENTITIES.items():
        plans[f"{entity}_network"] = network_features(
            sources.claims, sources.customers, _network_rows(sources, key, close, settings), entity
        ).select(key, *catalog[f"{entity}_network"].features)
    done = dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))
    customers = done.pop("customers")
    tables = {
        name: customers.select("customer_id", *catalog[name].features)
        for name in ("customer_behaviour", "customer_cashback", "customer_lifecycle")
    } | done
    stamp = pl.lit(close).cast(TS).alias(EVENT_TS)
    return {name: frame.with_columns(stamp) for name, frame in tables.items()}


def run(settings: Settings, close: datetime | None = None) -> BuiltTables:
    """Compute and write the batch tables of every view as of `close` (default: the latest).

    Args:
        settings: the service settings (data directory, feature settings).
        close: a UTC midnight; default the first close after the last event.

    Returns:
        The close, rows and paths per view.
    """
    sources = FeatureSources.from_directory(settings.data_dir)
    close = close or latest_close(sources)
    if close.hour or close.minute or close.second or close.microsecond:
        msg = f"close {close.isoformat()} is not a daily close (00:00 UTC)"
        raise CashbackError(msg)
    with progress_bar(f"building features as of {close:%Y-%m-%d}"):
        tables = batch_tables(sources, close, settings)
        paths = {
            n: write_parquet_atomic(f, batch_table_path(settings, n)) for n, f in tables.items()
        }
    rows = {name: frame.height for name, frame in tables.items()}
    return BuiltTables(close=close, rows=rows, paths=paths)
