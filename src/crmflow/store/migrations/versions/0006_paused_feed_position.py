"""paused feed position: how far the change feed had read when a flow froze

A paused or archived flow hears no record change: the change feed skips it. On resume the flow
is told the changes it did not hear. They were those made since the pause (`at >= paused_at`),
which missed a change made just before the pause that the feed had not read yet: the feed read
it during the pause and skipped it. `flows.paused_feed_position` keeps the feed's position when
the flow froze; the changes after it, up to the position at the resume, are the unheard ones.
Flows frozen before this migration have none and keep the old rule until they resume.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_feed_position", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_column("paused_feed_position")
