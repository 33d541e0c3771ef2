"""Alembic migrations of the app database (run by `serving.db.upgrade`)."""
