"""webhook receipts: the signed calls to /hooks/<key> already taken, so that none is taken twice

A Standard Webhooks receiver must not act twice on one `webhook-id`: a sender retries a call
whose answer it did not get, with the same id, and a captured call can be replayed within the
signature's 5 minutes. Each signed call that is taken leaves a row, keyed by (hook key, sender,
webhook-id) (the sender: a hash of the secrets that signed it, since several senders may share a
hook key and pick the same ids), in the transaction of its starts; a call whose id has a row is
answered with the answer the first one got. Old rows are pruned by later calls (index on
received_at).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import crmflow.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time() -> crmflow.store.types.UTCDateTime:
    return crmflow.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_receipts",
        sa.Column("hook_key", sa.String(length=63), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.Column("answer", JSON, nullable=True),
        sa.PrimaryKeyConstraint(
            "hook_key", "sender", "webhook_id", name=op.f("pk_webhook_receipts")
        ),
    )
    op.create_index("ix_webhook_receipts_received_at", "webhook_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_receipts_received_at", table_name="webhook_receipts")
    op.drop_table("webhook_receipts")
