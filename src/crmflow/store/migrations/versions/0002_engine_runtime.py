"""engine runtime: enrollment state and leases, step runs, outbox, tasks, notifications, history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import crmflow.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time() -> crmflow.store.types.UTCDateTime:
    return crmflow.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", _time(), nullable=True))
        batch_op.add_column(sa.Column("state", JSON, nullable=True))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", _time(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", _time(), nullable=True))
        batch_op.create_index("ix_enrollments_status_due", ["status", "due_at"], unique=False)

    op.create_table(
        "step_runs",
        sa.Column("enrollment_id", ID, nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("step_key", sa.String(length=100), nullable=False),
        sa.Column("step_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("finished_at", _time(), nullable=True),
        sa.Column("actions", JSON, nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", "run", name=op.f("pk_step_runs")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("enrollment_id", ID, nullable=False),
        sa.Column("step_key", sa.String(length=100), nullable=False),
        sa.Column("step_run", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("not_before", _time(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_status_not_before", ["status", "not_before"])
        batch_op.create_index("ix_outbox_enrollment", ["enrollment_id"])

    op.create_table(
        "tasks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("enrollment_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("step_key", sa.String(length=100), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("assignee_kind", sa.String(length=8), nullable=False),
        sa.Column("assignee_ref", sa.String(length=100), nullable=False),
        sa.Column("due_at", _time(), nullable=True),
        sa.Column("buttons", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("closed_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_assignee", ["assignee_kind", "assignee_ref", "status"])
        batch_op.create_index("ix_tasks_enrollment", ["enrollment_id"])

    op.create_table(
        "notifications",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("target_kind", sa.String(length=8), nullable=False),
        sa.Column("target_ref", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("enrollment_id", ID, nullable=True),
        sa.Column("record_id", ID, nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("read_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_target", ["target_kind", "target_ref", "read_at"])

    op.create_table(
        "record_history",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("enrollment_id", ID, nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_history")),
    )
    with op.batch_alter_table("record_history", schema=None) as batch_op:
        batch_op.create_index("ix_record_history_record", ["record_id", "id"])


def downgrade() -> None:
    op.drop_table("record_history")
    op.drop_table("notifications")
    op.drop_table("tasks")
    op.drop_table("outbox")
    op.drop_table("step_runs")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_status_due")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("state")
        batch_op.drop_column("due_at")
