"""Bounded history: what pruning took away, counted

`flow_history_counts` keeps, per flow, the counts of the step runs, actions and outbox messages
that retention pruned (the runs that went through each step, step runs per step and outcome,
actions per state, messages per kind and status), so that the statistics stay the same after
pruning. `run_summaries` keeps, per run whose history was pruned, how many step runs and
messages went and its emails' statuses (its sequence's progress) (services.retention,
docs/retention.md).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_history_counts",
        sa.Column("flow_id", crmflow.store.types.ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "flow_id", "kind", "key", "outcome", name=op.f("pk_flow_history_counts")
        ),
    )
    op.create_table(
        "run_summaries",
        sa.Column("enrollment_id", crmflow.store.types.ID, nullable=False),
        sa.Column("flow_id", crmflow.store.types.ID, nullable=False),
        sa.Column("step_runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("email_statuses", crmflow.store.types.JSONDoc, nullable=False),
        sa.Column("pruned_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", name=op.f("pk_run_summaries")),
    )


def downgrade() -> None:
    op.drop_table("run_summaries")
    op.drop_table("flow_history_counts")
