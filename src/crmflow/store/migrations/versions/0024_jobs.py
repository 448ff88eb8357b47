"""Jobs: long operations run in the background, durably

`jobs` keeps one row per background operation the web application asks for (a flow's start of
a long start list, an import of a file): its kind and parameters (`payload`, and `content` for
an uploaded file), its state (waiting, running, done, failed), its progress (`done` of `total`),
what it produced (`result`) or why it failed (`error`), who asked and when. A worker or the
server running jobs inline claims a job with a lease (`lease_owner`, `lease_until`); a runner
that dies leaves the lease to expire, and another runner continues the job where its last
committed step left it (services.jobs).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 12:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", crmflow.store.types.ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", crmflow.store.types.JSONDoc, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("done", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("result", crmflow.store.types.JSONDoc, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "created_by",
            crmflow.store.types.ID,
            sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_jobs_created_by_users"),
            nullable=True,
        ),
        sa.Column("created_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.Column("started_at", crmflow.store.types.UTCDateTime, nullable=True),
        sa.Column("updated_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.Column("finished_at", crmflow.store.types.UTCDateTime, nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", crmflow.store.types.UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state", "id"])
    op.create_index("ix_jobs_subject", "jobs", ["subject", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_subject", table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_table("jobs")
