"""Telling idle workers that there is work, without them polling the database.

A transaction that creates work (a record change that may trigger a flow, an enrollment due
now) calls `mark_work(conn)`. On PostgreSQL that sends `NOTIFY crmflow_due`, delivered to every
worker's LISTEN (`WorkListener`) when the transaction commits (and not at all if it rolls back).
In one process (`crmflow serve` on SQLite) the flag set on the connection makes the engine's
commit hook call the in-process worker's `wake`. Across processes on SQLite (a `crmflow worker`
beside `crmflow serve` or the CLI), `CommitWatcher` reads `PRAGMA data_version` on a connection
of its own every few milliseconds: the number changes when, and only when, another connection
has committed, it is read from the database's shared memory (WAL) or file header without
touching a table, and it changes only once the commit is durable, so a worker woken by it sees
the new rows. An idle worker sleeps until the next time-based trigger is due
(`next_trigger_at`; the next due enrollment is `store.enrollments.next_due`).
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

__all__ = [
    "COMMIT_POLL_SECONDS",
    "NOTIFY_CHANNEL",
    "CommitWatcher",
    "WorkListener",
    "mark_work",
    "next_trigger_at",
    "on_work_committed",
    "watches_commits",
]

log = logging.getLogger("crmflow.worker")

NOTIFY_CHANNEL = "crmflow_due"
_FLAG = "crmflow.work"
COMMIT_POLL_SECONDS = 0.02  # CommitWatcher: how often it reads PRAGMA data_version


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


def watches_commits(engine: sa.Engine) -> bool:
    """Whether `CommitWatcher` can watch `engine`: a SQLite database in a file (an in-memory
    one is private to its connection, so no other process writes it)."""
    database = engine.url.database
    return engine.dialect.name == "sqlite" and bool(database) and database != ":memory:"


class CommitWatcher:
    """SQLite: calls `wake` when another connection (of this process or another) has committed,
    from a thread of its own, until `close()`.

    It reads `PRAGMA data_version` every `every` seconds on a connection of its own, outside any
    transaction: no table is read and no lock taken (about 5 microseconds a read), so a watcher
    costs nothing measurable at rest, and a worker woken by it starts at once. Commits of the
    worker's own process count too (one idle round more after its own writes). A database it
    cannot read says so once in the log; the worker's bounded idle sleep still finds the work."""

    def __init__(
        self, engine: sa.Engine, wake: Callable[[], None], *, every: float = COMMIT_POLL_SECONDS
    ) -> None:
        self._engine = engine
        self._wake = wake
        self._every = every
        self._closed = threading.Event()
        self._ready = threading.Event()
        self.reads = 0  # how many times it read the pragma (tests and benchmarks)
        self._thread = threading.Thread(target=self._watch, daemon=True, name="crmflow-commits")
        self._thread.start()
        self._ready.wait(timeout=5.0)

    def _watch(self) -> None:
        try:
            # The connection is made in this thread: sqlite3's connections belong to one.
            conn = self._engine.raw_connection()
        except Exception as exc:
            log.warning("watching commits unavailable: %s", exc)
            self._ready.set()
            return
        failing = False
        try:
            last = self._version(conn)
            self._ready.set()
            while not self._closed.wait(self._every):
                try:
                    seen = self._version(conn)
                except Exception as exc:  # e.g. the file is being replaced: said once
                    if not failing:
                        log.warning("watching commits: %s", exc)
                    failing = True
                    continue
                failing = False
                if seen != last:
                    last = seen
                    self._wake()
        except Exception as exc:
            log.warning("watching commits stopped: %s", exc)
        finally:
            self._ready.set()
            conn.invalidate()

    def _version(self, conn: Any) -> int:
        cursor = conn.cursor()
        try:
            cursor.execute("PRAGMA data_version")
            self.reads += 1
            return int(cursor.fetchone()[0])
        finally:
            cursor.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2.0)


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
