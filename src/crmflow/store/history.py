"""The record's history (`record_history`): what flows wrote on a record (the `history` action)
and why a follow-up did not start, each line with the enrollment that wrote it.

Read by `services.run_views`; the batch runner's own lines (cancellations, the loop guard) are
still written by `services.enrollments`, whose statements belong here when it moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from crmflow.store.bulk import Writer

__all__ = ["HistoryEntry", "insert_history"]


class HistoryEntry(NamedTuple):
    """One line of a record's history (a NamedTuple: a worker's batch builds one per enrollment
    whose step writes history, and a tuple is the cheapest to build)."""

    record_id: int
    enrollment_id: int | None
    message: str
    at: datetime


def insert_history(conn: sa.Connection, entries: Sequence[HistoryEntry]) -> None:
    """Write `entries` in one driver-level batch (`store.bulk.Writer`)."""
    if not entries:
        return
    writer = Writer(conn)
    writer.executemany(
        "insert into record_history (record_id, enrollment_id, message, at) values (?, ?, ?, ?)",
        [(e.record_id, e.enrollment_id, e.message, writer.time(e.at)) for e in entries],
    )
