"""Fill Feast's online store fast: `write_online` for a frame, `materialize` for a repo.

Both write exactly what Feast would (same tables or hashes, same bytes; see `codec`), so
the plain Feast SDK reads the result, but they encode whole columns with numpy and let the
store do the per-row work (one SQL statement per chunk for SQLite, one protocol buffer per
chunk for Redis) instead of building one protobuf object per value.

Incremental rule: for each entity only its latest row is kept (by event time, then created
time), and it is written only when it is at least as new as the stored row of that view;
older rows never overwrite newer ones. Feast's Redis store has the same rule (there, an equal
time is skipped rather than rewritten); Feast's SQLite store has none and overwrites.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
from feast import FeatureStore, FileSource

from cashback.errors import CashbackError
from features.online.codec import Kind, Segment, encode_entity_keys, encode_values, value_texts
from features.online.layout import (
    APPLY_HINT,
    CREATED_TS,
    EK,
    EVENT_TS,
    OnlineTarget,
    ViewLayout,
    layout_of,
    online_target,
    view_layout,
)
from features.online.redis_store import RedisWriter
from features.online.sqlite_store import SqliteWriter, Staged, stage

CHUNK_ROWS = 20_000
T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_online(
    store: FeatureStore,
    feature_view_name: str,
    frame: pl.DataFrame,
    *,
    event_ts_column: str = "event_timestamp",
    created_ts_column: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Upsert rows into the configured online store (SQLite or Redis) as Feast stores them.

    Args:
        store: the Feast repo.
        feature_view_name: the feature view the rows belong to.
        frame: join key columns, the view's feature columns (others are ignored) and the
            event timestamp; several rows per entity are allowed (the latest wins).
        event_ts_column: the event timestamp column (naive means UTC).
        created_ts_column: an optional created timestamp column (tie-breaker, and stored as
            `created_ts` in SQLite as Feast does).
        chunk_rows: entities encoded and written per step (bounds memory).

    Returns:
        Entities written (rows older than the stored ones are skipped).

    Raises:
        CashbackError: unknown view, missing or mistyped columns, null keys or times, an
            unsupported store, or a missing online table.
    """
    target = online_target(store)
    layout = view_layout(store, feature_view_name)
    _refuse_precomputed(store, layout.name)
    prepared = prepare(frame, layout, target, event_ts_column, created_ts_column)
    return _write_prepared(target, layout, prepared, chunk_rows)


def _write_prepared(
    target: OnlineTarget, layout: ViewLayout, prepared: pl.DataFrame, chunk_rows: int
) -> int:
    """Encode chunk k + 1 in a worker thread while the store writes chunk k.

    numpy, polars and sqlite3 release the GIL in their heavy parts, so on two cores the
    encoding mostly hides behind the store's own work.
    """
    chunks = prepared.iter_slices(chunk_rows)
    if target.kind == "sqlite":
        assert target.sqlite_path is not None

        def encode_sqlite(chunk: pl.DataFrame) -> Staged:
            values = [encode_values(chunk[f.name], f.kind) for f in layout.features]
            texts = [value_texts(chunk[f.name], f.kind) for f in layout.features]
            return stage(layout, chunk, values, texts)

        with SqliteWriter(target.sqlite_path, layout) as sqlite_writer:
            return _pipelined(chunks, encode_sqlite, sqlite_writer.write_staged)

    def encode_redis(chunk: pl.DataFrame) -> tuple[pl.DataFrame, list[Segment]]:
        return chunk, [encode_values(chunk[f.name], f.kind) for f in layout.features]

    with RedisWriter(target.redis_config, target.project, layout) as redis_writer:
        return _pipelined(chunks, encode_redis, lambda done: redis_writer.write(*done))


def _pipelined(
    chunks: Iterator[pl.DataFrame],
    encode: Callable[[pl.DataFrame], T],
    write: Callable[[T], int],
) -> int:
    """Sum of `write(encode(chunk))`, encoding the next chunk while writing this one."""
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-encode") as pool:
        pending: Future[T] | None = None
        for chunk in chunks:
            upcoming = pool.submit(encode, chunk)
            if pending is not None:
                written += write(pending.result())
            pending = upcoming
        if pending is not None:
            written += write(pending.result())
    return written


def _refuse_precomputed(store: FeatureStore, view: str) -> None:
    """Feature services with `precompute_online` read vectors this writer does not refresh."""
    for service in store.list_feature_services():
        if getattr(service, "precompute_online", False) and any(
            p.name == view for p in service.feature_view_projections
        ):
            raise CashbackError(
                f"feature service {service.name!r} has precompute_online=True, whose vectors "
                f"`write_online` does not refresh: set it to False to serve view {view!r}"
            )


def prepare(
    frame: pl.DataFrame,
    layout: ViewLayout,
    target: OnlineTarget,
    event_ts_column: str,
    created_ts_column: str | None = None,
) -> pl.DataFrame:
    """Check and normalize rows: typed columns, serialized keys, latest row per entity.

    Args:
        frame: the rows to write.
        layout: the view.
        target: the store (for the key serialization version).
        event_ts_column: the event timestamp column.
        created_ts_column: the created timestamp column, if any.

    Returns:
        One row per entity, sorted by serialized entity key (`EK`), with the join keys, the
        features cast to their types, `EVENT_TS` and, if given, `CREATED_TS` (UTC).

    Raises:
        CashbackError: missing or mistyped columns, null join keys or timestamps.
    """
    keys = [k.name for k in layout.join_keys]
    features = [f.name for f in layout.features]
    stamps = [event_ts_column] + ([created_ts_column] if created_ts_column else [])
    missing = [c for c in (*keys, *features, *stamps) if c not in frame.columns]
    if missing:
        raise CashbackError(
            f"rows for feature view {layout.name!r} lack columns {missing} (have {frame.columns})"
        )
    exprs = [_cast(frame, k.name, k.kind, layout.name) for k in layout.join_keys]
    exprs += [_cast(frame, f.name, f.kind, layout.name) for f in layout.features]
    exprs.append(_utc(frame, event_ts_column, layout.name).alias(EVENT_TS))
    if created_ts_column:
        exprs.append(_utc(frame, created_ts_column, layout.name).alias(CREATED_TS))
    try:
        out = frame.select(exprs)
    except pl.exceptions.PolarsError:
        _raise_cast_error(frame, exprs, layout.name)
        raise
    nulls = out.select(pl.col(*keys, EVENT_TS).null_count()).row(0, named=True)
    bad = {c: n for c, n in nulls.items() if n}
    if bad:
        named = {EVENT_TS: event_ts_column}
        raise CashbackError(
            f"rows for feature view {layout.name!r} have nulls in "
            + ", ".join(f"{named.get(c, c)} ({n} rows)" for c, n in bad.items())
        )
    out = out.with_columns(_entity_keys(out, layout, target.key_version))
    order = [EK, EVENT_TS] + ([CREATED_TS] if created_ts_column else [])
    out = out.sort(order, maintain_order=True, nulls_last=False)
    last_of_entity = pl.col(EK).ne_missing(pl.col(EK).shift(-1))
    return out.filter(last_of_entity)


def _cast(frame: pl.DataFrame, column: str, kind: Kind, view: str) -> pl.Expr:
    """The column cast to the feature type, or a clear error when it is not that type."""
    dtype = frame.schema[column]
    ok = {
        Kind.FLOAT64: dtype.is_numeric(),
        Kind.FLOAT32: dtype.is_numeric(),
        Kind.INT64: dtype.is_integer(),
        Kind.INT32: dtype.is_integer(),
        Kind.BOOL: dtype == pl.Boolean,
        Kind.STRING: dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum),
    }[kind]
    if not ok:
        raise CashbackError(
            f"feature view {view!r}, column {column!r}: expected {kind.name.lower()}, got {dtype}"
        )
    return pl.col(column).cast(kind.dtype, strict=True)


def _raise_cast_error(frame: pl.DataFrame, exprs: list[pl.Expr], view: str) -> None:
    """Name the column whose cast failed (e.g. an int64 value out of the int32 range)."""
    for expr in exprs:
        try:
            frame.select(expr)
        except pl.exceptions.PolarsError as exc:
            column = expr.meta.output_name()
            raise CashbackError(
                f"feature view {view!r}, column {column!r}: a value does not fit the feature "
                f"type ({str(exc).splitlines()[0]})"
            ) from exc


def _utc(frame: pl.DataFrame, column: str, view: str) -> pl.Expr:
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise CashbackError(
            f"feature view {view!r}, column {column!r}: expected a datetime, got {dtype}"
        )
    expr = pl.col(column).dt.cast_time_unit("us")
    if dtype.time_zone is None:
        return expr.dt.replace_time_zone("UTC")
    return expr.dt.convert_time_zone("UTC")


def _entity_keys(frame: pl.DataFrame, layout: ViewLayout, version: int) -> pl.Series:
    """The serialized entity key of each row, as a Binary column (no Python objects)."""
    segment = encode_entity_keys([(k, frame[k.name]) for k in layout.join_keys], version)
    lengths = segment.lengths
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.arange(segment.width) < lengths[:, None]
    payload = segment.data[mask].tobytes()
    array = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(payload)]
    )
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)
    return series.alias(EK)


# ---------------------------------------------------------------- materialize


@dataclass(frozen=True)
class MaterializeReport:
    """What `materialize` did for one feature view.

    Attributes:
        feature_view: the view.
        start: start of the event time window (None: from the beginning).
        end: end of the window (inclusive, as Feast's file offline store).
        entities: entities with a row in the window (their latest row was offered).
        written: entities written (the others had a newer row stored).
        seconds: wall time.
    """

    feature_view: str
    start: datetime | None
    end: datetime
    entities: int
    written: int
    seconds: float


def materialize(
    store: FeatureStore,
    *,
    end: datetime | None = None,
    feature_views: Sequence[str] | None = None,
    start: datetime | None = None,
) -> list[MaterializeReport]:
    """Incremental materialization of file-sourced views, as `feast materialize-incremental`.

    For each view the window starts where the last materialization ended (Feast's registry
    records it, and this records its own the same way), else `end - ttl`, else at the
    beginning; it ends at `end` (default now). The latest row per entity in the window is
    read from the view's parquet source with polars and written with `write_online`.

    Args:
        store: the Feast repo.
        end: end of the window (default: now, UTC; naive means UTC).
        feature_views: views to materialize (default: every online view).
        start: override the start of the window for every view.

    Returns:
        One report per view.

    Raises:
        CashbackError: an unknown view, a view whose batch source is not a file, or any
            error of `write_online`.
    """
    target = online_target(store)
    end = _aware(end) if end is not None else datetime.now(UTC)
    views = (
        [store.get_feature_view(name) for name in feature_views]
        if feature_views is not None
        else [v for v in store.list_feature_views() if v.online]
    )
    if feature_views is not None:
        for name in feature_views:  # a clear error for an unknown name
            view_layout(store, name)
    reports = []
    for view in views:
        started = time.perf_counter()
        layout = layout_of(store, view)
        _refuse_precomputed(store, layout.name)
        window_start = _aware(start) if start is not None else _window_start(view, layout, end)
        if window_start is not None and window_start > end:  # already materialized past end
            reports.append(MaterializeReport(layout.name, window_start, end, 0, 0, 0.0))
            continue
        frame = _read_latest(store, view, layout, window_start, end)
        prepared = prepare(
            frame, layout, target, layout.timestamp_field, layout.created_timestamp_column
        )
        written = _write_prepared(target, layout, prepared, CHUNK_ROWS)
        store.registry.apply_materialization(
            view, store.project, window_start or EPOCH, end, commit=True
        )
        reports.append(
            MaterializeReport(
                feature_view=layout.name,
                start=window_start,
                end=end,
                entities=prepared.height,
                written=written,
                seconds=time.perf_counter() - started,
            )
        )
    return reports


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _window_start(view: object, layout: ViewLayout, end: datetime) -> datetime | None:
    last = getattr(view, "most_recent_end_time", None)
    if last is not None:
        return _aware(last)
    if layout.ttl is not None:
        return end - layout.ttl
    return None


def _read_latest(
    store: FeatureStore,
    view: object,
    layout: ViewLayout,
    start: datetime | None,
    end: datetime,
) -> pl.DataFrame:
    """The latest rows per entity of the view's parquet source within [start, end]."""
    source = getattr(view, "batch_source", None)
    if not isinstance(source, FileSource):
        raise CashbackError(
            f"feature view {layout.name!r}: only file (parquet) batch sources are materialized "
            f"here; its source is {type(source).__name__}: use `feast materialize`"
        )
    path = FileSource.get_uri_for_file_path(store.config.repo_path, source.path)
    mapping = dict(source.field_mapping or {})
    lazy = pl.scan_parquet(path)
    schema = lazy.collect_schema()
    renames = {old: new for old, new in mapping.items() if old in schema}
    if renames:
        lazy = lazy.rename(renames)
        schema = lazy.collect_schema()
    ts = layout.timestamp_field
    columns = [k.name for k in layout.join_keys] + [f.name for f in layout.features] + [ts]
    if layout.created_timestamp_column:
        columns.append(layout.created_timestamp_column)
    missing = [c for c in columns if c not in schema]
    if missing:
        raise CashbackError(
            f"feature view {layout.name!r}: source {path} lacks columns {missing} "
            f"({APPLY_HINT} after fixing the definitions, or rebuild the features)"
        )
    ts_dtype = schema[ts]
    if not isinstance(ts_dtype, pl.Datetime):
        raise CashbackError(f"source {path}: {ts!r} is {ts_dtype}, not a datetime")
    when = pl.col(ts)
    when = (
        when.dt.replace_time_zone("UTC")
        if ts_dtype.time_zone is None
        else when.dt.convert_time_zone("UTC")
    )
    window = when <= pl.lit(end)
    if start is not None:
        window &= when >= pl.lit(start)
    keys = [k.name for k in layout.join_keys]
    rows = lazy.select(columns).filter(window)
    newest = rows.group_by(keys).agg(pl.col(ts).max())
    return rows.join(newest, on=[*keys, ts], how="semi").collect()
