"""Reads for a message that failed for good (`services.delivery_failures`): which run and step
run wrote it, and the other messages of that step run that had failed before it. Reads only:
the outbox is written by `store.outbox`, the runs by `store.enrollments`."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from crmflow.store.schema import enrollments, flows, outbox

__all__ = ["MessageOrigin", "earlier_failures", "origin_of"]


@dataclass(frozen=True)
class MessageOrigin:
    """The step run that wrote an outbox message, and the record and flow of its run."""

    enrollment_id: int
    step_key: str
    step_run: int
    record_id: int
    flow_key: str


def origin_of(conn: sa.Connection, message_id: int) -> MessageOrigin | None:
    """Where message `message_id` comes from; None when its run is gone."""
    o, e = outbox.c, enrollments.c
    query = (
        sa.select(o.enrollment_id, o.step_key, o.step_run, e.record_id, flows.c.key)
        .join(enrollments, e.id == o.enrollment_id)
        .join(flows, flows.c.id == e.flow_id)
        .where(o.id == message_id)
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return MessageOrigin(int(row[0]), str(row[1]), int(row[2]), int(row[3]), str(row[4]))


def earlier_failures(
    conn: sa.Connection, enrollment_id: int, step_run: int, *, but: int
) -> list[str]:
    """The idempotency keys of the other messages of this step run that have failed (`but`: the
    message failing now)."""
    o = outbox.c
    query = (
        sa.select(o.idempotency_key)
        .where(
            o.enrollment_id == enrollment_id,
            o.step_run == step_run,
            o.status == "failed",
            o.id != but,
        )
        .order_by(o.id)
    )
    return [str(k) for k in conn.execute(query).scalars()]
