"""versions, trigger failures and heartbeats: optimistic concurrency and a worker that never dies

- `records.version`, `saved_queries.version` and `flows.revision` count the changes to a row, so
  that a client can update it only if it has not changed since it was read (ETag / If-Match;
  `flows.current_version` already names the definition's version, hence `revision`).
- `trigger_failures`: a trigger (a flow's schedule, date reached, start list, record change) that
  raised is marked failing with its error and retried with backoff; the others go on.
- `worker_heartbeats`: each worker and dispatcher loop says it is alive and when its last loop
  succeeded, so that /api/health can answer 503 when one is stuck or dead, across processes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> crmflow.store.types.UTCDateTime:
    return crmflow.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("saved_queries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "trigger_failures",
        sa.Column("flow_id", ID, nullable=False),
        sa.Column("trigger_index", sa.Integer(), nullable=False),
        sa.Column("trigger_type", sa.String(length=32), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("first_failed_at", _time(), nullable=False),
        sa.Column("last_failed_at", _time(), nullable=False),
        sa.Column("retry_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["flows.id"],
            name=op.f("fk_trigger_failures_flow_id_flows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flow_id", "trigger_index", name=op.f("pk_trigger_failures")),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("beat_at", _time(), nullable=False),
        sa.Column("last_success_at", _time(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("stopped_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    op.drop_table("trigger_failures")
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_column("revision")
    with op.batch_alter_table("saved_queries", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_column("version")
