"""The app database: migrations match the ORM, SQLite runs in WAL mode, times are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from cashback.vocab import Role
from serving.auth import create_key
from serving.db import Database, current_revision
from serving.tables import ApiKey, Base

pytestmark = pytest.mark.xdist_group("serving")


def test_the_migrations_build_exactly_the_tables_the_orm_maps(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert current_revision(database.engine) == "0004"
    assert database.upgrade() == "0004"  # again: nothing to do


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_runs_in_wal_mode(database: Database) -> None:
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_times_are_stored_and_read_back_as_utc(database: Database) -> None:
    with database.session() as session:
        created = create_key(session, Role.ADMIN)
    paris = timezone(timedelta(hours=2))
    with database.session() as session, session.begin():
        row = session.get(ApiKey, created.key_id)
        assert row is not None
        row.revoked_at = datetime(2026, 3, 2, 14, 0, tzinfo=paris)
    with database.session() as session:
        row = session.get(ApiKey, created.key_id)
        assert row is not None
        assert row.revoked_at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
        assert row.revoked_at.tzinfo is not None
        row.revoked_at = datetime(2026, 3, 2, 12, 0)  # noqa: DTZ001
        with pytest.raises(Exception, match="naive datetime"):
            session.commit()
