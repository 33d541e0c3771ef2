"""Where and how Feast keeps a feature view online: the store, the table or hash fields, types.

Everything here is read from the Feast repo (its `RepoConfig` and registry) and checked once,
so that the writer and the reader fail early with a message that says what to do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import mmh3
from feast import FeatureStore, FeatureView
from feast.errors import FeatureViewNotFoundException
from feast.infra.online_stores.helpers import compute_table_id, compute_versioned_name
from feast.value_type import ValueType

from cashback.errors import CashbackError
from features.online.codec import KeySpec, Kind

APPLY_HINT = "run `cashback features apply`"
MATERIALIZE_HINT = "run `cashback features materialize`"
# Columns the writer adds to a prepared frame: serialized entity key, event and created time.
EK, EVENT_TS, CREATED_TS = "__cashback_ek", "__cashback_event_ts", "__cashback_created_ts"

_KINDS: dict[ValueType, Kind] = {
    ValueType.DOUBLE: Kind.FLOAT64,
    ValueType.FLOAT: Kind.FLOAT32,
    ValueType.INT64: Kind.INT64,
    ValueType.INT32: Kind.INT32,
    ValueType.BOOL: Kind.BOOL,
    ValueType.STRING: Kind.STRING,
}
_KEY_KINDS = (Kind.STRING, Kind.INT64, Kind.INT32)


@dataclass(frozen=True)
class OnlineTarget:
    """The configured online store.

    Attributes:
        kind: "sqlite" or "redis".
        project: the Feast project (table prefix, Redis key suffix).
        key_version: `entity_key_serialization_version`.
        sqlite_path: the SQLite file (sqlite only).
        redis_config: Feast's `RedisOnlineStoreConfig` (redis only).
    """

    kind: Literal["sqlite", "redis"]
    project: str
    key_version: int
    sqlite_path: Path | None = None
    redis_config: Any = None


@dataclass(frozen=True)
class FeatureSpec:
    """A feature of a view: its name and type."""

    name: str
    kind: Kind


@dataclass(frozen=True)
class ViewLayout:
    """How one feature view is stored online.

    Attributes:
        name: the feature view.
        stored_name: its name in the store (with `_v<n>` when online versioning is on).
        table: the SQLite table, `<project>_<stored_name>`.
        join_keys: join keys with their types, sorted by name (the entity key order).
        features: the view's features, in schema order.
        timestamp_field: the batch source's event timestamp column.
        created_timestamp_column: the batch source's created timestamp column, if any.
        ttl: the view's ttl (None or zero: no limit).
    """

    name: str
    stored_name: str
    table: str
    join_keys: tuple[KeySpec, ...]
    features: tuple[FeatureSpec, ...]
    timestamp_field: str
    created_timestamp_column: str | None
    ttl: timedelta | None

    @property
    def ts_field(self) -> bytes:
        """The Redis hash field holding the view's event time of an entity."""
        return f"_ts:{self.stored_name}".encode()

    def redis_field(self, feature: str) -> bytes:
        """The Redis hash field of a feature: murmur3 of `<view>:<feature>`, 4 bytes LE."""
        return struct.pack("<I", mmh3.hash(f"{self.stored_name}:{feature}", signed=False))


def online_target(store: FeatureStore) -> OnlineTarget:
    """The online store of a Feast repo, checked to be one this package writes.

    Args:
        store: the Feast repo.

    Returns:
        The target.

    Raises:
        CashbackError: another online store type, or options that change the storage format
            (vector search, the OpenAI-compatible `value_num` column).
    """
    config = store.config
    online = config.online_store
    kind = str(getattr(online, "type", ""))
    version = int(config.entity_key_serialization_version)
    if kind == "sqlite" or kind.endswith("SqliteOnlineStore"):
        for option in ("vector_enabled", "text_search_enabled", "enable_openai_compatible_store"):
            if getattr(online, option, False):
                msg = f"online_store option {option} is not supported by cashback's online store"
                raise CashbackError(f"{msg}: remove it from feature_store.yaml")
        path = Path(online.path)
        if config.repo_path and not path.is_absolute():
            path = Path(config.repo_path) / path
        return OnlineTarget("sqlite", store.project, version, sqlite_path=path)
    if kind == "redis" or kind.endswith("RedisOnlineStore"):
        return OnlineTarget("redis", store.project, version, redis_config=online)
    raise CashbackError(
        f"online store type {kind!r} is not supported: use sqlite (default) or redis in "
        "feature_store.yaml"
    )


def view_layout(store: FeatureStore, name: str) -> ViewLayout:
    """The stored layout of a feature view.

    Args:
        store: the Feast repo.
        name: the feature view.

    Returns:
        The layout.

    Raises:
        CashbackError: unknown view (the known ones are listed), a view that is not online,
            has no entity, or has a feature or join key type that is not supported.
    """
    view: FeatureView | None
    try:
        view = store.get_feature_view(name)
    except FeatureViewNotFoundException:
        view = _stream_view(store, name)
    if view is None:
        known = sorted(v.name for v in store.list_feature_views())
        raise CashbackError(
            f"unknown feature view {name!r}; known: {', '.join(known) or 'none'} (or {APPLY_HINT})"
        )
    return layout_of(store, view)


def _stream_view(store: FeatureStore, name: str) -> FeatureView | None:
    """A stream feature view of that name (stored like any view), or None."""
    try:
        found: FeatureView = store.get_stream_feature_view(name)
    except FeatureViewNotFoundException:
        return None
    return found


def layout_of(store: FeatureStore, view: FeatureView) -> ViewLayout:
    """The stored layout of a feature view object from the registry (see `view_layout`)."""
    if not view.online:
        raise CashbackError(f"feature view {view.name!r} is not online (online=False)")
    if not view.entity_columns:
        raise CashbackError(f"feature view {view.name!r} has no entity: not supported online")
    versioning = bool(store.config.registry.enable_online_feature_view_versioning)
    keys = tuple(
        sorted(
            (
                KeySpec(c.name, _kind(view.name, c.name, c.dtype.to_value_type()))
                for c in view.entity_columns
            ),
            key=lambda k: k.name,
        )
    )
    for key in keys:
        if key.kind not in _KEY_KINDS:
            raise CashbackError(
                f"feature view {view.name!r}: join key {key.name!r} has type {key.kind.name}; "
                "only string, int64 and int32 join keys are supported"
            )
    features = tuple(
        FeatureSpec(f.name, _kind(view.name, f.name, f.dtype.to_value_type()))
        for f in view.features
    )
    source = view.batch_source
    return ViewLayout(
        name=view.name,
        stored_name=compute_versioned_name(view, versioning),
        table=compute_table_id(store.project, view, versioning),
        join_keys=keys,
        features=features,
        timestamp_field=source.timestamp_field if source is not None else "",
        created_timestamp_column=(source.created_timestamp_column or None) if source else None,
        ttl=view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None,
    )


def _kind(view: str, column: str, value_type: ValueType) -> Kind:
    try:
        return _KINDS[value_type]
    except KeyError:
        supported = ", ".join(k.name.lower() for k in Kind)
        raise CashbackError(
            f"feature view {view!r}, column {column!r}: type {value_type.name} is not supported "
            f"online by cashback ({supported})"
        ) from None
