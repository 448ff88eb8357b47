"""A task's due time from a date of the record

`tasks.due_field` and `tasks.due_offset_days` keep where a task's due time comes from when a
flow sets it from a date of the record (`create_task` with `due: {field, offset_days}`), so that
it moves when that date moves (docs/flows.md, "create_task").

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("due_field", sa.String(100), nullable=True))
        batch.add_column(sa.Column("due_offset_days", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("due_offset_days")
        batch.drop_column("due_field")
