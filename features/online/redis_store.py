"""Feast's Redis online store: bulk writes on the wire protocol, and lookups.

Feast keeps one hash per entity: key = serialized EntityKey + project name; fields = the
4-byte murmur3 of `<view>:<feature>` holding the serialized Value, and `_ts:<view>` holding
the serialized Timestamp of the view's row. All views of an entity share the hash. Feast
writes with redis-py in two pipelines: one HMGET of `_ts:<view>` per entity, then one HSET
per entity whose stored time is older (plus EXPIRE when `key_ttl_seconds` is set).

`RedisWriter` sends the same commands, but builds the whole pipeline as one buffer of the
Redis protocol with numpy (`codec.pack_rows`) instead of one Python call per value. With a
Redis Cluster, where one connection cannot take every key, it falls back to redis-py's
pipeline with the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self, cast

import numpy as np
import polars as pl
import redis
from feast.infra.online_stores.redis import RedisOnlineStore

from cashback.errors import CashbackError
from features.online.codec import (
    I64,
    Segment,
    decimal_digits,
    key_prefix,
    pack_rows,
    ragged,
    segment_bytes,
    timestamp_nanos,
    timestamp_proto,
)
from features.online.layout import EK, EVENT_TS, ViewLayout

_SEND_ROWS = 5000
_SCAN_COUNT = 1000
_GLOB_SPECIAL = frozenset(b"*?[]\\")
CRLF = b"\r\n"


def client_for(config: Any) -> Any:
    """A redis-py client for Feast's `RedisOnlineStoreConfig` (Feast's own construction).

    Raises:
        CashbackError: the server does not answer.
    """
    client = RedisOnlineStore()._get_client(config)  # Feast's own connection rules
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CashbackError(
            f"redis online store {config.connection_string!r} is not reachable: {exc}"
        ) from exc
    return client


def supports_raw(client: Any) -> bool:
    """Whether one connection of the client takes every key (not a Redis Cluster)."""
    return type(client) is redis.Redis


def _bulk(raw: bytes) -> bytes:
    """One bulk string of the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def _take(segment: Segment, index: I64) -> Segment:
    """The rows `index` of a segment (constants stay as they are)."""
    if segment.data.shape[0] == 1 and len(segment.lengths) == 1:
        return segment
    return Segment(segment.data[index], segment.lengths[index])


def _bulk_segments(payload: Segment) -> list[Segment]:
    """A bulk string (`$`, length, CRLF, payload, CRLF) for each row."""
    return [
        Segment.constant(b"$"),
        decimal_digits(payload.lengths),
        Segment.constant(CRLF),
        payload,
        Segment.constant(CRLF),
    ]


def _keys_segment(keys: list[bytes]) -> Segment:
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ragged(offsets, np.frombuffer(b"".join(keys), dtype=np.uint8))


class RedisWriter:
    """Writes chunks of entity rows of one view into Feast's Redis hashes."""

    def __init__(
        self, config: Any, project: str, layout: ViewLayout, *, raw: bool | None = None
    ) -> None:
        """Prepare a writer (the connection opens on enter).

        Args:
            config: Feast's `RedisOnlineStoreConfig`.
            project: the Feast project.
            layout: the view.
            raw: send pre-built protocol buffers (default: yes, unless Redis Cluster).
        """
        self.config, self.project, self.layout, self.raw = config, project, layout, raw
        self._client: Any = None
        self._fields = [layout.redis_field(f.name) for f in layout.features]

    def __enter__(self) -> Self:
        """Connect."""
        self._client = client_for(self.config)
        if self.raw is None:
            self.raw = supports_raw(self._client)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connections."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def write(self, chunk: pl.DataFrame, values: list[Segment]) -> int:
        """Write one chunk of entities, skipping rows older than the stored ones.

        Args:
            chunk: the rows: `EK` (serialized entity key) and `EVENT_TS`, one per entity.
            values: the serialized values of each feature, in layout order.

        Returns:
            Entities written.
        """
        if chunk.height == 0:
            return 0
        keys = [ek + self.project.encode() for ek in chunk[EK].to_list()]
        stamps, nanos = _stamps(chunk[EVENT_TS])
        stored = self._stored_nanos(keys)
        # Feast skips a row unless it is newer; here a row as new as the stored one is
        # written too, so that re-running a materialization applies corrected values.
        index = np.flatnonzero(~(stored > nanos)).astype(np.int64)
        if len(index) == 0:
            return 0
        kept_keys = [keys[i] for i in index.tolist()]
        kept_stamps = [stamps[i] for i in index.tolist()]
        kept_values = [_take(v, index) for v in values]
        if self.raw:
            self._send_raw(kept_keys, kept_stamps, kept_values)
        else:
            self._send_pipeline(kept_keys, kept_stamps, kept_values)
        return len(index)

    def _stored_nanos(self, keys: list[bytes]) -> I64:
        """The stored `_ts:<view>` of each key in nanoseconds (-1 when absent)."""
        ts_field = self.layout.ts_field
        if self.raw:
            head = Segment.constant(b"*3\r\n$5\r\nHMGET\r\n")
            tail = Segment.constant(_bulk(ts_field))
            replies: list[Any] = []
            for start in range(0, len(keys), _SEND_ROWS):
                batch = keys[start : start + _SEND_ROWS]
                segments = [head, *_bulk_segments(_keys_segment(batch)), tail]
                buffer, _ = pack_rows(segments, len(batch))
                replies.extend(self._roundtrip(buffer, len(batch)))
        else:
            with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, [ts_field])
                replies = pipe.execute()
        cache: dict[bytes, int] = {}
        out = np.full(len(keys), -1, dtype=np.int64)
        for i, reply in enumerate(replies):
            raw = reply[0]
            if raw:
                found = cache.get(raw)
                if found is None:
                    found = cache[raw] = timestamp_nanos(raw)
                out[i] = found
        return out

    def _roundtrip(self, buffer: bytes, replies: int) -> list[Any]:
        """Send a pre-built pipeline on one connection and read its replies."""
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([buffer])
            return [conn.read_response() for _ in range(replies)]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _send_raw(self, keys: list[bytes], stamps: list[bytes], values: list[Segment]) -> None:
        argc = 2 + 2 * (len(values) + 1)
        ttl = self.config.key_ttl_seconds
        for start in range(0, len(keys), _SEND_ROWS):
            stop = min(start + _SEND_ROWS, len(keys))
            rows = np.arange(start, stop, dtype=np.int64)
            key_segment = _keys_segment(keys[start:stop])
            segments = [
                Segment.constant(b"*%d\r\n$4\r\nHSET\r\n" % argc),
                *_bulk_segments(key_segment),
                Segment.constant(_bulk(self.layout.ts_field)),
                *_bulk_segments(_keys_segment(stamps[start:stop])),
            ]
            for field, value in zip(self._fields, values, strict=True):
                segments.append(Segment.constant(_bulk(field)))
                segments.extend(_bulk_segments(_take(value, rows)))
            if ttl:
                segments.append(Segment.constant(b"*3\r\n$6\r\nEXPIRE\r\n"))
                segments.extend(_bulk_segments(key_segment))
                segments.append(Segment.constant(_bulk(str(int(ttl)).encode())))
            buffer, _ = pack_rows(segments, stop - start)
            self._roundtrip(buffer, (stop - start) * (2 if ttl else 1))

    def _send_pipeline(self, keys: list[bytes], stamps: list[bytes], values: list[Segment]) -> None:
        columns = [segment_bytes(v) for v in values]
        ttl = self.config.key_ttl_seconds
        ts_field = self.layout.ts_field
        for start in range(0, len(keys), _SEND_ROWS):
            with self._client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + _SEND_ROWS, len(keys))):
                    mapping: dict[bytes, bytes] = {ts_field: stamps[i]}
                    for field, column in zip(self._fields, columns, strict=True):
                        mapping[field] = column[i]
                    pipe.hset(keys[i], mapping=mapping)
                    if ttl:
                        pipe.expire(keys[i], int(ttl))
                pipe.execute()


def _stamps(series: pl.Series) -> tuple[list[bytes], I64]:
    """Serialized Timestamps and their nanoseconds (computed once per distinct value)."""
    cache: dict[Any, tuple[bytes, int]] = {}
    stamps: list[bytes] = []
    nanos = np.empty(series.len(), dtype=np.int64)
    for i, ts in enumerate(series.to_list()):
        hit = cache.get(ts)
        if hit is None:
            raw = timestamp_proto(ts)
            hit = cache[ts] = (raw, timestamp_nanos(raw))
        stamps.append(hit[0])
        nanos[i] = hit[1]
    return stamps, nanos


class RedisLookup:
    """Reads hash fields of a few entities (one HMGET each, pipelined)."""

    def __init__(self, config: Any, project: str) -> None:
        """Connect.

        Args:
            config: Feast's `RedisOnlineStoreConfig`.
            project: the Feast project.
        """
        self.client = client_for(config)
        self.project = project.encode()

    def fetch(self, keys: list[bytes], fields: list[bytes]) -> list[list[bytes | None]]:
        """The fields of each key (None where absent).

        Args:
            keys: serialized entity keys (without the project suffix).
            fields: hash fields to read.

        Returns:
            One list of values per key, in order.
        """
        suffix = self.project
        if len(keys) == 1:
            return [cast(list[bytes | None], self.client.hmget(keys[0] + suffix, fields))]
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key + suffix, fields)
            return cast(list[list[bytes | None]], pipe.execute())

    def _view_stamps(self, layout: ViewLayout, version: int) -> Iterator[bytes]:
        """The `_ts:<view>` of every entity of the view's join keys (a SCAN)."""
        prefix = key_prefix(layout.join_keys, version)
        pattern = _escape(prefix) + b"*" + _escape(self.project)
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                yield from self._stamps_of(batch, layout.ts_field)
                batch = []
        if batch:
            yield from self._stamps_of(batch, layout.ts_field)

    def _stamps_of(self, keys: Sequence[bytes], ts_field: bytes) -> Iterator[bytes]:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, ts_field)
            for raw in pipe.execute():
                if raw:
                    yield raw

    def has_rows(self, layout: ViewLayout, version: int) -> bool:
        """Whether any entity holds the view's fields (scans until the first one)."""
        return next(self._view_stamps(layout, version), None) is not None

    def newest_event_nanos(self, layout: ViewLayout, version: int) -> int | None:
        """The newest `_ts:<view>` over all entities (a full SCAN), None when none."""
        newest: int | None = None
        for raw in self._view_stamps(layout, version):
            nanos = timestamp_nanos(raw)
            newest = nanos if newest is None or nanos > newest else newest
        return newest

    def close(self) -> None:
        """Close the connections."""
        self.client.close()


def _escape(raw: bytes) -> bytes:
    return b"".join(b"\\" + bytes([b]) if b in _GLOB_SPECIAL else bytes([b]) for b in raw)
