"""The review workflow: case locks, decisions, the payout feed, and claim indexes.

The indexes find a customer's claims and the accounts linked by device, IP or receipt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.tables import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
LINK_COLUMNS = ("customer_id", "device_id", "ip_hash", "receipt_hash")


def upgrade() -> None:
    """Add the columns, tables and indexes."""
    with op.batch_alter_table("review_cases") as batch:
        batch.add_column(sa.Column("locked_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("locked_by_key_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("locked_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("decided_at", UTCDateTime(), nullable=True))
    for column in LINK_COLUMNS:
        op.create_index(f"ix_claim_decisions_{column}", "claim_decisions", [column])
    op.create_table(
        "review_requests",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("client_decision_id", sa.String(128), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("analyst", sa.String(100), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "review_decisions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "request_id", sa.BigInteger(), sa.ForeignKey("review_requests.id"), nullable=False
        ),
        sa.Column("case_id", sa.BigInteger(), sa.ForeignKey("review_cases.id"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("label", sa.String(8), nullable=True),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("analyst", sa.String(100), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_review_decisions_case_id", "review_decisions", ["case_id"])
    op.create_index("ix_review_decisions_decided_at", "review_decisions", ["decided_at"])
    op.create_table(
        "payout_decisions",
        sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column(
            "review_decision_id",
            sa.BigInteger(),
            sa.ForeignKey("review_decisions.id"),
            nullable=False,
        ),
        sa.Column("claim_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("payout_decisions")
    op.drop_table("review_decisions")
    op.drop_table("review_requests")
    for column in LINK_COLUMNS:
        op.drop_index(f"ix_claim_decisions_{column}", "claim_decisions")
    with op.batch_alter_table("review_cases") as batch:
        for column in ("decided_at", "locked_until", "locked_by_key_id", "locked_by"):
            batch.drop_column(column)
