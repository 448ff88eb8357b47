"""Telling idle workers that there is work, without them polling the database.

A transaction that creates work (a record change that may trigger a flow, an enrollment due
now) calls `mark_work(conn)`. On PostgreSQL that sends `NOTIFY crmflow_due`, delivered to every
worker's LISTEN (`WorkListener`) when the transaction commits (and not at all if it rolls back).
In one process (`crmflow serve` on SQLite) the flag set on the connection makes the engine's
commit hook call the in-process worker's `wake`. An idle worker sleeps until the next time-based
trigger is due (`next_trigger_at`; the next due enrollment is `store.enrollments.next_due`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.database import read_connection
from crmflow.store.schema import flows, trigger_failures, trigger_schedules

__all__ = ["NOTIFY_CHANNEL", "WorkListener", "mark_work", "next_trigger_at", "on_work_committed"]

log = logging.getLogger("crmflow.worker")

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


class WorkListener:
    """LISTEN crmflow_due on a dedicated connection (PostgreSQL); calls `wake` on each
    notification, from a thread of its own, until `close()`."""

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._closed = threading.Event()
        self._conn = engine.raw_connection()
        self._thread = threading.Thread(target=self._listen, daemon=True, name="crmflow-listen")
        self._thread.start()

    def _listen(self) -> None:
        driver = self._conn.driver_connection
        try:
            driver.autocommit = True  # type: ignore[union-attr]
            driver.execute(f"LISTEN {NOTIFY_CHANNEL}")  # type: ignore[union-attr]
            while not self._closed.is_set():
                for _ in driver.notifies(timeout=1.0, stop_after=1):  # type: ignore[union-attr]
                    self._wake()
        except Exception as exc:  # a lost connection: the worker's bounded sleep still works
            if not self._closed.is_set():
                log.warning("LISTEN %s stopped: %s", NOTIFY_CHANNEL, exc)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2.0)
        self._conn.invalidate()


def next_trigger_at(engine: sa.Engine) -> datetime | None:
    """The next run of a time-based trigger (schedule, date reached) of a running flow; a
    failing trigger's next run is its retry, not its missed run (an idle worker would spin)."""
    s, f = trigger_schedules.c, trigger_failures.c
    runs_at = sa.case((f.retry_at > s.next_at, f.retry_at), else_=s.next_at)
    with read_connection(engine) as conn:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(runs_at))
            .select_from(
                trigger_schedules.join(flows, flows.c.id == s.flow_id).outerjoin(
                    trigger_failures,
                    sa.and_(f.flow_id == s.flow_id, f.trigger_index == s.trigger_index),
                )
            )
            .where(flows.c.status == "active")
        ).scalar()
    return value
