"""Feast's online byte formats, built for whole columns at once with numpy.

Feast stores each (entity, feature) as a serialized `feast.types.Value` protobuf under a
serialized `EntityKey`. Building one protobuf object per value is what makes Feast's own
writes slow, so this module writes the same bytes directly:

- a scalar Value is one field of a oneof: a tag byte, then the payload (a little-endian
  double or float, a varint, or a length-prefixed UTF-8 string); a null is the empty message
  (zero bytes), which is also how Feast stores NaN, since its converter treats NaN as null;
- an EntityKey (serialization version 3) is `<I count`, then per join key (sorted by name)
  `<I STRING`, `<I len`, name, then per value `<I value type`, `<I len`, bytes (UTF-8 for a
  string, `<q` for int64, `<i` for int32); version 2 omits the count and the name lengths;
- the SQLite store also keeps `value_text`, Python's `str()` of the value.

Columns are encoded into `Segment`s: a (rows, width) byte matrix with each row's bytes
left-aligned and a length per row. Segments are then either laid side by side at fixed
offsets (`pad_rows`, for SQL to slice) or packed tightly (`pack_rows`, for the Redis wire
protocol). The tests compare every encoding byte for byte with Feast's own functions.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]
from numpy.typing import NDArray

from cashback.errors import CashbackError

U8: TypeAlias = NDArray[np.uint8]
I64: TypeAlias = NDArray[np.int64]

# feast.types.ValueType.Enum numbers used in serialized entity keys.
_VALUE_TYPE_STRING = 2
_VALUE_TYPE_INT32 = 3
_VALUE_TYPE_INT64 = 4
_VARINT_BYTES = 10
# Python's repr switches to exponent notation below 1e-4 and from 1e16 on; polars does not.
_REPR_SMALL, _REPR_LARGE = 1e-4, 1e16
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class Kind(enum.Enum):
    """A scalar feature or join key type: its Value proto field tag and polars dtype."""

    FLOAT64 = 0x29  # double_val = 5, fixed64
    FLOAT32 = 0x35  # float_val = 6, fixed32
    INT64 = 0x20  # int64_val = 4, varint
    INT32 = 0x18  # int32_val = 3, varint
    BOOL = 0x38  # bool_val = 7, varint
    STRING = 0x12  # string_val = 2, length-delimited

    @property
    def tag(self) -> int:
        """The protobuf tag byte of the Value oneof field."""
        return self.value

    @property
    def dtype(self) -> pl.DataType:
        """The polars dtype a column of this kind is cast to before encoding."""
        return _DTYPES[self]


_DTYPES: dict[Kind, pl.DataType] = {
    Kind.FLOAT64: pl.Float64(),
    Kind.FLOAT32: pl.Float32(),
    Kind.INT64: pl.Int64(),
    Kind.INT32: pl.Int32(),
    Kind.BOOL: pl.Boolean(),
    Kind.STRING: pl.String(),
}


@dataclass(frozen=True)
class Segment:
    """One piece of every row: a (rows, width) byte matrix, each row left-aligned.

    Attributes:
        data: the bytes, shape (rows, width); shape (1, width) for a constant.
        lengths: the used length of each row, shape (rows,) or (1,) for a constant.
    """

    data: U8
    lengths: I64

    @property
    def width(self) -> int:
        """The widest row."""
        return int(self.data.shape[1])

    @classmethod
    def constant(cls, raw: bytes) -> Segment:
        """The same bytes in every row."""
        data = np.frombuffer(raw, dtype=np.uint8).reshape(1, len(raw))
        return cls(data=data, lengths=np.array([len(raw)], dtype=np.int64))


def pack_rows(segments: Sequence[Segment], n: int) -> tuple[bytes, I64]:
    """Concatenate the segments of each row, rows one after the other, without padding.

    Args:
        segments: the pieces of a row, in order.
        n: the number of rows.

    Returns:
        All rows as one buffer, and the n + 1 row offsets into it.
    """
    matrix, keep = _layout(segments, n, with_mask=True)
    row_lengths = np.zeros(n, dtype=np.int64)
    for segment in segments:
        row_lengths += segment.lengths
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_lengths, out=offsets[1:])
    assert keep is not None
    return matrix[keep].tobytes(), offsets


def pad_rows(segments: Sequence[Segment], n: int) -> tuple[bytes, int]:
    """Lay the segments side by side at fixed offsets; each row is `width` bytes.

    Args:
        segments: the pieces of a row, in order.
        n: the number of rows.

    Returns:
        All rows as one buffer, and the row width.
    """
    matrix, _ = _layout(segments, n, with_mask=False)
    return matrix.tobytes(), int(matrix.shape[1])


def _layout(segments: Sequence[Segment], n: int, *, with_mask: bool) -> tuple[U8, Any]:
    """The (n, total width) matrix of the segments, and optionally which bytes are used."""
    width = sum(s.width for s in segments)
    matrix = np.zeros((n, width), dtype=np.uint8)
    keep = np.zeros((n, width), dtype=np.bool_) if with_mask else None
    col = 0
    for segment in segments:
        w = segment.width
        if w == 0:
            continue
        matrix[:, col : col + w] = segment.data
        if keep is not None:
            keep[:, col : col + w] = np.arange(w) < segment.lengths[:, None]
        col += w
    return matrix, keep


def split_packed(buffer: bytes, offsets: I64) -> list[bytes]:
    """The rows of a `pack_rows` buffer as separate bytes objects."""
    return [buffer[a:b] for a, b in itertools.pairwise(offsets.tolist())]


def split_fixed(buffer: bytes, width: int) -> list[bytes]:
    """The rows of a `pad_rows` buffer as separate bytes objects."""
    return [buffer[i : i + width] for i in range(0, len(buffer), width)] if width else []


def segment_bytes(segment: Segment) -> list[bytes]:
    """Each row of a segment as a bytes object (its used length only)."""
    buffer, offsets = pack_rows([segment], len(segment.lengths))
    return split_packed(buffer, offsets)


# ---------------------------------------------------------------- values


def encode_values(series: pl.Series, kind: Kind) -> Segment:
    """Serialized Value protos of a column, as Feast's `python_values_to_proto_values` makes.

    Nulls (and NaN for floats) become the empty message, as in Feast.

    Args:
        series: the column, already cast to `kind.dtype`.
        kind: the feature type.

    Returns:
        One serialized Value per row.

    Raises:
        CashbackError: an int32 value out of range.
    """
    n = len(series)
    if kind in (Kind.FLOAT64, Kind.FLOAT32):
        size = 8 if kind is Kind.FLOAT64 else 4
        x = series.to_numpy()  # nulls are NaN
        data = np.empty((n, 1 + size), dtype=np.uint8)
        data[:, 0] = kind.tag
        data[:, 1:] = x.astype("<f8" if size == 8 else "<f4").view(np.uint8).reshape(n, size)
        lengths = np.where(np.isnan(x), 0, 1 + size).astype(np.int64)
        return Segment(data, lengths)
    null = series.is_null().to_numpy()
    if kind is Kind.BOOL:
        data = np.empty((n, 2), dtype=np.uint8)
        data[:, 0] = kind.tag
        data[:, 1] = series.fill_null(value=False).to_numpy().astype(np.uint8)
        return Segment(data, np.where(null, 0, 2).astype(np.int64))
    if kind in (Kind.INT64, Kind.INT32):
        ints = series.cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64)
        if (
            kind is Kind.INT32
            and len(ints)
            and (ints.min() < _INT32_MIN or ints.max() > _INT32_MAX)
        ):
            raise CashbackError(f"column {series.name!r}: value out of the int32 range")
        body, body_len = varints(ints.view(np.uint64))
        data = np.empty((n, 1 + _VARINT_BYTES), dtype=np.uint8)
        data[:, 0] = kind.tag
        data[:, 1:] = body
        return Segment(data, np.where(null, 0, 1 + body_len).astype(np.int64))
    offsets, payload = utf8_buffers(series)
    lengths = np.diff(offsets)
    head, head_len = varints(lengths.astype(np.uint64))
    prefix = np.concatenate([np.full((n, 1), kind.tag, dtype=np.uint8), head], axis=1)
    segment = ragged(offsets, payload, prefix=prefix, prefix_lengths=1 + head_len)
    return Segment(segment.data, np.where(null, 0, segment.lengths).astype(np.int64))


def varints(u: NDArray[np.uint64]) -> tuple[U8, I64]:
    """Protobuf base-128 varints of unsigned 64-bit values: a (n, 10) matrix and lengths."""
    n = len(u)
    groups = np.empty((n, _VARINT_BYTES), dtype=np.uint64)
    for k in range(_VARINT_BYTES):
        groups[:, k] = (u >> np.uint64(7 * k)) & np.uint64(0x7F)
    length = np.ones(n, dtype=np.int64)
    for k in range(1, _VARINT_BYTES):
        length += (u >> np.uint64(7 * k)) != 0
    continuation = np.arange(_VARINT_BYTES) < (length - 1)[:, None]
    data = (groups | (continuation.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return data, length


def varint(value: int) -> bytes:
    """One protobuf varint (non-negative value)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def utf8_buffers(series: pl.Series) -> tuple[I64, U8]:
    """The UTF-8 bytes of a string column: n + 1 offsets into one buffer (nulls are empty)."""
    array = pc.cast(series.to_arrow(), pa.large_binary())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.fill_null(b"") if array.null_count else array
    buffers = array.buffers()
    start = array.offset
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[start : start + len(array) + 1].copy()
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    return offsets, data


def ragged(
    offsets: I64, payload: U8, *, prefix: U8 | None = None, prefix_lengths: I64 | None = None
) -> Segment:
    """A segment from variable-length rows (offsets into payload), after a per-row prefix."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    if prefix is None or prefix_lengths is None:
        prefix = np.zeros((n, 0), dtype=np.uint8)
        prefix_lengths = np.zeros(n, dtype=np.int64)
    head_width = prefix.shape[1]
    width = head_width + (int(lengths.max()) if n else 0)
    data = np.zeros((n, width), dtype=np.uint8)
    data[:, :head_width] = prefix
    total = int(offsets[-1] - offsets[0]) if n else 0
    if total:
        rows = np.repeat(np.arange(n), lengths)
        within = np.arange(total) - np.repeat(offsets[:-1] - offsets[0], lengths)
        data[rows, prefix_lengths[rows] + within] = payload[offsets[0] : offsets[-1]]
    return Segment(data, (prefix_lengths + lengths).astype(np.int64))


# ---------------------------------------------------------------- value_text (SQLite)


def value_texts(series: pl.Series, kind: Kind) -> Segment:
    """UTF-8 of `str(value)`, what Feast's SQLite store puts in `value_text`.

    Rows whose value is null get an empty text; the caller stores NULL for them (their
    serialized value is empty), as Feast does.

    Args:
        series: the column, already cast to `kind.dtype`.
        kind: the feature type.

    Returns:
        The texts as a segment.
    """
    if kind in (Kind.FLOAT64, Kind.FLOAT32):
        texts = _float_reprs(series.cast(pl.Float64))
    elif kind is Kind.BOOL:
        texts = pl.select(
            pl.when(series).then(pl.lit("True")).otherwise(pl.lit("False"))
        ).to_series()
    else:
        texts = series.cast(pl.String)
    offsets, payload = utf8_buffers(texts)
    return ragged(offsets, payload)


def _float_reprs(values: pl.Series) -> pl.Series:
    """`repr()` of each float: polars' shortest round-trip digits, Python's exponent form.

    Both print the shortest digits that round-trip, so they agree except where Python
    switches to exponent notation (|x| < 1e-4 or >= 1e16) and for infinities; those few
    values are formatted by Python itself.
    """
    x = values.to_numpy()
    texts = values.cast(pl.String)
    magnitude = np.abs(x)
    with np.errstate(invalid="ignore"):
        python_form = ((magnitude < _REPR_SMALL) & (x != 0)) | (magnitude >= _REPR_LARGE)
    index = np.flatnonzero(python_form & ~np.isnan(x))
    if len(index):
        texts = texts.scatter(index, [repr(float(v)) for v in x[index].tolist()])
    return texts


def fixed_digits(values: I64, width: int) -> U8:
    """Zero-padded ASCII decimal of non-negative values, a (n, width) matrix."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def decimal_digits(values: I64) -> Segment:
    """ASCII decimal of non-negative values without padding (the Redis protocol's lengths)."""
    n = len(values)
    top = int(values.max()) if n else 0
    width = len(str(top))
    count = np.ones(n, dtype=np.int64)
    for k in range(1, width):
        count += values >= 10**k
    padded = fixed_digits(values, width)
    # Shift each row left by its leading zeros.
    shift = width - count
    cols = (np.arange(width)[None, :] + shift[:, None]).clip(max=width - 1)
    data = np.take_along_axis(padded, cols, axis=1)
    return Segment(data, count)


# ---------------------------------------------------------------- entity keys


@dataclass(frozen=True)
class KeySpec:
    """A join key of an entity key: its name and type."""

    name: str
    kind: Kind


def _key_value_type(kind: Kind) -> int:
    if kind is Kind.STRING:
        return _VALUE_TYPE_STRING
    if kind is Kind.INT64:
        return _VALUE_TYPE_INT64
    if kind is Kind.INT32:
        return _VALUE_TYPE_INT32
    raise CashbackError(f"join keys of type {kind.name} are not supported (string, int64, int32)")


def key_prefix(keys: Sequence[KeySpec], version: int) -> bytes:
    """The part of a serialized entity key that names the join keys (sorted by name)."""
    if version < 2:
        raise CashbackError(
            f"entity_key_serialization_version {version} is not supported: set it to 3 in "
            "feature_store.yaml"
        )
    parts = [struct.pack("<I", len(keys))] if version > 2 else []
    for key in sorted(keys, key=lambda k: k.name):
        name = key.name.encode("utf8")
        parts.append(struct.pack("<I", _VALUE_TYPE_STRING))
        if version > 2:
            parts.append(struct.pack("<I", len(name)))
        parts.append(name)
    return b"".join(parts)


def encode_entity_keys(columns: Sequence[tuple[KeySpec, pl.Series]], version: int) -> Segment:
    """Serialized entity keys of whole columns (Feast's `serialize_entity_key`).

    Args:
        columns: each join key with its column (cast to the key's dtype, no nulls).
        version: `entity_key_serialization_version` of the repo.

    Returns:
        One serialized key per row, as a segment.
    """
    ordered = sorted(columns, key=lambda c: c[0].name)
    n = len(ordered[0][1])
    segments = [Segment.constant(key_prefix([c[0] for c in ordered], version))]
    for spec, series in ordered:
        value_type = struct.pack("<I", _key_value_type(spec.kind))
        if spec.kind is Kind.STRING:
            offsets, payload = utf8_buffers(series)
            lengths = np.diff(offsets).astype("<u4")
            segments.append(Segment.constant(value_type))
            segments.append(
                Segment(lengths.view(np.uint8).reshape(n, 4), np.full(n, 4, dtype=np.int64))
            )
            segments.append(ragged(offsets, payload))
        else:
            size, fmt = (8, "<i8") if spec.kind is Kind.INT64 else (4, "<i4")
            body = series.to_numpy().astype(fmt).view(np.uint8).reshape(n, size)
            segments.append(Segment.constant(value_type + struct.pack("<I", size)))
            segments.append(Segment(body, np.full(n, size, dtype=np.int64)))
    buffer, offsets = pack_rows(segments, n)
    return ragged(offsets, np.frombuffer(buffer, dtype=np.uint8))


class EntityKeyEncoder:
    """Serializes one entity key at a time, for lookups (same bytes as the bulk encoder)."""

    def __init__(self, keys: Sequence[KeySpec], version: int) -> None:
        """Prepare the constant prefix and one packer per join key (in name order).

        Args:
            keys: the join keys.
            version: `entity_key_serialization_version` of the repo.
        """
        self.keys = tuple(sorted(keys, key=lambda k: k.name))
        self._prefix = key_prefix(self.keys, version)
        self._packers = [_key_packer(k) for k in self.keys]

    def encode(self, values: Sequence[Any]) -> bytes:
        """The serialized key of one row; values in the order of `self.keys`."""
        if len(self._packers) == 1:
            return self._prefix + self._packers[0](values[0])
        return self._prefix + b"".join(p(v) for p, v in zip(self._packers, values, strict=True))


def _key_packer(spec: KeySpec) -> Callable[[Any], bytes]:
    head = struct.pack("<I", _key_value_type(spec.kind))
    if spec.kind is Kind.STRING:
        length = struct.Struct("<I").pack

        def pack_string(value: Any) -> bytes:
            if not isinstance(value, str):
                raise CashbackError(
                    f"join key {spec.name!r} is a string; got {type(value).__name__} {value!r}"
                )
            raw = value.encode("utf8")
            return head + length(len(raw)) + raw

        return pack_string
    body = struct.Struct("<q" if spec.kind is Kind.INT64 else "<i")
    head += struct.pack("<I", body.size)

    def pack_int(value: Any) -> bytes:
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise CashbackError(
                f"join key {spec.name!r} is an integer; got {type(value).__name__} {value!r}"
            )
        try:
            return head + body.pack(int(value))
        except struct.error as exc:
            raise CashbackError(f"join key {spec.name!r}: {value} is out of range") from exc

    return pack_int


# ---------------------------------------------------------------- timestamps


def sqlite_epoch(ts: datetime) -> int:
    """Feast's SQLite `event_ts`: the naive UTC time through `int(datetime.timestamp())`.

    Feast registers `int(val.timestamp())` as sqlite3's datetime adapter and passes naive
    UTC datetimes, which Python reads as local time: on a UTC machine this is the Unix
    time; elsewhere it is shifted, and Feast's reader shifts it back the same way.
    """
    naive = ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts
    return int(naive.timestamp())


def sqlite_datetime(value: int) -> datetime:
    """What Feast's SQLite reader makes of a stored `event_ts` (aware, UTC)."""
    return datetime.fromtimestamp(int(value)).replace(tzinfo=UTC)  # noqa: DTZ006 - as Feast


def timestamp_proto(ts: datetime) -> bytes:
    """The serialized `google.protobuf.Timestamp` Feast's Redis store keeps in `_ts:<view>`."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    proto = Timestamp()
    proto.FromDatetime(aware)
    raw: bytes = proto.SerializeToString()
    return raw


def timestamp_from_proto(raw: bytes) -> datetime:
    """The event time of a `_ts:<view>` field (aware, UTC), as Feast's Redis reader makes it."""
    proto = Timestamp.FromString(raw)
    return datetime.fromtimestamp(proto.seconds + proto.nanos / 1e9, tz=UTC)


def timestamp_nanos(raw: bytes) -> int:
    """Nanoseconds since the epoch of a serialized Timestamp (Feast's Redis comparison)."""
    proto = Timestamp.FromString(raw)
    return int(proto.seconds) * 1_000_000_000 + int(proto.nanos)


# ---------------------------------------------------------------- decoding


_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from


def _read_double(raw: bytes | None) -> Any:
    if raw and len(raw) == 9 and raw[0] == Kind.FLOAT64.tag:
        return _DOUBLE(raw, 1)[0]
    return decode_slow(raw)


def _read_float(raw: bytes | None) -> Any:
    if raw and len(raw) == 5 and raw[0] == Kind.FLOAT32.tag:
        return _FLOAT(raw, 1)[0]
    return decode_slow(raw)


def _read_int64(raw: bytes | None) -> Any:
    if raw and len(raw) == 2 and raw[0] == Kind.INT64.tag:
        return raw[1]  # a one-byte varint: 0..127
    return decode_slow(raw)


def _read_int32(raw: bytes | None) -> Any:
    if raw and len(raw) == 2 and raw[0] == Kind.INT32.tag:
        return raw[1]
    return decode_slow(raw)


def _read_bool(raw: bytes | None) -> Any:
    if raw and len(raw) == 2 and raw[0] == Kind.BOOL.tag and raw[1] < 2:
        return raw[1] == 1
    return decode_slow(raw)


def _read_string(raw: bytes | None) -> Any:
    # A one-byte length (< 128) equal to the rest of the bytes.
    if raw and len(raw) >= 2 and raw[0] == Kind.STRING.tag and raw[1] == len(raw) - 2 < 0x80:
        return raw[2:].decode("utf8")
    return decode_slow(raw)


_DECODERS: dict[Kind, Callable[[bytes | None], Any]] = {
    Kind.FLOAT64: _read_double,
    Kind.FLOAT32: _read_float,
    Kind.INT64: _read_int64,
    Kind.INT32: _read_int32,
    Kind.BOOL: _read_bool,
    Kind.STRING: _read_string,
}


def decoder(kind: Kind) -> Callable[[bytes | None], Any]:
    """A function from a stored Value (or None) to what `OnlineResponse.to_dict` returns.

    The common encodings are read directly; anything else (another oneof field than the
    declared type, a multi-byte varint, a long string) goes through Feast's protobuf and
    `feast_value_type_to_python_type`, so results always match the SDK.
    """
    return _DECODERS[kind]


def decode_slow(raw: bytes | None) -> Any:
    """Any stored Value through Feast's own conversion (None for empty or absent)."""
    if not raw:
        return None
    return feast_value_type_to_python_type(ValueProto.FromString(raw))
