"""Task history and the inbox's read state

`task_events`: what people did to a task (started, completed, commented, reassigned, and what
crmflow did: cancelled, closed), who and when, shown by `crmflow tasks show` and
`GET /api/tasks/{id}`. `notification_reads`: which user read which notification, so that a
notification to a group is read or unread for each member on their own (docs/people.md).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 06:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ID = crmflow.store.types.ID
AT = crmflow.store.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "task_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("at", AT, nullable=False),
        sa.Column("by", sa.String(64)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_task_events"),
    )
    op.create_index("ix_task_events_task", "task_events", ["task_id", "id"])
    op.create_table(
        "notification_reads",
        sa.Column("notification_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("read_at", AT, nullable=False),
        sa.PrimaryKeyConstraint("notification_id", "user_id", name="pk_notification_reads"),
    )
    op.create_index("ix_notification_reads_user", "notification_reads", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_notification_reads_user", table_name="notification_reads")
    op.drop_table("notification_reads")
    op.drop_index("ix_task_events_task", table_name="task_events")
    op.drop_table("task_events")
