"""Failed step runs by time: a partial index for the figures of the last hour

`ix_step_runs_failed` holds the step runs whose status is `failed` by `started_at`, and only
them: `/metrics` (`crmflow_step_runs_failed_last_hour`) and `crmflow status` count the failures
of the last hour at each scrape without reading the whole table. Its size is the number of
failed step runs; the other rows cost an insert nothing but the check of their status.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-02 13:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

_FAILED = "status = 'failed'"


def upgrade() -> None:
    op.create_index(
        "ix_step_runs_failed",
        "step_runs",
        ["started_at"],
        sqlite_where=sa.text(_FAILED),
        postgresql_where=sa.text(_FAILED),
    )


def downgrade() -> None:
    op.drop_index("ix_step_runs_failed", table_name="step_runs")
