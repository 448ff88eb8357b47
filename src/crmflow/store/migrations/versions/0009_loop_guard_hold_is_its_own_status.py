"""The loop guard's hold is its own status: `held`, not `waiting` with no state

A follow-up start that trips the loop guard is written held back until its turn comes, when it
is cancelled with every enrollment of the record in the flow. It used to be written with the
status `waiting` and no state, a combination that meant "held by the loop guard" to whoever
knew; it is now the status `held` (an enrollment row's status only: a state is never held).
The rows written the old way are converted, and back on downgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_enrollments = sa.table("enrollments", sa.column("status", sa.String), sa.column("state", sa.JSON))


def upgrade() -> None:
    op.execute(
        _enrollments.update()
        .where(_enrollments.c.status == "waiting", _enrollments.c.state.is_(None))
        .values(status="held")
    )


def downgrade() -> None:
    op.execute(
        _enrollments.update().where(_enrollments.c.status == "held").values(status="waiting")
    )
