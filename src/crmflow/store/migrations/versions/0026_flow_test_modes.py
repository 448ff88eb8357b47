"""Flow test modes: a flow whose messages all go to its test recipients

`flow_test_modes` keeps, per flow, whether it is in test mode (`enabled`) and who switched it
last and when. While a flow is in test mode every email, SMS and webhook its runs write goes
to the flow's `test_recipients` instead, marked test (services.test_mode), as a run started with
`--test` does. A flow without a row is not in test mode.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_test_modes",
        sa.Column(
            "flow_id",
            crmflow.store.types.ID,
            sa.ForeignKey("flows.id", ondelete="CASCADE", name="fk_flow_test_modes_flow_id_flows"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column(
            "changed_by",
            crmflow.store.types.ID,
            sa.ForeignKey(
                "users.id", ondelete="SET NULL", name="fk_flow_test_modes_changed_by_users"
            ),
            nullable=True,
        ),
        sa.Column("changed_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name="pk_flow_test_modes"),
    )


def downgrade() -> None:
    op.drop_table("flow_test_modes")
