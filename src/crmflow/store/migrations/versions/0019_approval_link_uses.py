"""Approval email links: the links that were used, so that each decides once

`approval_link_uses` keeps the SHA-256 of every approval link's token that decided (or voted),
with the run, button and user it named (docs/people.md, "Decisions from an email").

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_link_uses",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("enrollment_id", crmflow.store.types.ID, nullable=False),
        sa.Column("step_run", sa.Integer, nullable=False),
        sa.Column("button", sa.String(100), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("used_at", crmflow.store.types.UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approval_link_uses")
