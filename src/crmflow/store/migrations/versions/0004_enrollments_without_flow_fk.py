"""enrollments without a foreign key to flows: the hot table's inserts check nothing per row

A start list enters a million records with one INSERT ... SELECT; checking each new row against
`flows` was most of its cost on PostgreSQL (about 4.5x a bare insert with it, 2.4x without). The
rule it kept is kept by the flows service: a flow that ever had records in it cannot be deleted
(only archived), and a draft has none. A hot table that references nothing is also what a
sharded PostgreSQL needs (DESIGN principle 5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 17:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_constraint("fk_enrollments_flow_id_flows", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_enrollments_flow_id_flows", "flows", ["flow_id"], ["id"])
