"""write_online and materialize store what Feast stores, fast, incrementally, or fail clearly."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from cashback.errors import CashbackError
from features.online import codec, materialize, redis_store, write_online
from features.online.codec import Kind
from tests.features.online.conftest import (
    PROJECT,
    T0,
    T1,
    ToyRepo,
    device_frame,
    make_repo,
    redis_yaml,
    risk_frame,
    stats_frame,
)

TABLES = ("toy_stats", "toy_risk", "toy_device")


def stored(repo: ToyRepo) -> Any:
    """Everything the online store holds: SQLite rows of every table, or every Redis hash."""
    config = repo.reopen().config
    if repo.online == "sqlite":
        with sqlite3.connect(repo.root / "online.db") as conn:
            return {
                table: sorted(conn.execute(f'SELECT * FROM "{PROJECT}_{table}"').fetchall())
                for table in TABLES
            }
    host_port, db = config.online_store.connection_string.split(",db=")
    host, port = host_port.split(":")
    client = redis.Redis(host=host, port=int(port), db=int(db))
    try:
        return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


def write_all_ours(repo: ToyRepo, chunk_rows: int = 20_000) -> dict[str, int]:
    return {
        "toy_stats": write_online(repo.store, "toy_stats", stats_frame(), chunk_rows=chunk_rows),
        "toy_risk": write_online(repo.store, "toy_risk", risk_frame(), chunk_rows=chunk_rows),
        "toy_device": write_online(repo.store, "toy_device", device_frame(), chunk_rows=chunk_rows),
    }


def write_all_feast(repo: ToyRepo) -> None:
    store = repo.reopen()
    for name, frame in (
        ("toy_stats", stats_frame()),
        ("toy_risk", risk_frame()),
        ("toy_device", device_frame()),
    ):
        store.write_to_online_store(name, frame.to_pandas())


# ---------------------------------------------------------------- same bytes as Feast


@pytest.mark.parametrize("chunk_rows", [20_000, 5], ids=["one_chunk", "chunks_of_5"])
def test_write_online_stores_exactly_what_feast_write_to_online_store_stores(
    repo: ToyRepo, twin: ToyRepo, chunk_rows: int
) -> None:
    # given the same rows (nulls, NaN, unicode, extreme ints, float32, int32, int keys)
    # when ours writes them into one store (in one chunk, or chunks of 5 entities) and
    # Feast's SDK into the other
    written = write_all_ours(repo, chunk_rows)
    write_all_feast(twin)

    # then both stores hold the same rows or hashes, byte for byte
    assert written == {"toy_stats": 12, "toy_risk": 3, "toy_device": 3}
    ours, feasts = stored(repo), stored(twin)
    assert ours == feasts
    assert len(ours) > 0


def test_materialize_stores_exactly_what_feast_materialize_stores(
    repo: ToyRepo, twin: ToyRepo
) -> None:
    # given both repos over the same parquet sources
    # when ours materializes up to T1 and Feast materializes the same window
    reports = materialize(repo.store, end=T1)
    twin.reopen().materialize(T1 - timedelta(days=30), T1)

    # then the stores are identical and every view's entities were written
    assert stored(repo) == stored(twin)
    assert {r.feature_view: (r.entities, r.written) for r in reports} == {
        "toy_stats": (12, 12),
        "toy_risk": (3, 3),
        "toy_device": (3, 3),
    }


@pytest.mark.parametrize("online", ["redis"], indirect=True)
def test_redis_pipeline_fallback_writes_the_same_hashes_as_the_raw_protocol(
    repo: ToyRepo, twin: ToyRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given one store written on the raw protocol path
    write_all_ours(repo)

    # when the other is written through redis-py's pipeline (the Redis Cluster path)
    monkeypatch.setattr(redis_store, "supports_raw", lambda client: False)
    write_all_ours(twin)

    # then the hashes are the same
    assert stored(repo) == stored(twin)


def test_redis_key_ttl_seconds_sets_an_expiry_as_feast_does(
    tmp_path: Any, redis_client: redis.Redis, redis_address: str
) -> None:
    # given a Redis store configured with key_ttl_seconds
    yaml = redis_yaml(redis_address) + "  key_ttl_seconds: 3600\n"
    repo = make_repo(tmp_path / "ttl", yaml, online="redis")

    # when rows are written
    write_online(repo.store, "toy_stats", stats_frame())

    # then every entity hash expires within the hour
    ttls = [redis_client.ttl(key) for key in redis_client.scan_iter()]
    assert len(ttls) == 12
    assert all(0 < t <= 3600 for t in ttls)


# ---------------------------------------------------------------- incremental semantics


def test_older_rows_never_overwrite_newer_ones_and_equal_times_do(repo: ToyRepo) -> None:
    # given the stats written at T0
    write_online(repo.store, "toy_stats", stats_frame())
    before = repo.sdk("toy_v1", ["c000", "c001", "c002"])

    # when c000 comes again an hour older, c001 a day newer, c002 at the same time
    later = stats_frame().filter(pl.col("customer_id").is_in(["c000", "c001", "c002"]))
    later = later.with_columns(
        spend=pl.Series([111.0, 222.0, 333.0]),
        event_timestamp=pl.Series([T0 - timedelta(hours=1), T1, T0]),
    )
    written = write_online(repo.store, "toy_stats", later)

    # then only the newer and the equal rows are applied
    after = repo.sdk("toy_v1", ["c000", "c001", "c002"])
    assert written == 2
    assert after["spend"] == [before["spend"][0], 222.0, 333.0]
    assert after["orders"] == before["orders"]


def test_the_latest_row_of_each_entity_in_a_frame_wins_whatever_the_row_order(
    repo: ToyRepo,
) -> None:
    # given two rows of c000 where the newer one comes first
    rows = stats_frame().head(1)
    rows = pl.concat(
        [
            rows.with_columns(spend=pl.lit(2.0), event_timestamp=pl.lit(T1)),
            rows.with_columns(spend=pl.lit(1.0), event_timestamp=pl.lit(T0)),
        ]
    )

    # when written
    written = write_online(repo.store, "toy_stats", rows)

    # then one entity is written, with the newer value
    assert written == 1
    assert repo.sdk("toy_v1", ["c000"])["spend"] == [2.0]


def test_materialize_is_incremental_and_records_the_window_in_the_registry(
    repo: ToyRepo,
) -> None:
    # given a source with two snapshots: T0 and T1 with other values
    first = stats_frame()
    second = first.with_columns(spend=pl.col("spend") + 100.0, event_timestamp=pl.lit(T1))
    pl.concat([first, second]).write_parquet(repo.sources["toy_stats"])

    # when materialized up to just after T0, then up to just after T1
    early = materialize(repo.store, end=T0 + timedelta(hours=1), feature_views=["toy_stats"])
    early_spend = repo.sdk("toy_v1", ["c000"])["spend"]
    late = materialize(repo.store, end=T1 + timedelta(hours=1), feature_views=["toy_stats"])

    # then each run wrote the latest values of its window, the second starting where the
    # first ended (as recorded in Feast's registry)
    assert early_spend == [1.5]
    assert early[0].start == T0 + timedelta(hours=1) - timedelta(days=30)  # end - ttl
    assert repo.sdk("toy_v1", ["c000"])["spend"] == [101.5]
    assert late[0].start == T0 + timedelta(hours=1)
    assert late[0].entities == 12
    view = repo.reopen().get_feature_view("toy_stats")
    assert view.most_recent_end_time == T1 + timedelta(hours=1)


def test_materialize_with_nothing_new_writes_nothing(repo: ToyRepo) -> None:
    # given a materialized store
    materialize(repo.store, end=T1)

    # when materialized again with no newer rows in the source
    again = materialize(repo.store, end=T1 + timedelta(days=1))

    # then no entity is offered nor written
    assert {r.entities for r in again} == {0}
    assert {r.written for r in again} == {0}


def test_materializing_to_an_end_before_the_last_one_changes_nothing(repo: ToyRepo) -> None:
    # given a store materialized up to T1
    materialize(repo.store, end=T1)
    before = stored(repo)

    # when asked to materialize up to an earlier time
    again = materialize(repo.store, end=T0)

    # then nothing is read or written and the registry still says T1
    assert {(r.entities, r.written) for r in again} == {(0, 0)}
    assert stored(repo) == before
    assert repo.reopen().get_feature_view("toy_stats").most_recent_end_time == T1


# ---------------------------------------------------------------- bad input


def test_missing_columns_are_named(repo: ToyRepo) -> None:
    with pytest.raises(CashbackError, match=r"lack columns \['orders'\]"):
        write_online(repo.store, "toy_stats", stats_frame().drop("orders"))


def test_a_column_of_the_wrong_type_is_named_with_the_expected_type(repo: ToyRepo) -> None:
    frame = stats_frame().with_columns(pl.col("spend").cast(pl.String))
    with pytest.raises(CashbackError, match=r"'spend': expected float64, got String"):
        write_online(repo.store, "toy_stats", frame)


def test_null_join_keys_are_refused(repo: ToyRepo) -> None:
    frame = stats_frame().with_columns(
        customer_id=pl.when(pl.col("orders") == 0).then(None).otherwise(pl.col("customer_id"))
    )
    with pytest.raises(CashbackError, match=r"nulls in customer_id \(1 rows\)"):
        write_online(repo.store, "toy_stats", frame)


def test_an_unknown_view_lists_the_known_ones(repo: ToyRepo) -> None:
    with pytest.raises(CashbackError, match=r"unknown feature view 'nope'; known: toy_device"):
        write_online(repo.store, "nope", stats_frame())


def test_an_int32_value_out_of_range_is_refused(repo: ToyRepo) -> None:
    frame = risk_frame().with_columns(pl.col("flags").cast(pl.Int64) * 2**40)
    with pytest.raises(CashbackError, match="column 'flags': a value does not fit"):
        write_online(repo.store, "toy_risk", frame)


@pytest.mark.parametrize("online", ["sqlite"], indirect=True)
def test_a_store_that_was_never_applied_names_the_command_to_run(repo: ToyRepo) -> None:
    # given an online store file removed after `apply`
    (repo.root / "online.db").unlink()

    # when writing, then the error says to apply the definitions
    with pytest.raises(CashbackError, match="run `cashback features apply`"):
        write_online(repo.store, "toy_stats", stats_frame())


@pytest.mark.parametrize("online", ["sqlite"], indirect=True)
def test_a_failed_write_leaves_the_store_as_it_was(
    repo: ToyRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a store holding the T0 rows
    write_online(repo.store, "toy_stats", stats_frame())
    before = stored(repo)

    # when a later write fails in its second chunk
    from features.online import writer

    calls = {"n": 0}
    real = writer.encode_values

    def failing(series: pl.Series, kind: Kind) -> codec.Segment:
        calls["n"] += 1
        if calls["n"] > 4:  # the 4 features of the first chunk pass
            raise RuntimeError("disk on fire")
        return real(series, kind)

    monkeypatch.setattr(writer, "encode_values", failing)
    newer = stats_frame().with_columns(spend=pl.lit(9.0), event_timestamp=pl.lit(T1))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_online(repo.store, "toy_stats", newer, chunk_rows=5)

    # then nothing of it was committed
    assert stored(repo) == before


# ---------------------------------------------------------------- the encodings themselves


FEAST_TYPES = {
    Kind.FLOAT64: ValueType.DOUBLE,
    Kind.FLOAT32: ValueType.FLOAT,
    Kind.INT64: ValueType.INT64,
    Kind.INT32: ValueType.INT32,
    Kind.BOOL: ValueType.BOOL,
    Kind.STRING: ValueType.STRING,
}
_rng = np.random.default_rng(3)
SAMPLES: dict[Kind, list[Any]] = {
    Kind.FLOAT64: [
        0.0, -0.0, 1.5, None, float("nan"), float("inf"), -float("inf"), 1e-4, 9.99e-5, 1e16,
        9999999999999998.0, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3,
        *(_rng.normal(size=200) * 10.0 ** _rng.integers(-12, 22, size=200)).tolist(),
    ],
    Kind.FLOAT32: [0.0, 0.1, None, 1e-7, 3.4e38, -2.5, float("nan")],
    Kind.INT64: [0, 1, 127, 128, 16383, 16384, -1, None, 2**63 - 1, -(2**63), 2**35],
    Kind.INT32: [0, 1, -1, 2**31 - 1, -(2**31), None, 300],
    Kind.BOOL: [True, False, None],
    Kind.STRING: ["", "a", "é" * 70, None, "x" * 200, "日本", "a\x00b"],
}  # fmt: skip


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name.lower())
def test_values_and_texts_are_byte_identical_to_feasts_protos(kind: Kind) -> None:
    # given a column of awkward values
    series = pl.Series("x", SAMPLES[kind], dtype=kind.dtype, strict=False)

    # when encoded by ours and by Feast's converter (floats from numpy, as its
    # materialization passes them; the others as Python values)
    ours = codec.segment_bytes(codec.encode_values(series, kind))
    texts = codec.segment_bytes(codec.value_texts(series, kind))
    floats = kind in (Kind.FLOAT64, Kind.FLOAT32)
    values = series.to_numpy() if floats else series.to_list()
    protos = python_values_to_proto_values(values, FEAST_TYPES[kind])

    # then the serialized values, the value_text column and the decoded values agree
    assert ours == [p.SerializeToString() for p in protos]
    ours_texts = [None if not v else t.decode() for v, t in zip(ours, texts, strict=True)]
    assert ours_texts == [extract_text_and_num(p, compute_num=False)[0] for p in protos]
    decode = codec.decoder(kind)
    expected = [codec.decode_slow(p.SerializeToString()) for p in protos]
    assert [decode(v) for v in ours] == pytest.approx(expected, nan_ok=True)


def test_entity_keys_are_byte_identical_to_feasts_serialize_entity_key() -> None:
    # given two-key entities (int64 and string, out of name order) and one-key ones
    pairs = [(1, "x"), (-5, "yy"), (2**62, ""), (0, "ünï")]
    two = [codec.KeySpec("z_id", Kind.INT64), codec.KeySpec("a_id", Kind.STRING)]
    columns = [
        (two[0], pl.Series([p[0] for p in pairs])),
        (two[1], pl.Series([p[1] for p in pairs])),
    ]

    # when serialized in bulk, one at a time, and by Feast
    bulk = codec.segment_bytes(codec.encode_entity_keys(columns, 3))
    single = [codec.EntityKeyEncoder(two, 3).encode((s, i)) for i, s in pairs]
    feasts = [
        serialize_entity_key(
            EntityKeyProto(
                join_keys=["z_id", "a_id"],
                entity_values=[ValueProto(int64_val=i), ValueProto(string_val=s)],
            ),
            entity_key_serialization_version=3,
        )
        for i, s in pairs
    ]

    # then all three agree
    assert bulk == feasts
    assert single == feasts


def test_a_join_key_of_the_wrong_type_is_refused_when_encoding() -> None:
    encoder = codec.EntityKeyEncoder([codec.KeySpec("customer_id", Kind.STRING)], 3)
    with pytest.raises(CashbackError, match="join key 'customer_id' is a string; got int 7"):
        encoder.encode((7,))
