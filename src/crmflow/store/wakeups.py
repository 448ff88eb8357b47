"""Telling idle workers that there is work, without them polling the database.

A transaction that creates work (a record change that may trigger a flow, an enrollment due
now) calls `mark_work(conn)`. On PostgreSQL that sends `NOTIFY crmflow_due`, delivered to every
worker's LISTEN when the transaction commits (and not at all if it rolls back). In one process
(`crmflow serve` on SQLite) the flag set on the connection makes the engine's commit hook call
the in-process worker's `wake`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

__all__ = ["NOTIFY_CHANNEL", "mark_work", "on_work_committed"]

NOTIFY_CHANNEL = "crmflow_due"
_FLAG = "crmflow.work"


def mark_work(conn: sa.Connection) -> None:
    """This transaction creates work: wake idle workers once it commits."""
    conn.info[_FLAG] = True
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"NOTIFY {NOTIFY_CHANNEL}"))


def on_work_committed(engine: sa.Engine, callback: Callable[[], None]) -> None:
    """Call `callback` after each commit of a transaction that called `mark_work`."""

    def _commit(conn: Any) -> None:
        if conn.info.pop(_FLAG, False):
            callback()

    def _rollback(conn: Any) -> None:
        conn.info.pop(_FLAG, None)

    sa.event.listen(engine, "commit", _commit)
    sa.event.listen(engine, "rollback", _rollback)
