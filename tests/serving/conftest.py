"""Fixtures of the API tests: a served world, app databases on SQLite and PostgreSQL, keys.

- `served_world` (session): a small simulated program with its feature tables, the Feast
  registry, the SQLite online store and a trained fraud champion in a local MLflow registry,
  all under a temp directory (about a minute, once per test process).
- `postgres_url` (session): a throw-away PostgreSQL server (skips when not installed).
- `backend`: each test using `api` runs once on SQLite and once on PostgreSQL.
- `api`: a running app (FastAPI's TestClient) on a fresh app database and claim log.

Test modules mark themselves `xdist_group("serving")`, so that these session fixtures are
built once under `pytest -n 2 --dist loadgroup`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from cashback.settings import ServingSettings, Settings, get_settings
from cashback.vocab import Role
from serving.app import create_app
from serving.auth import create_key
from serving.db import Database, open_database
from serving.state import AppState
from serving.tables import Base
from tests.serving.postgres import PG_MISSING, postgres_server
from tests.serving.world import PEPPER, RULES, base_settings, build_served_world

__all__ = ["PEPPER", "RULES", "base_settings"]  # what the API tests import from here
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world with features online and a fraud champion: its data directory."""
    return build_served_world(tmp_path_factory.mktemp("served") / "data").data_dir


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for this test process (skips when PostgreSQL is missing)."""
    try:
        with postgres_server() as url:
            yield url
    except FileNotFoundError:
        pytest.skip(PG_MISSING)


def empty_database(url: str) -> None:
    """Drop the app's tables and Alembic's version table (each test migrates afresh)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each app database backend in turn."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (a file under the test's serving directory); else an empty PostgreSQL."""
    if backend == "sqlite":
        return None
    url = str(request.getfixturevalue("postgres_url"))
    empty_database(url)
    return url


@dataclass
class Api:
    """A running app and what the tests need from it."""

    client: TestClient
    settings: Settings

    @property
    def state(self) -> AppState:
        """The app's state (database, runtime, services)."""
        state: AppState = self.client.app.state.serving  # type: ignore[attr-defined]
        return state

    def key(self, role: Role, name: str | None = None) -> str:
        """A new API key of this role."""
        with self.state.db.session() as session:
            return create_key(session, role, name).key

    def headers(self, role: Role) -> dict[str, str]:
        """Headers with a new key of this role."""
        return {"X-API-Key": self.key(role)}


StartApi = Callable[..., Api]


@pytest.fixture
def start_api(served_world: Path, database_url: str | None, tmp_path: Path) -> Iterator[StartApi]:
    """`start_api(serving={...}, **settings)`: an app on the served world, stopped after the test.

    `serving` changes the serving settings (no random audits by default); the other keyword
    arguments replace settings fields.
    """
    clients: list[TestClient] = []

    def start(serving: dict[str, Any] | None = None, **changes: Any) -> Api:
        fields: dict[str, Any] = {
            "serving": ServingSettings(
                **({"directory": tmp_path / "serving", "audit_share": 0.0} | (serving or {}))
            ),
            "database_url": database_url,
        }
        settings = base_settings(served_world, **(fields | changes))
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return Api(client, settings)

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def api(start_api: StartApi) -> Api:
    """An app with default settings (no random audits)."""
    return start_api()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The command line's settings from the environment: a data directory in tmp_path."""
    monkeypatch.setenv("CASHBACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CASHBACK_IP_PEPPER", PEPPER)
    monkeypatch.delenv("CASHBACK_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def database(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    """A migrated app database of the backend, without the app."""
    settings = Settings(
        data_dir=tmp_path / "data",
        ip_pepper=PEPPER,
        serving=ServingSettings(directory=tmp_path / "serving"),
        database_url=database_url,
    )
    db = open_database(settings)
    yield db
    db.close()
