"""Enrollments: the next due one by index probes, the claim by an ordered walk

An idle worker asks when the next enrollment is due (store.enrollments.claims.next_due_select)
at each look. It was min(free time) over every enrollment inside a running flow: a full scan,
a million rows a look at a million enrollments (issue 14). It is now, for each running flow and
each status inside, the first row by due time that holds no lease, one probe of
`ix_enrollments_flow_status_due` (flow_id, status, due_at), and apart the few leased rows,
through `ix_enrollments_leased`, a partial index of the rows whose lease is set.

The worker's claim (`WHERE status IN (inside) AND due_at <= now ... ORDER BY due_at LIMIT n`)
read every due row and sorted them, and at a million rows PostgreSQL's planner, its statistics
of the due times behind the clock, read the whole table at each batch. `ix_enrollments_inside_due`
holds the rows inside a flow by due time (a partial index: finished rows leave it), walked in
order and left after n rows.

`ix_enrollments_flow_status_due` replaces `ix_enrollments_flow_status` (flow_id, status), its
prefix, which served the queries by flow and status and still does. `ix_enrollments_leased`
holds only leased rows (a batch moved clears its leases): next to nothing to write.
`ix_enrollments_inside_due` is one index more to write when a row moves (and none for a row
that has left its flow).

Cost: the indexes are built in the upgrade's transaction by a plain CREATE INDEX (CREATE INDEX
CONCURRENTLY cannot run inside a transaction): on PostgreSQL it holds a SHARE lock on
`enrollments`, which blocks its writes (reads go on) while it reads and sorts the table:
about 3 s for the three on a million enrollments (bench_soak's table, 2 cores); stop the
workers or run it at a quiet time. On SQLite the database is locked for about 4 s.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-02 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

_LEASED = "lease_until IS NOT NULL"
_INSIDE = "status IN ('active', 'waiting', 'held')"


def upgrade() -> None:
    op.create_index(
        "ix_enrollments_flow_status_due", "enrollments", ["flow_id", "status", "due_at"]
    )
    op.drop_index("ix_enrollments_flow_status", table_name="enrollments")
    op.create_index(
        "ix_enrollments_leased",
        "enrollments",
        ["lease_until"],
        sqlite_where=sa.text(_LEASED),
        postgresql_where=sa.text(_LEASED),
    )
    op.create_index(
        "ix_enrollments_inside_due",
        "enrollments",
        ["due_at"],
        sqlite_where=sa.text(_INSIDE),
        postgresql_where=sa.text(_INSIDE),
    )


def downgrade() -> None:
    op.drop_index("ix_enrollments_inside_due", table_name="enrollments")
    op.drop_index("ix_enrollments_leased", table_name="enrollments")
    op.create_index("ix_enrollments_flow_status", "enrollments", ["flow_id", "status"])
    op.drop_index("ix_enrollments_flow_status_due", table_name="enrollments")
