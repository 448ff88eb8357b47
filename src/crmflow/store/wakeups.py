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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import FlowStatus
from crmflow.store.database import read_connection
from crmflow.store.feed import FEED
from crmflow.store.schema import (
    enrollments,
    feed_cursors,
    flow_status_changes,
    flows,
    record_changes,
    trigger_failures,
    trigger_schedules,
)

__all__ = [
    "COMMIT_POLL_SECONDS",
    "NOTIFY_CHANNEL",
    "CommitWatcher",
    "WorkListener",
    "WorkSigns",
    "mark_work",
    "next_trigger_at",
    "on_work_committed",
    "watches_commits",
    "work_signs",
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


def _next_trigger() -> sa.Select[Any]:
    s, f = trigger_schedules.c, trigger_failures.c
    runs_at = sa.case((f.retry_at > s.next_at, f.retry_at), else_=s.next_at)
    return (
        sa.select(sa.func.min(runs_at))
        .select_from(
            trigger_schedules.join(flows, flows.c.id == s.flow_id).outerjoin(
                trigger_failures,
                sa.and_(f.flow_id == s.flow_id, f.trigger_index == s.trigger_index),
            )
        )
        .where(flows.c.status == "active")
    )


def next_trigger_at(engine: sa.Engine) -> datetime | None:
    """The next run of a time-based trigger (schedule, date reached) of a running flow; a
    failing trigger's next run is its retry, not its missed run (an idle worker would spin)."""
    with read_connection(engine) as conn:
        value: datetime | None = conn.execute(_next_trigger()).scalar()
    return value


@dataclass(frozen=True)
class WorkSigns:
    """What an idle worker needs to know to sleep on: `work_signs`."""

    changes_unread: bool  # the change feed has changes after its cursor
    next_due: datetime | None  # an enrollment due, or free again (its lease over)
    next_trigger: datetime | None  # a time-based trigger's next run (`next_trigger_at`)
    next_scheduled: datetime | None  # a draft's start_at, an archive_at still to do

    @property
    def next_at(self) -> datetime | None:
        """The earliest of the times: when there is work next, unless something changes."""
        times = [t for t in (self.next_due, self.next_trigger, self.next_scheduled) if t]
        return min(times) if times else None


def work_signs(engine: sa.Engine) -> WorkSigns:
    """In one statement, whether there is work for a worker now or when there will be: the
    change feed's unread changes, the next due enrollment (as `store.enrollments.next_due`),
    the next time-based trigger (`next_trigger_at`), the next start_at or archive_at
    (`store.flows.schedule.next_scheduled`). What an idle worker asks when a commit of another
    process woke it: one query, not a round of the worker's loop."""
    # Local: the enrollments' modules import this one (`mark_work`).
    from crmflow.store.enrollments.rows import RUNNING, RUNNING_FLOWS  # noqa: PLC0415

    e = enrollments.c
    free_at = sa.case((e.lease_until > e.due_at, e.lease_until), else_=e.due_at)
    due = sa.select(sa.func.min(sa.type_coerce(free_at, e.due_at.type))).where(
        e.status.in_(RUNNING),
        e.due_at.is_not(None),
        e.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
    )
    start = sa.select(sa.func.min(flows.c.start_at)).where(flows.c.status == FlowStatus.DRAFT.value)
    archived = (
        sa.select(flow_status_changes.c.id)
        .where(
            flow_status_changes.c.flow_id == flows.c.id,
            flow_status_changes.c.to_status == FlowStatus.ARCHIVED.value,
            flow_status_changes.c.at >= flows.c.archive_at,
        )
        .exists()
    )
    archive = sa.select(sa.func.min(flows.c.archive_at)).where(
        flows.c.status != FlowStatus.ARCHIVED.value, ~archived
    )
    newest = sa.select(sa.func.max(record_changes.c.id))
    position = sa.select(feed_cursors.c.position).where(feed_cursors.c.name == FEED)
    query = sa.select(
        newest.scalar_subquery().label("newest"),
        position.scalar_subquery().label("position"),
        due.scalar_subquery().label("due"),
        _next_trigger().scalar_subquery().label("trigger"),
        start.scalar_subquery().label("start"),
        archive.scalar_subquery().label("archive"),
    )
    with read_connection(engine) as conn:
        row = conn.execute(query).one()
    scheduled = [t for t in (row.start, row.archive) if t is not None]
    return WorkSigns(
        changes_unread=row.newest is not None and int(row.newest) > int(row.position or 0),
        next_due=row.due,
        next_trigger=row.trigger,
        next_scheduled=min(scheduled) if scheduled else None,
    )
