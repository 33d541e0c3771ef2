"""The first tables of the serving API: api_keys, claim_decisions, review_cases.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.tables import BigId, JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "api_keys",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "claim_decisions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("decision_id", sa.String(36), nullable=False, unique=True),
        sa.Column("claim_id", sa.String(128), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("txn_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("cashback_amount", sa.Float(), nullable=False),
        sa.Column("payout_method", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("ip_hash", sa.String(32), nullable=True),
        sa.Column("receipt_hash", sa.String(128), nullable=True),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("risk_score", sa.Float(), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("abuse_type", sa.String(32), nullable=True),
        sa.Column("rule_hits", JSONType, nullable=False),
        sa.Column("reasons", JSONType, nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("features", JSONType, nullable=True),
        sa.Column("api_key_id", sa.BigInteger(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "review_cases",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "claim_decision_id",
            sa.BigInteger(),
            sa.ForeignKey("claim_decisions.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("reason", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", JSONType, nullable=True),
        sa.Column("abuse_type", sa.String(32), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("explained_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_review_cases_status_opened", "review_cases", ["status", "opened_at"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index("ix_review_cases_status_opened", table_name="review_cases")
    op.drop_table("review_cases")
    op.drop_table("claim_decisions")
    op.drop_table("api_keys")
