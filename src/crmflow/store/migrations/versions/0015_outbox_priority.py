"""The outbox's priority lane

`outbox.priority`: a dispatcher claims the due messages of a higher priority first (then the
oldest first), so a single transactional message is not stuck behind a campaign's thousands
(docs/delivery.md, "Priority"). 0 (every row so far): bulk; 1: transactional. An index on
(priority, id) finds the few transactional ones among a campaign's rows.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 05:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_outbox_priority", "outbox", ["priority", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_priority", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("priority")
