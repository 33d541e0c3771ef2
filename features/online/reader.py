"""Serving lookups of one FeatureService, reading Feast's online store directly.

`OnlineReader` resolves the service once (views, stored names, join keys, decoders) and
keeps its connections, so a lookup is: serialize the entity keys, one prepared SELECT per
view (SQLite) or one HMGET per entity (Redis), and decode the stored Value bytes. It
returns what `FeatureStore.get_online_features(...).to_dict()` returns for the same ids,
plus which entities were missing from which view (Feast returns nulls for them; with Redis
it even marks them PRESENT).

`check_fresh` tells whether a view's newest stored event is recent enough.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException

from cashback.errors import CashbackError
from features.online.codec import EntityKeyEncoder, decoder, sqlite_datetime
from features.online.layout import (
    APPLY_HINT,
    MATERIALIZE_HINT,
    OnlineTarget,
    ViewLayout,
    online_target,
    view_layout,
)
from features.online.redis_store import RedisLookup
from features.online.sqlite_store import SqliteLookup


@dataclass(frozen=True)
class OnlineResult:
    """Features of the requested entities, in request order.

    Attributes:
        entities: the request's join key columns.
        features: one list per feature (named as Feast names them), None where null or
            missing.
        found: per feature view (its name in the service), whether each entity had a row.
    """

    entities: dict[str, list[Any]]
    features: dict[str, list[Any]]
    found: dict[str, list[bool]]

    @property
    def missing(self) -> list[bool]:
        """Per entity: True when some view of the service had no row for it."""
        rows = zip(*self.found.values(), strict=True)
        return [not all(flags) for flags in rows]

    def to_dict(self) -> dict[str, list[Any]]:
        """Join keys and features, like `OnlineResponse.to_dict()`."""
        return {**self.entities, **self.features}


@dataclass(frozen=True)
class _Projection:
    """A view as the service selects it: features, output names, join key mapping."""

    layout: ViewLayout
    label: str  # the view's name in the service (alias or name)
    join_key_map: dict[str, str]
    features: list[str]
    names: list[str]  # output names of the features


@dataclass
class _View:
    """One view of the service, prepared for lookups."""

    layout: ViewLayout
    label: str
    request_keys: tuple[str, ...]  # request column of each join key, in layout order
    outputs: dict[str, tuple[int, Callable[[bytes | None], Any]]]  # feature -> (column, decode)
    fields: list[bytes] = field(default_factory=list)  # Redis: feature fields, then _ts


@dataclass
class _Group:
    """Views sharing one entity key (same join keys): one Redis hash per entity."""

    encoder: EntityKeyEncoder
    request_keys: tuple[str, ...]
    views: list[_View]


class OnlineReader:
    """Batched online lookups of one FeatureService (SQLite or Redis, as configured).

    Thread-safe: SQLite connections are per thread, the Redis client pools connections.
    """

    def __init__(
        self,
        store: FeatureStore,
        feature_service_name: str,
        *,
        full_feature_names: bool = False,
        check: bool = True,
        max_age: timedelta | None = None,
        skip_on_demand: bool = False,
    ) -> None:
        """Resolve the service and open the store.

        Args:
            store: the Feast repo.
            feature_service_name: the FeatureService to serve.
            full_feature_names: name features `<view>__<feature>` (as Feast's option).
            check: fail now if a view of the service has no row online.
            max_age: also fail if a view's newest event is older than this.
            skip_on_demand: leave out the service's on-demand views (the caller computes them
                at request time) instead of refusing the service.

        Raises:
            CashbackError: unknown service (the known ones are listed), on-demand views,
                colliding feature names, a store that is missing, empty or stale (the
                message names the command to run).
        """
        self.target = online_target(store)
        self.service = feature_service_name
        views = _service_views(store, feature_service_name, full_feature_names, skip_on_demand)
        self.feature_names: tuple[str, ...] = tuple(n for view in views for n in view.names)
        duplicates = sorted({n for n in self.feature_names if self.feature_names.count(n) > 1})
        if duplicates:
            raise CashbackError(
                f"feature service {feature_service_name!r} has features {duplicates} in several "
                "views: use full_feature_names=True"
            )
        self._groups = _groups(views, self.target)
        self.join_keys: tuple[str, ...] = tuple(
            dict.fromkeys(k for g in self._groups for k in g.request_keys)
        )
        self._sqlite = (
            SqliteLookup(self.target.sqlite_path) if self.target.sqlite_path is not None else None
        )
        self._redis = (
            RedisLookup(self.target.redis_config, self.target.project)
            if self.target.kind == "redis"
            else None
        )
        if check or max_age is not None:
            for group in self._groups:
                for view in group.views:
                    self._check(view.layout, max_age)

    def _check(self, layout: ViewLayout, max_age: timedelta | None) -> None:
        if max_age is not None:
            _check_age(layout, self._newest(layout), max_age, datetime.now(UTC), self.service)
            return
        has_rows = (
            self._sqlite.has_rows(layout)
            if self._sqlite is not None
            else self._redis_lookup().has_rows(layout, self.target.key_version)
        )
        if not has_rows:
            raise CashbackError(
                f"online store has no rows for feature view {layout.name!r} (feature service "
                f"{self.service!r}): {MATERIALIZE_HINT}"
            )

    def _newest(self, layout: ViewLayout) -> datetime | None:
        if self._sqlite is not None:
            value = self._sqlite.newest_event_ts(layout)
            return None if value is None else sqlite_datetime(value)
        nanos = self._redis_lookup().newest_event_nanos(layout, self.target.key_version)
        return None if nanos is None else datetime.fromtimestamp(nanos / 1e9, tz=UTC)

    def _redis_lookup(self) -> RedisLookup:
        assert self._redis is not None
        return self._redis

    def read(self, entity_ids: Sequence[Any]) -> OnlineResult:
        """Features of these entities, for a service with a single join key.

        Args:
            entity_ids: the join key values (str for string keys, int for integer keys).

        Returns:
            The result, in request order; unknown ids give nulls and `missing` True.

        Raises:
            CashbackError: the service has several join keys, or an id of the wrong type.
        """
        if len(self.join_keys) != 1:
            raise CashbackError(
                f"feature service {self.service!r} has join keys {list(self.join_keys)}: "
                "use read_rows({join key: values})"
            )
        if isinstance(entity_ids, str | bytes):
            raise CashbackError("read() takes a sequence of ids, not one id")
        return self.read_rows({self.join_keys[0]: entity_ids})

    def read_rows(self, entities: Mapping[str, Sequence[Any]]) -> OnlineResult:
        """Features of these entities, given as columns of join key values.

        Args:
            entities: one sequence of values per join key of the service (same lengths).

        Returns:
            The result, in request order.

        Raises:
            CashbackError: missing or unknown join keys, unequal lengths, wrong value types.
        """
        unknown = sorted(set(entities) - set(self.join_keys))
        absent = [k for k in self.join_keys if k not in entities]
        if unknown or absent:
            raise CashbackError(
                f"feature service {self.service!r} takes join keys {list(self.join_keys)}; "
                f"got {sorted(entities)}"
            )
        columns = {k: list(entities[k]) for k in self.join_keys}
        n = len(next(iter(columns.values()))) if columns else 0
        if any(len(v) != n for v in columns.values()):
            raise CashbackError(
                f"join key columns have different lengths: "
                f"{ {k: len(v) for k, v in columns.items()} }"
            )
        out: list[list[Any]] = [[None] * n for _ in self.feature_names]
        found: dict[str, list[bool]] = {}
        for group in self._groups:
            self._read_group(group, columns, n, out, found)
        return OnlineResult(
            entities=columns,
            features=dict(zip(self.feature_names, out, strict=True)),
            found=found,
        )

    def _read_group(
        self,
        group: _Group,
        columns: dict[str, list[Any]],
        n: int,
        out: list[list[Any]],
        found: dict[str, list[bool]],
    ) -> None:
        encode = group.encoder.encode
        key_columns = [columns[k] for k in group.request_keys]
        positions: dict[bytes, list[int]] = {}
        for i, values in enumerate(zip(*key_columns, strict=True)):
            positions.setdefault(encode(values), []).append(i)
        if self._sqlite is not None:
            for view in group.views:
                found[view.label] = self._read_sqlite(self._sqlite, view, positions, n, out)
        else:
            self._read_redis(group, positions, n, out, found)

    @staticmethod
    def _read_sqlite(
        sqlite: SqliteLookup,
        view: _View,
        positions: dict[bytes, list[int]],
        n: int,
        out: list[list[Any]],
    ) -> list[bool]:
        flags = [False] * n
        rows = sqlite.fetch(view.layout.table, list(positions)) if positions else []
        outputs = view.outputs
        for key, name, raw in rows:
            rows_of_key = positions[key]
            for i in rows_of_key:
                flags[i] = True
            target = outputs.get(name)
            if target is not None:
                value = target[1](raw)
                column = out[target[0]]
                for i in rows_of_key:
                    column[i] = value
        return flags

    def _read_redis(
        self,
        group: _Group,
        positions: dict[bytes, list[int]],
        n: int,
        out: list[list[Any]],
        found: dict[str, list[bool]],
    ) -> None:
        keys = list(positions)
        fields = [f for view in group.views for f in view.fields]
        replies = self._redis_lookup().fetch(keys, fields) if keys else []
        offset = 0
        for view in group.views:
            flags = found[view.label] = [False] * n
            width = len(view.fields)
            decoders = list(view.outputs.values())
            for key, reply in zip(keys, replies, strict=True):
                stored = reply[offset : offset + width]
                if stored[-1] is None:  # no _ts:<view>: the entity has no row of this view
                    continue
                rows_of_key = positions[key]
                for i in rows_of_key:
                    flags[i] = True
                for (index, decode), raw in zip(decoders, stored, strict=False):
                    value = decode(raw)
                    for i in rows_of_key:
                        out[index][i] = value
            offset += width

    def close(self) -> None:
        """Close the store connections."""
        if self._sqlite is not None:
            self._sqlite.close()
        if self._redis is not None:
            self._redis.close()


def _service_views(
    store: FeatureStore, service_name: str, full_feature_names: bool, skip_on_demand: bool
) -> list[_Projection]:
    """The service's stored views, checked to be views this reader can serve.

    On-demand views are computed at request time by the caller: with `skip_on_demand` they
    are left out, otherwise they are refused.
    """
    try:
        service = store.get_feature_service(service_name)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise CashbackError(
            f"unknown feature service {service_name!r}; known: {', '.join(known) or 'none'} "
            f"(or {APPLY_HINT})"
        ) from None
    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    views = []
    for projection in service.feature_view_projections:
        if projection.name in on_demand and skip_on_demand:
            continue
        if projection.name in on_demand:
            raise CashbackError(
                f"feature service {service_name!r} includes on-demand feature view "
                f"{projection.name!r}, computed at request time: OnlineReader serves stored "
                "views only"
            )
        if getattr(projection, "version_tag", None) is not None:
            raise CashbackError(
                f"feature service {service_name!r} pins a version of {projection.name!r}: "
                "not supported"
            )
        layout = view_layout(store, projection.name)
        label: str = projection.name_to_use()  # type: ignore[no-untyped-call]
        features = [f.name for f in projection.features] or [f.name for f in layout.features]
        names = [f"{label}__{f}" if full_feature_names else f for f in features]
        join_key_map = dict(projection.join_key_map or {})
        views.append(_Projection(layout, label, join_key_map, features, names))
    return views


def _groups(views: list[_Projection], target: OnlineTarget) -> list[_Group]:
    """Views grouped by entity key, each feature given its output column and decoder."""
    groups: dict[tuple[Any, ...], _Group] = {}
    column = 0
    for projection in views:
        layout = projection.layout
        request_keys = tuple(projection.join_key_map.get(k.name, k.name) for k in layout.join_keys)
        kinds = {f.name: f.kind for f in layout.features}
        outputs = {}
        for feature in projection.features:
            outputs[feature] = (column, decoder(kinds[feature]))
            column += 1
        view = _View(layout, projection.label, request_keys, outputs)
        if target.kind == "redis":
            fields = [layout.redis_field(f) for f in projection.features]
            view.fields = [*fields, layout.ts_field]
        signature = (layout.join_keys, request_keys)
        group = groups.get(signature)
        if group is None:
            encoder = EntityKeyEncoder(layout.join_keys, target.key_version)
            group = groups[signature] = _Group(encoder, request_keys, [])
        group.views.append(view)
    return list(groups.values())


def newest_event_time(store: FeatureStore, feature_view: str) -> datetime | None:
    """The newest event time stored online for a view (None when it has no row).

    A full scan of the view's table (SQLite) or of its entities' hashes (Redis): meant for
    readiness checks and the CLI, not for the request path.

    Args:
        store: the Feast repo.
        feature_view: the view.

    Returns:
        The newest event time (UTC), or None.
    """
    target = online_target(store)
    layout = view_layout(store, feature_view)
    if target.sqlite_path is not None:
        sqlite = SqliteLookup(target.sqlite_path)
        try:
            value = sqlite.newest_event_ts(layout)
        finally:
            sqlite.close()
        return None if value is None else sqlite_datetime(value)
    lookup = RedisLookup(target.redis_config, target.project)
    try:
        nanos = lookup.newest_event_nanos(layout, target.key_version)
    finally:
        lookup.close()
    return None if nanos is None else datetime.fromtimestamp(nanos / 1e9, tz=UTC)


def check_fresh(
    store: FeatureStore,
    feature_view: str,
    max_age: timedelta,
    *,
    now: datetime | None = None,
) -> datetime:
    """Raise unless the view's newest online event is at most `max_age` old.

    Args:
        store: the Feast repo.
        feature_view: the view.
        max_age: the largest acceptable age of the newest event.
        now: the reference time (default: now, UTC).

    Returns:
        The newest event time (UTC).

    Raises:
        CashbackError: the view has no row online, or its newest event is too old; the
            message names the command to run.
    """
    layout = view_layout(store, feature_view)
    newest = newest_event_time(store, feature_view)
    return _check_age(layout, newest, max_age, now or datetime.now(UTC), None)


def _check_age(
    layout: ViewLayout,
    newest: datetime | None,
    max_age: timedelta,
    now: datetime,
    service: str | None,
) -> datetime:
    where = f"feature view {layout.name!r}" + (f" (feature service {service!r})" if service else "")
    if newest is None:
        raise CashbackError(f"online store has no rows for {where}: {MATERIALIZE_HINT}")
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    age = now - newest
    if age > max_age:
        raise CashbackError(
            f"online store is stale for {where}: newest event {newest.isoformat()} is "
            f"{_human(age)} old (max {_human(max_age)}): {MATERIALIZE_HINT}"
        )
    return newest


def _human(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"
