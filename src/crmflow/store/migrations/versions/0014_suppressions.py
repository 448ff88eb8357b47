"""The suppression list and the server's own signing keys

`suppressions` holds the addresses no flow emails any more (unsubscribed, hard bounce, added by
an admin), each with when and what caused it; `signing_keys` the key that signs unsubscribe
links when CRMFLOW_SECRET_KEY is not set (docs/delivery.md, "Unsubscribe and suppression").

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("at", crmflow.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "signing_keys",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("created_at", crmflow.store.types.UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("suppressions")
