"""Records carry an optional external id, unique per record type

An existing CRM keeps crmflow's records in sync by its own ids (`PUT /api/records/{type}/external/
{id}`, `POST /api/records/{type}/changes`, imports with `--upsert-by external_id`): the column
`records.external_id` holds that id (text, at most 255 characters, NULL for records that have
none), and a partial unique index makes it unique per (type, external_id) where it is set.

The column is added with a plain ALTER TABLE, not a batch copy of the table: on SQLite a copy
would drop the trigger of 0008 (records.version counts every write). The downgrade drops the
index, then the column (SQLite 3.35 and later drop a column in place).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "ux_records_type_external_id"
SET = sa.text("external_id IS NOT NULL")


def upgrade() -> None:
    op.add_column("records", sa.Column("external_id", sa.String(255), nullable=True))
    op.create_index(
        INDEX,
        "records",
        ["type", "external_id"],
        unique=True,
        sqlite_where=SET,
        postgresql_where=SET,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="records")
    op.drop_column("records", "external_id")
