"""The app database: engine, sessions and migrations.

SQLite (the default, a file under the serving directory) runs in WAL mode: readers never
wait for the writer, and a committed transaction survives the process being killed.
Transactions start with a plain `BEGIN` that SQLAlchemy emits (the sqlite3 module's own
transaction handling is off), and a writer waits up to `db_busy_timeout_s` for another
writer. PostgreSQL is used when `CASHBACK_DATABASE_URL` is set.

Migrations are Alembic's (`serving/alembic/`): `upgrade` brings a database to the newest
revision; `cashback db upgrade` and the API's startup call it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cashback.settings import Settings

MIGRATIONS = Path(__file__).parent / "alembic"


def _sqlite_connect(busy_timeout_s: float) -> Any:
    """A `connect` listener: autocommit driver, WAL, foreign keys, busy timeout."""

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see `_begin`)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable when the process dies
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    return on_connect


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def create_db_engine(settings: Settings) -> Engine:
    """The engine of the configured app database (SQLite file created when absent).

    Args:
        settings: `database_url` (or the serving directory for SQLite) and pool options.
    """
    url = make_url(settings.app_database_url)
    config = settings.serving
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_size=config.db_pool_size, max_overflow=config.db_pool_size, pool_pre_ping=True
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=config.db_pool_size,
        max_overflow=config.db_pool_size,
        connect_args={"check_same_thread": False, "timeout": config.db_busy_timeout_s},
    )
    event.listen(engine, "connect", _sqlite_connect(config.db_busy_timeout_s))
    event.listen(engine, "begin", _begin)
    return engine


def upgrade(engine: Engine) -> str:
    """Apply every migration the database lacks; the revision it is now at.

    On PostgreSQL an advisory lock makes concurrent upgrades (several workers starting at
    once) run one after the other.
    """
    from alembic import command  # noqa: PLC0415 - alembic is only needed here
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return current_revision(engine) or ""


def current_revision(engine: Engine) -> str | None:
    """The database's migration revision (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class Database:
    """The app database: an engine and its sessions.

    Args:
        settings: the service settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine = create_db_engine(settings)
        self.backend = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session, closed at the end (a transaction is rolled back unless committed)."""
        with self._sessions() as session:
            yield session

    def upgrade(self) -> str:
        """`upgrade` this database."""
        return upgrade(self.engine)

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """The configured app database, migrated to the newest revision unless told not to."""
    database = Database(settings)
    if migrate:
        database.upgrade()
    return database
