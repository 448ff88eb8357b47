"""Test mode: a run's test recipients, and its messages marked as tests

`enrollments.test_to` holds the flow's test recipients for a run started in test mode (null: a
real run); `outbox.test` marks the messages such a run wrote, already rewritten for those
recipients (docs/flows.md, "Test mode").

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("test_to", crmflow.store.types.JSONDoc, nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("test")
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("test_to")
