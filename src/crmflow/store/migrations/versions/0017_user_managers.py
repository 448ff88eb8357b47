"""Users' managers

`users.manager_id`: the user's manager, or null. A responsibility `{type: manager_of, field:
requester}` asks the manager of the user held in the field (docs/people.md). Not the user
themselves and no cycle: services.users refuses both.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("manager_id", crmflow.store.types.ID, nullable=True))
        batch.create_foreign_key("fk_users_manager_id_users", "users", ["manager_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_manager_id_users", type_="foreignkey")
        batch.drop_column("manager_id")
