"""Notification tasks: the task a notification is about

`notifications.task_id` names the task a notification tells of (a new task, one given to someone
else, a deadline's reminder or escalation), so the inbox links to the task's page; those written
before link to their record as they did. No foreign key: a task is deleted with its record, and
the notification stays.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("task_id", crmflow.store.types.ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("task_id")
