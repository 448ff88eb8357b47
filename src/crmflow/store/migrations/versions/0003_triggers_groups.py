"""triggers and groups: entry decisions, feed cursors, trigger schedules, record groups, paused_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> crmflow.store.types.UTCDateTime:
    return crmflow.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_at", _time(), nullable=True))
    op.create_table(
        "entry_decisions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("flow_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("change_id", ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["flows.id"],
            name=op.f("fk_entry_decisions_flow_id_flows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entry_decisions")),
    )
    op.create_index("ix_entry_decisions_flow", "entry_decisions", ["flow_id", "id"])
    op.create_index("ix_entry_decisions_record", "entry_decisions", ["record_id", "id"])
    op.create_table(
        "feed_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feed_cursors")),
    )
    op.create_table(
        "trigger_schedules",
        sa.Column("flow_id", ID, nullable=False),
        sa.Column("trigger_index", sa.Integer(), nullable=False),
        sa.Column("next_at", _time(), nullable=True),
        sa.Column("last_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["flows.id"],
            name=op.f("fk_trigger_schedules_flow_id_flows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flow_id", "trigger_index", name=op.f("pk_trigger_schedules")),
    )
    op.create_index("ix_trigger_schedules_next", "trigger_schedules", ["next_at"])
    op.create_table(
        "record_groups",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_record_groups_name")),
    )
    op.create_table(
        "record_group_members",
        sa.Column("group_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("added_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["record_groups.id"],
            name=op.f("fk_record_group_members_group_id_record_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "record_id", name=op.f("pk_record_group_members")),
    )
    op.create_index("ix_record_group_members_record", "record_group_members", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_record_group_members_record", table_name="record_group_members")
    op.drop_table("record_group_members")
    op.drop_table("record_groups")
    op.drop_index("ix_trigger_schedules_next", table_name="trigger_schedules")
    op.drop_table("trigger_schedules")
    op.drop_table("feed_cursors")
    op.drop_index("ix_entry_decisions_record", table_name="entry_decisions")
    op.drop_index("ix_entry_decisions_flow", table_name="entry_decisions")
    op.drop_table("entry_decisions")
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_column("paused_at")
