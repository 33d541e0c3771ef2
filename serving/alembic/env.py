"""Alembic environment: migrates the connection `serving.db.upgrade` hands over.

Without one (Alembic run by hand), it connects to the configured app database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from serving.tables import Base

# any constant: the key of the lock that serializes concurrent upgrades on PostgreSQL
UPGRADE_LOCK = 7_312_001


def _migrate(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})"))
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run the migrations on the handed-over connection, or on the configured database."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    from cashback.settings import get_settings  # noqa: PLC0415
    from serving.db import create_db_engine  # noqa: PLC0415

    engine = create_db_engine(get_settings())
    try:
        with engine.begin() as own:
            _migrate(own)
    finally:
        engine.dispose()


run()
