"""Web sessions: who is signed in to the web application

`web_sessions` keeps one row per browser session of the web application (crmflow.web): the
SHA-256 of the random session token its cookie carries (the clear token is never stored), its
user, when it started (absolute expiry) and when it was last used (idle expiry). Signing out
deletes the row.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", crmflow.store.types.ID, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id",
            crmflow.store.types.ID,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_web_sessions_user_id_users"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.Column("last_seen_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_web_sessions_token_hash"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
