"""The abuse type an analyst confirms with a fraud decision (it goes with the label).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (null for the decisions stored before it)."""
    with op.batch_alter_table("review_decisions") as batch:
        batch.add_column(sa.Column("abuse_type", sa.String(32), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("review_decisions") as batch:
        batch.drop_column("abuse_type")
