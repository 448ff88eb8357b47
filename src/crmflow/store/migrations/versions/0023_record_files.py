"""Record files: the files of records' `file` fields

`record_files` keeps one file per record and file field (a contract's PDF, a quote): its name,
the content type sniffed from its bytes, its size and SHA-256, the bytes themselves and who
uploaded it when. A file is deleted with its record. An email's `attachments:` names such
fields; the dispatcher reads the bytes when it sends (docs/flows.md, "send_email").

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 09:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_files",
        sa.Column(
            "record_id",
            crmflow.store.types.ID,
            sa.ForeignKey(
                "records.id", ondelete="CASCADE", name="fk_record_files_record_id_records"
            ),
            nullable=False,
        ),
        sa.Column("field", sa.String(63), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", crmflow.store.types.UTCDateTime, nullable=False),
        sa.Column(
            "created_by",
            crmflow.store.types.ID,
            sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_record_files_created_by_users"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("record_id", "field", name="pk_record_files"),
    )


def downgrade() -> None:
    op.drop_table("record_files")
