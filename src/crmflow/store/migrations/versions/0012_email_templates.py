"""Stored email templates by name

`email_templates` keeps each template's document (subject, text, html, from, reply_to, locale,
defaults) under its name; a flow's send_email names one with `template:` and the dispatcher
renders it at send time (docs/delivery.md, "Templates").

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("document", crmflow.store.types.JSONDoc, nullable=False),
        sa.Column("updated_at", crmflow.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("email_templates")
