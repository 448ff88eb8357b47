"""The outbox (`outbox`): the external effects (email, SMS, webhooks) a step run decided, each
to deliver once; the dispatcher (next issue) sends them.

A message's idempotency key is made of (enrollment, step run, action), so a step run retried
after a crash writes the same key, and the row already there is kept. Read by
`services.run_views`; pending messages of a cancelled run are cancelled when the batch runner
writes its end (`cancel_pending_of_cancelled`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.engine.runtime import EnrollmentStatus
from crmflow.store.idlists import among
from crmflow.store.schema import enrollments, outbox

__all__ = ["cancel_pending_of_cancelled", "insert_ignoring_duplicates"]


def insert_ignoring_duplicates(
    conn: sa.Connection, rows: Sequence[dict[str, Any]], *, key: str = "idempotency_key"
) -> None:
    """Outbox rows; a row whose idempotency key is already there is left out (a retried step
    run produces the same keys, and must not send twice)."""
    if rows:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox)
        conn.execute(insert.on_conflict_do_nothing(index_elements=[key]), rows)


def cancel_pending_of_cancelled(conn: sa.Connection, enrollment_ids: Collection[int]) -> None:
    """The messages not sent yet of those of `enrollment_ids` that ended cancelled (their
    states are saved) are cancelled: nothing is sent for a cancelled run. Those that finished
    or left keep theirs."""
    cancelled = sa.select(enrollments.c.id).where(
        among(enrollments.c.id, enrollment_ids, conn),
        enrollments.c.status == EnrollmentStatus.CANCELLED.value,
    )
    conn.execute(
        outbox.update()
        .where(outbox.c.enrollment_id.in_(cancelled), outbox.c.status == "pending")
        .values(status="cancelled")
    )
