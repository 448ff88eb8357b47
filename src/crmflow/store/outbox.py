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
from crmflow.store.schema import enrollments, flows, outbox

__all__ = [
    "cancel_pending_of_cancelled",
    "count_emails_of_flow",
    "flow_messages",
    "insert_ignoring_duplicates",
    "messages_of",
]


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


def messages_of(conn: sa.Connection, enrollment_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The outbox messages of these enrollments: `.idempotency_key`, `.kind`, `.status`,
    `.not_before`, `.attempts`."""
    o = outbox.c
    query = sa.select(o.idempotency_key, o.kind, o.status, o.not_before, o.attempts).where(
        o.enrollment_id.in_(enrollment_ids)
    )
    return list(conn.execute(query))


def count_emails_of_flow(conn: sa.Connection, flow_id: int) -> int:
    """The email messages a flow's enrollments wrote to the outbox."""
    in_flow = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id)
    query = (
        sa.select(sa.func.count())
        .select_from(outbox)
        .where(outbox.c.enrollment_id.in_(in_flow), outbox.c.kind == "email")
    )
    return int(conn.execute(query).scalar_one())


def flow_messages(conn: sa.Connection, record_id: int | None = None) -> list[sa.Row[Any]]:
    """Every outbox message (of one record's runs, or of all), oldest first, with the record and
    the key of the flow that wrote it (`record_id`, `flow_key`): what `crmflow.testing` shows."""
    query = (
        sa.select(outbox, enrollments.c.record_id, flows.c.key.label("flow_key"))
        .join(enrollments, enrollments.c.id == outbox.c.enrollment_id)
        .join(flows, flows.c.id == enrollments.c.flow_id)
        .order_by(outbox.c.id)
    )
    if record_id is not None:
        query = query.where(enrollments.c.record_id == record_id)
    return list(conn.execute(query))
