"""The exposures: offer_decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.tables import BigId, JSONType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "offer_decisions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False, unique=True),
        sa.Column("exposure_id", sa.String(36), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=False),
        sa.Column("offer_id", sa.String(128), nullable=False),
        sa.Column("offer_kind", sa.String(16), nullable=False),
        sa.Column("payout", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("experiment_id", sa.String(128), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("exploration_draw", sa.Float(), nullable=True),
        sa.Column("exploration_share", sa.Float(), nullable=True),
        sa.Column("reasons", JSONType, nullable=False),
        sa.Column("features", JSONType, nullable=True),
        sa.Column("context", JSONType, nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("cold_start", sa.Boolean(), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("customer_id", "sequence", name="uq_offer_decisions_customer_sequence"),
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("offer_decisions")
