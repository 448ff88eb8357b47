"""Deadlines in the store: the open tasks with a due time that the deadline pass watches, and
the notices sent about them (`deadline_notices`, this module its one writer), each once.

A notice is kept in the transaction that sends it (its notification and outbox email): two
workers that find the same notice due both try to keep it, and the primary key lets one through;
the other's `keep_notice` answers False and it sends nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.idlists import among
from crmflow.store.schema import deadline_notices, enrollments, records, tasks
from crmflow.store.task_lists import OPEN_STATES

__all__ = ["keep_notice", "notices_sent", "record_data", "watched_tasks"]


def watched_tasks(conn: sa.Connection, *, after_id: int, limit: int) -> list[sa.Row[Any]]:
    """Tasks still to do (open or in progress) with a due time (or one set from a date of the
    record, which may be empty), by id after `after_id`, at most `limit`: the task's columns
    with its run's `.flow_id` and `.flow_version`."""
    t = tasks.c
    query = (
        sa.select(
            t.id,
            t.enrollment_id,
            t.record_id,
            t.step_key,
            t.run,
            t.title,
            t.assignee_kind,
            t.assignee_ref,
            t.due_at,
            t.buttons,
            t.created_at,
            t.due_field,
            t.due_offset_days,
            enrollments.c.flow_id,
            enrollments.c.flow_version,
        )
        .join(enrollments, enrollments.c.id == t.enrollment_id)
        .where(
            t.status.in_(OPEN_STATES),
            sa.or_(t.due_at.is_not(None), t.due_field.is_not(None)),
            t.id > after_id,
        )
        .order_by(t.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def record_data(conn: sa.Connection, record_ids: Collection[int]) -> dict[int, dict[str, Any]]:
    """The field values of these records, by id (a deleted record is absent)."""
    r = records.c
    query = sa.select(r.id, r.data).where(among(r.id, record_ids, conn))
    return {int(row.id): dict(row.data) for row in conn.execute(query)}


def notices_sent(conn: sa.Connection, task_ids: Collection[int]) -> set[str]:
    """The keys of the notices sent about these tasks."""
    if not task_ids:
        return set()
    n = deadline_notices.c
    return set(conn.scalars(sa.select(n.key).where(among(n.task_id, task_ids, conn))))


def keep_notice(conn: sa.Connection, key: str, task_id: int, kind: str, *, now: datetime) -> bool:
    """Keep notice `key` as sent; False when it already was (by another worker, even one whose
    transaction is still open: this waits for it on PostgreSQL)."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        deadline_notices
    )
    statement = insert.values(key=key, task_id=task_id, kind=kind, sent_at=now)
    kept = conn.execute(
        statement.on_conflict_do_nothing(index_elements=["key"]).returning(deadline_notices.c.key)
    )
    return kept.first() is not None
