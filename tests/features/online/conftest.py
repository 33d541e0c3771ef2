"""A tiny hermetic Feast repo in tmp_path (SQLite or Redis online store) and a real Redis.

The repo has two entities (customer: string key; device: int64 key), three feature views
over parquet files written here, and three feature services:

- toy_stats (customer): spend float64, orders int64, region string, active bool;
- toy_risk (customer): score float64, ratio float32, flags int32;
- toy_device (device): claims int64;
- services: toy_v1 = [toy_stats]; toy_full = [toy_stats, toy_risk[score, flags]];
  toy_claims = [toy_stats, toy_device] (two join keys).

The Redis variant starts a real redis-server on a free loopback port for the session (one
per xdist worker) and empties it before each test; without the binary those tests skip and
say how to install it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String

PROJECT = "toy"
T0 = datetime(2026, 1, 10, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
REDIS_MISSING = (
    "redis-server is not installed: run `scripts/install_services.sh` as root (`make test` "
    "does) or `apt-get install redis-server`"
)


def stats_frame() -> pl.DataFrame:
    """Rows of toy_stats: awkward values on purpose (nulls, NaN, unicode, big ints)."""
    ids = [f"c{i:03d}" for i in range(12)]
    return pl.DataFrame(
        {
            "customer_id": ids,
            "spend": [1.5, None, float("nan"), -0.0, 1e-7, 1e20, 0.1, 123.0, -2.5, 7.25, 3.0, 1.0],
            "orders": [0, 1, 127, 128, -1, None, 2**40, -(2**63), 5, 6, 7, 8],
            "region": ["eu", "", "ünïcödé", None, "x" * 300, "us", "eu", "eu", "a", "b", "c", "d"],
            "active": [True, False, None, True, False, True, True, False, True, True, False, True],
            "event_timestamp": [T0] * 12,
        },
        schema_overrides={"orders": pl.Int64},
    )


def risk_frame() -> pl.DataFrame:
    """Rows of toy_risk (only some customers have one)."""
    return pl.DataFrame(
        {
            "customer_id": ["c000", "c001", "c005"],
            "score": [0.9, 0.1, None],
            "ratio": [0.1, None, 2.5],
            "flags": [3, -7, None],
            "event_timestamp": [T0, T0, T0],
        },
        schema_overrides={"ratio": pl.Float32, "flags": pl.Int32},
    )


def device_frame() -> pl.DataFrame:
    """Rows of toy_device."""
    return pl.DataFrame(
        {"device_id": [1, 2, -3], "claims": [4, 0, 9], "event_timestamp": [T0, T0, T0]},
    )


@dataclass
class ToyRepo:
    """A Feast repo on disk, its store and its parquet sources."""

    root: Path
    store: FeatureStore
    sources: dict[str, Path]
    online: str  # "sqlite" or "redis"

    def reopen(self) -> FeatureStore:
        """A new FeatureStore on the repo (no cached connections or registry)."""
        return FeatureStore(repo_path=str(self.root))

    def sdk(self, service: str, ids: Sequence[Any], key: str = "customer_id") -> dict[str, Any]:
        """What the plain Feast SDK returns for these entities."""
        store = self.reopen()
        rows = [{key: i} for i in ids]
        response = store.get_online_features(
            features=store.get_feature_service(service), entity_rows=rows
        )
        return dict(response.to_dict())


def _definitions(sources: dict[str, Path]) -> list[Any]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="toy_stats",
        entities=[customer],
        schema=[
            Field(name="spend", dtype=Float64),
            Field(name="orders", dtype=Int64),
            Field(name="region", dtype=String),
            Field(name="active", dtype=Bool),
        ],
        source=FileSource(path=str(sources["toy_stats"]), timestamp_field="event_timestamp"),
        ttl=timedelta(days=30),
    )
    risk = FeatureView(
        name="toy_risk",
        entities=[customer],
        schema=[
            Field(name="score", dtype=Float64),
            Field(name="ratio", dtype=Float32),
            Field(name="flags", dtype=Int32),
        ],
        source=FileSource(path=str(sources["toy_risk"]), timestamp_field="event_timestamp"),
        ttl=timedelta(days=30),
    )
    devices = FeatureView(
        name="toy_device",
        entities=[device],
        schema=[Field(name="claims", dtype=Int64)],
        source=FileSource(path=str(sources["toy_device"]), timestamp_field="event_timestamp"),
        ttl=timedelta(days=30),
    )
    return [
        customer,
        device,
        stats,
        risk,
        devices,
        FeatureService(name="toy_v1", features=[stats]),
        FeatureService(name="toy_full", features=[stats, risk[["score", "flags"]]]),
        FeatureService(name="toy_claims", features=[stats, devices]),
    ]


def make_repo(root: Path, online_yaml: str, *, online: str) -> ToyRepo:
    """Write the sources and feature_store.yaml under root and apply the definitions."""
    root.mkdir(parents=True, exist_ok=True)
    sources = {name: root / f"{name}.parquet" for name in ("toy_stats", "toy_risk", "toy_device")}
    stats_frame().write_parquet(sources["toy_stats"])
    risk_frame().write_parquet(sources["toy_risk"])
    device_frame().write_parquet(sources["toy_device"])
    (root / "feature_store.yaml").write_text(
        f"project: {PROJECT}\n"
        "provider: local\n"
        "registry: registry.db\n"
        f"online_store:\n{online_yaml}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(root))
    store.apply(_definitions(sources))
    return ToyRepo(root=root, store=store, sources=sources, online=online)


def sqlite_yaml() -> str:
    """The SQLite online store block (path relative to the repo)."""
    return "  type: sqlite\n  path: online.db\n"


def redis_yaml(address: str, db: int = 0) -> str:
    """The Redis online store block."""
    return f'  type: redis\n  connection_string: "{address},db={db}"\n'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run a throw-away redis-server on a free loopback port; yields "host:port".

    Raises:
        FileNotFoundError: redis-server is not installed.
        RuntimeError: it would not start.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(REDIS_MISSING)
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # another process may take the free port first
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--databases", "4"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if _wait_for(proc, port):
            break
    else:
        raise RuntimeError("could not start redis-server on a free port")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the server answers PING within 10 s (False if it exited, e.g. port taken)."""
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
            except redis.ConnectionError:
                time.sleep(0.05)
            else:
                return True
    finally:
        client.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return False


@pytest.fixture(scope="session")
def redis_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a redis-server started for this session (skips when not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip(REDIS_MISSING)
    with redis_server(tmp_path_factory.mktemp("redis")) as address:
        yield address


@pytest.fixture
def redis_client(redis_address: str) -> Iterator[redis.Redis]:
    """A client on the session's redis-server, every database emptied first."""
    host, port = redis_address.split(":")
    client = redis.Redis(host=host, port=int(port))
    client.flushall()
    yield client
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def online(request: pytest.FixtureRequest) -> str:
    """Each online store type in turn."""
    return str(request.param)


@pytest.fixture
def repo(online: str, tmp_path: Path, request: pytest.FixtureRequest) -> ToyRepo:
    """The toy repo with an empty online store of the requested type."""
    if online == "sqlite":
        return make_repo(tmp_path / "repo", sqlite_yaml(), online="sqlite")
    request.getfixturevalue("redis_client")  # flushed
    address = request.getfixturevalue("redis_address")
    return make_repo(tmp_path / "repo", redis_yaml(address), online="redis")


@pytest.fixture
def twin(repo: ToyRepo, tmp_path: Path, request: pytest.FixtureRequest) -> ToyRepo:
    """A second repo like `repo` (its own online store: another file or Redis database)."""
    if repo.online == "sqlite":
        return make_repo(tmp_path / "twin", sqlite_yaml(), online="sqlite")
    address = request.getfixturevalue("redis_address")
    return make_repo(tmp_path / "twin", redis_yaml(address, db=1), online="redis")
