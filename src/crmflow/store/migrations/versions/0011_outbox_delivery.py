"""The outbox is delivered: each message's delivery state on its row

The dispatcher (crmflow.delivery) leases a due message (`lease_owner`, `lease_until`), sends it
and writes the outcome on the row: `delivered_at` and the server's reply (`server_reply`), or
`last_error` and `next_attempt_at` for a retry (so a retry due in hours survives a restart).
The mail catcher (no CRMFLOW_SMTP_URL) keeps the message it would have sent in `rendered`.
Existing rows are pending or cancelled and keep their status.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 04:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _time() -> crmflow.store.types.UTCDateTime:
    return crmflow.store.types.UTCDateTime(timezone=True)


_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("next_attempt_at", _time()),
    ("lease_owner", sa.String(100)),
    ("lease_until", _time()),
    ("delivered_at", _time()),
    ("last_error", sa.Text()),
    ("server_reply", sa.Text()),
    ("rendered", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
        batch.create_index("ix_outbox_status_next_attempt_at", ["status", "next_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_status_next_attempt_at")
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
