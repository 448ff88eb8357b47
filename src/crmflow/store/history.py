"""The record's history (`record_history`): what flows wrote on a record (the `history` action)
and why a follow-up did not start, each line with the enrollment that wrote it.

Read by `services.run_views` (`history_of`); the lines of the use-cases on runs (a cancel by
hand, a start refused) are written here too (`insert_history`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from crmflow.store.bulk import Writer
from crmflow.store.schema import record_history

__all__ = ["HistoryEntry", "history_of", "insert_history"]


class HistoryEntry(NamedTuple):
    """One line of a record's history (a NamedTuple: a worker's batch builds one per enrollment
    whose step writes history, and a tuple is the cheapest to build)."""

    record_id: int
    enrollment_id: int | None
    message: str
    at: datetime


def insert_history(conn: sa.Connection, entries: Sequence[HistoryEntry]) -> None:
    """Write `entries` in one driver-level batch (`store.bulk.Writer.insert`)."""
    if not entries:
        return
    writer = Writer(conn)
    writer.insert(
        record_history,
        ("record_id", "enrollment_id", "message", "at"),
        [(e.record_id, e.enrollment_id, e.message, writer.time(e.at)) for e in entries],
    )


def history_of(
    conn: sa.Connection, record_id: int, enrollment_ids: Collection[int]
) -> list[sa.Row[Any]]:
    """The record's history, oldest first: its lines that name no enrollment, and those of the
    enrollments `enrollment_ids` (the runs the reader may see)."""
    h = record_history.c
    query = (
        sa.select(record_history)
        .where(h.record_id == record_id)
        .where(sa.or_(h.enrollment_id.is_(None), h.enrollment_id.in_(enrollment_ids)))
        .order_by(h.id)
    )
    return list(conn.execute(query))
