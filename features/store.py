"""The Feast feature store: its configuration and its objects, built from the settings.

Feast is the source of definitions: entities (customer, device, ip), one batch feature view
per feature group over the parquet tables that `cashback features build` writes, an
on-demand view for request-time claim features, and one FeatureService per model version.
The repo under `features/repo/` holds the same thing for the `feast` CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import FunctionType
from typing import Any

import polars as pl

from cashback.errors import CashbackError
from cashback.settings import Settings
from features.catalog import (
    FRESH,
    ON_DEMAND,
    OUTPUT_SERVICES,
    SERVICES,
    View,
    output_views,
    views,
)
from features.fresh import FRESH_FEATURES, ON_DEMAND_FEATURES, on_demand_row

EVENT_TS = "event_timestamp"
ENTITY_DESCRIPTIONS = {
    "customer": "a customer of the program",
    "device": "a device claims come from",
    "ip": "an IP address, only ever seen as its keyed hash",
}
CLAIM_REQUEST = "claim_request"


def batch_table_path(settings: Settings, view: str) -> Path:
    """Where the batch table of a view lives."""
    return settings.feature_dir / "tables" / f"{view}.parquet"


def repo_config(settings: Settings) -> Any:
    """Feast's RepoConfig for these settings (sqlite or redis online store, file offline)."""
    from feast.repo_config import RepoConfig  # noqa: PLC0415 (feast is slow to import)

    store = settings.feature_store
    directory = settings.feature_dir.resolve()
    online: dict[str, Any]
    if store.online_store == "redis":
        online = {"type": "redis", "connection_string": store.redis_url}
    else:
        online = {"type": "sqlite", "path": str(directory / "online_store.db")}
    return RepoConfig(
        project=store.project,
        provider="local",
        registry=str(directory / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=directory,
    )


def feature_store(settings: Settings) -> Any:
    """A Feast FeatureStore for these settings."""
    from feast import FeatureStore  # noqa: PLC0415

    settings.feature_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


def _feast_type(dtype: pl.DataType) -> Any:
    from feast import types  # noqa: PLC0415

    mapping = {pl.Float64: types.Float64, pl.Int64: types.Int64, pl.String: types.String}
    mapping[pl.Boolean] = types.Bool
    return mapping[dtype.base_type()]


def _claim_on_demand(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Request-time claim features in Feast's python mode (same code as serving)."""
    out: dict[str, list[Any]] = {name: [] for name in ON_DEMAND_FEATURES}
    for i, amount in enumerate(inputs["amount"]):
        claim = {
            "amount": amount,
            "cashback_amount": inputs["cashback_amount"][i],
            "ts": inputs["claim_ts"][i],
        }
        row = on_demand_row(claim, inputs["avg_basket_90d"][i])
        for name in ON_DEMAND_FEATURES:
            out[name].append(row[name])
    return out


def _fresh_copy(function: Callable[..., Any]) -> FunctionType:
    """A new function object with the same code.

    Feast's on_demand_feature_view decorator rewrites the function's `__module__` to
    `__main__`, after which its source cannot be found again: each build gets its own copy.
    """
    assert isinstance(function, FunctionType)
    copy = FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__doc__ = function.__doc__
    copy.__annotations__ = dict(function.__annotations__)
    return copy


def feast_objects(settings: Settings) -> list[Any]:
    """Every Feast object of the repo: entities, views, the on-demand view, services."""
    from feast import (  # noqa: PLC0415
        Entity,
        FeatureService,
        FeatureView,
        Field,
        FileSource,
        RequestSource,
        ValueType,
        types,
    )
    from feast.on_demand_feature_view import on_demand_feature_view  # noqa: PLC0415

    all_views = views(settings.features)
    key_of = {v.entity: v.key for v in all_views.values()}
    entities = {
        name: Entity(
            name=name,
            join_keys=[key],
            value_type=ValueType.STRING,
            description=ENTITY_DESCRIPTIONS[name],
        )
        for name, key in key_of.items()
    }

    def feature_view(view: View) -> Any:
        source = FileSource(
            name=f"{view.name}_source",
            path=str(batch_table_path(settings, view.name).resolve()),
            timestamp_field=EVENT_TS,
        )
        return FeatureView(
            name=view.name,
            entities=[entities[view.entity]],
            ttl=timedelta(days=settings.feature_store.max_staleness_days),
            schema=[Field(name=n, dtype=_feast_type(t)) for n, t in view.schema.items()],
            source=source,
            online=True,
            description=(
                f"{view.entity} model outputs as of the last scoring"
                if view.name in output_views()
                else f"{view.entity} features as of the last daily close"
            ),
        )

    batch = {name: feature_view(view) for name, view in (all_views | output_views()).items()}
    request = RequestSource(
        name=CLAIM_REQUEST,
        schema=[
            Field(name="amount", dtype=types.Float64),
            Field(name="cashback_amount", dtype=types.Float64),
            Field(name="claim_ts", dtype=types.UnixTimestamp),
            *(Field(name=n, dtype=types.Float64) for n in FRESH_FEATURES),
        ],
    )
    on_demand = on_demand_feature_view(
        name=ON_DEMAND,
        sources=[batch["customer_behaviour"][["avg_basket_90d"]], request],
        schema=[
            Field(name="amount_vs_avg_basket", dtype=types.Float64),
            Field(name="cashback_share", dtype=types.Float64),
            Field(name="hour_of_day", dtype=types.Int64),
        ],
        mode="python",
    )(_fresh_copy(_claim_on_demand))
    services = []
    for service, groups in (SERVICES | OUTPUT_SERVICES).items():
        members = [batch[g] for g in groups if g in batch]
        if ON_DEMAND in groups:
            members.append(on_demand)
        note = " (fresh features come with the request)" if FRESH in groups else ""
        services.append(
            FeatureService(name=service, features=members, description=f"{service}{note}")
        )
    return [*entities.values(), *batch.values(), on_demand, *services]


def apply(settings: Settings) -> list[str]:
    """Register every Feast object of the repo; the names applied.

    Raises:
        CashbackError: when the batch tables have not been built yet.
    """
    missing = [v for v in views(settings.features) if not batch_table_path(settings, v).exists()]
    if missing:
        msg = (
            f"no batch tables for {', '.join(missing)} in {settings.feature_dir}: "
            "run `cashback features build` first"
        )
        raise CashbackError(msg)
    objects = feast_objects(settings)
    feature_store(settings).apply(objects)
    return [str(o.name) for o in objects]


def built_close(settings: Settings) -> datetime:
    """The close the batch tables were built for (the newest event timestamp among them).

    Raises:
        CashbackError: when no batch table exists yet.
    """
    paths = [batch_table_path(settings, v) for v in views(settings.features)]
    present = [p for p in paths if p.exists()]
    if not present:
        msg = f"no batch tables in {settings.feature_dir}: run `cashback features build` first"
        raise CashbackError(msg)
    stamps = [pl.scan_parquet(p).select(pl.col(EVENT_TS).max()) for p in present]
    newest = pl.concat(stamps).select(pl.col(EVENT_TS).max()).collect().item()
    if not isinstance(newest, datetime):
        msg = f"the batch tables in {settings.feature_dir} are empty: rebuild them"
        raise CashbackError(msg)
    return newest


def materialize_tables(settings: Settings, end: datetime | None = None) -> list[Any]:
    """Load the batch tables into the online store, incrementally by entity.

    The batch tables hold one close; they are read whole and rows older than what the store
    holds for an entity are skipped, so this is safe to re-run. Model-output views are
    loaded when their table exists (`cashback customers score` writes customer_scores).

    Args:
        settings: the service settings.
        end: newest event time to load (default: the close the tables were built for).

    Returns:
        One `features.online.MaterializeReport` per view.
    """
    from features.online import materialize  # noqa: PLC0415
    from features.online.writer import EPOCH  # noqa: PLC0415

    until = end or built_close(settings)
    names = [*views(settings.features)]
    names += [v for v in output_views() if batch_table_path(settings, v).exists()]
    return list(materialize(feature_store(settings), end=until, start=EPOCH, feature_views=names))
