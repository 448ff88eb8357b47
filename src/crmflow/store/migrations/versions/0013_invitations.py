"""Calendar invitations of appointments: their UID and SEQUENCE

`invitations` keeps, per event record created with `invitation: ics`, the UID of its
invitation, the SEQUENCE last sent (one more for each move, a CANCEL when it is cancelled), the
attendee and organizer, and the run whose outbox carries its messages (docs/flows.md,
create_record).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import crmflow.store.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("record_id", crmflow.store.types.ID, primary_key=True),
        sa.Column("uid", sa.String(200), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attendee_record_id", crmflow.store.types.ID, nullable=False),
        sa.Column("attendee_email", sa.String(320), nullable=False),
        sa.Column("attendee_name", sa.Text, nullable=False, server_default=""),
        sa.Column("organizer_email", sa.String(320), nullable=False),
        sa.Column("organizer_name", sa.Text, nullable=False, server_default=""),
        sa.Column("enrollment_id", crmflow.store.types.ID, nullable=False),
        sa.Column("step_key", sa.String(100), nullable=False),
        sa.Column("step_run", sa.Integer, nullable=False),
        sa.Column("updated_at", crmflow.store.types.UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("invitations")
