"""Deadline notices: the reminders, late notices and escalations sent about a task

`deadline_notices` keeps the key of each notice sent (`task:<id>:reminder:<n>`,
`task:<id>:late`, `task:<id>:escalation`) so that each goes once (docs/flows.md, "People:
responsibility and deadlines").

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deadline_notices",
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("task_id", crmflow.store.types.ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sent_at", crmflow.store.types.UTCDateTime, nullable=False),
    )
    op.create_index("ix_deadline_notices_task", "deadline_notices", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_deadline_notices_task", table_name="deadline_notices")
    op.drop_table("deadline_notices")
