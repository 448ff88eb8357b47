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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from crmflow.engine.definition import FlowStatus
from crmflow.store.database import read_connection
from crmflow.store.feed import FEED
from crmflow.store.heartbeats import Beat, beat_statement
from crmflow.store.schema import (
    enrollments,
    entry_decisions,
    feed_cursors,
    flow_status_changes,
    flows,
    jobs,
    notifications,
    outbox,
    record_changes,
    step_runs,
    tasks,
    trigger_failures,
    trigger_schedules,
    webhook_receipts,
    worker_heartbeats,
)
from crmflow.store.task_lists import OPEN_STATES

__all__ = [
    "COMMIT_POLL_SECONDS",
    "NOTIFY_CHANNEL",
    "PRUNED_KINDS",
    "PRUNED_RECEIPTS",
    "CommitWatcher",
    "OtherWrites",
    "RestLooks",
    "WorkListener",
    "WorkSigns",
    "look_statement",
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
_T = TypeVar("_T")


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
    """LISTEN on `channel` (by default crmflow_due) on a connection of its own (PostgreSQL);
    calls `wake` on each notification, from a thread of its own, until `close()`. The LISTEN is
    made before the constructor returns (it raises if it cannot be); `alive` turns False when
    the connection is lost (the waiters' bounded sleeps find the work without it)."""

    def __init__(
        self, engine: sa.Engine, wake: Callable[[], None], *, channel: str = NOTIFY_CHANNEL
    ) -> None:
        self._wake = wake
        self._channel = channel
        self._closed = threading.Event()
        self._conn = engine.raw_connection()
        try:
            driver: Any = self._conn.driver_connection
            driver.autocommit = True
            driver.execute(f"LISTEN {channel}")
        except Exception:
            self._conn.invalidate()
            raise
        self._thread = threading.Thread(
            target=self._listen, args=(driver,), daemon=True, name=f"crmflow-listen-{channel}"
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _listen(self, driver: Any) -> None:
        try:
            while not self._closed.is_set():
                for _ in driver.notifies(timeout=1.0, stop_after=1):
                    self._wake()
        except Exception as exc:  # a lost connection
            if not self._closed.is_set():
                log.warning("LISTEN %s stopped: %s", self._channel, exc)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2.0)
        self._conn.invalidate()


class OtherWrites:
    """What tells a waiter that another connection (another process) may have written what it
    waits for: LISTEN `channel` on PostgreSQL (the writers NOTIFY it), a `CommitWatcher` on a
    SQLite file; neither on an in-memory database, or when it cannot be had (said once in the
    log `log`, as `who`'s; the waiter's short bounded sleep finds the work without it). `wake` is
    called from another thread. `watcher` is the SQLite watch (its connection serves looks that
    wake no one); `signalled` whether the signal works now; `close()` when done."""

    def __init__(
        self,
        engine: sa.Engine,
        wake: Callable[[], None],
        *,
        channel: str,
        log: logging.Logger,
        who: str,
    ) -> None:
        self.listener: WorkListener | None = None
        self.watcher: CommitWatcher | None = None
        try:
            if engine.dialect.name == "postgresql":
                self.listener = WorkListener(engine, wake, channel=channel)
            elif watches_commits(engine):
                self.watcher = CommitWatcher(engine, wake)
        except Exception as exc:
            how = f"LISTEN {channel}" if engine.dialect.name == "postgresql" else "commit watch"
            log.warning("%s: %s unavailable: %s", who, how, exc)

    @property
    def signalled(self) -> bool:
        if self.listener is not None:
            return self.listener.alive
        return self.watcher is not None and self.watcher.connected

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.watcher is not None:
            self.watcher.close()


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
    worker's own process count too (one look more after its own writes), except those made on
    the watcher's connection itself (`run`: the idle loops' looks and heartbeats). A database
    it cannot read says so once in the log; the worker's bounded idle sleep still finds the
    work.

    The watchers of one process on one engine (a worker's, its dispatchers', its job runner's)
    share that connection and its thread (`_SharedWatch`): what one loop's look writes there
    (its heartbeat) wakes none of them, so loops at rest in one process do not wake each other
    with their heartbeats; a commit on any other connection wakes them all. `reads` and
    `changes` count what the shared watch did while this watcher was there.

    A commit is one change of the pragma, except the first commit after a checkpoint copied the
    whole WAL back into the database: that commit starts the WAL again from its beginning, and
    a read between that restart and the commit's end sees the restart as a change of its own.
    Such a commit may then wake the worker twice. Its first look may come before the commit is
    visible, so the second one is needed, not a waste."""

    def __init__(
        self, engine: sa.Engine, wake: Callable[[], None], *, every: float = COMMIT_POLL_SECONDS
    ) -> None:
        self._wake = wake
        self.reads = 0  # how many times it read the pragma (tests and benchmarks)
        self.changes = 0  # how many times it saw the pragma change, and woke (tests)
        self._watch: _SharedWatch | None = _SharedWatch.join(engine, self, every)

    @property
    def connected(self) -> bool:
        """Whether the watch has its connection (`run` needs it)."""
        watch = self._watch
        return watch is not None and watch.connected

    def run(self, use: Callable[[sa.Connection], _T]) -> _T:
        """`use(connection)` on the watch's own connection (autocommit), between two reads of
        the pragma: what is committed there wakes none of the watchers of this process."""
        watch = self._watch
        if watch is None:
            raise RuntimeError("the commit watch is closed")
        return watch.run(use)

    def _seen(self, changed: bool) -> None:
        """The shared watch read the pragma (and saw it change)."""
        self.reads += 1
        if changed:
            self.changes += 1
            self._wake()

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.leave(self)


class _SharedWatch:
    """The connection and thread that read `PRAGMA data_version` for the `CommitWatcher`s of
    this process on one engine; ends when the last of them closes."""

    _all: dict[int, _SharedWatch] = {}
    _all_lock = threading.Lock()

    @classmethod
    def join(cls, engine: sa.Engine, watcher: CommitWatcher, every: float) -> _SharedWatch:
        with cls._all_lock:
            watch = cls._all.get(id(engine))
            if watch is None or watch._engine is not engine or not watch._thread.is_alive():
                # None yet, or one that ended (closed, or it lost its connection: tried anew).
                watch = cls._all[id(engine)] = _SharedWatch(engine, every)
            watch._every = min(watch._every, every)
            with watch._lock:
                watch._watchers.append(watcher)
        watch._ready.wait(timeout=5.0)
        return watch

    def __init__(self, engine: sa.Engine, every: float) -> None:
        self._engine = engine
        self._every = every
        self._watchers: list[CommitWatcher] = []
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()  # the connection and the watchers: one user at a time
        self._conn: sa.Connection | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True, name="crmflow-commits")
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def run(self, use: Callable[[sa.Connection], _T]) -> _T:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the commit watch has no connection")
            return use(self._conn)

    def leave(self, watcher: CommitWatcher) -> None:
        with self._all_lock:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
                last = not self._watchers
            if last:
                self._closed.set()
                if self._all.get(id(self._engine)) is self:
                    del self._all[id(self._engine)]
        if last:
            self._thread.join(timeout=2.0)

    def _watch(self) -> None:
        try:
            # Made in this thread (a file database's connections may be used by others: the
            # lock takes turns). Autocommit: `run`'s statements are each their own transaction.
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception as exc:
            log.warning("watching commits unavailable: %s", exc)
            self._ready.set()
            return
        failing = False
        try:
            with self._lock:
                last = self._version(conn)
                self._conn = conn
            self._ready.set()
            while not self._closed.wait(self._every):
                try:
                    with self._lock:
                        seen = self._version(conn)
                        watchers = list(self._watchers)
                except Exception as exc:  # e.g. the file is being replaced: said once
                    if not failing:
                        log.warning("watching commits: %s", exc)
                    failing = True
                    continue
                failing = False
                changed, last = seen != last, seen
                for watcher in watchers:
                    watcher._seen(changed)
        except Exception as exc:
            log.warning("watching commits stopped: %s", exc)
        finally:
            self._ready.set()
            with self._lock:
                self._conn = None
                conn.invalidate()
                conn.close()

    def _version(self, conn: sa.Connection) -> int:
        # On the driver's connection: not a statement SQLAlchemy's events count (benchmarks and
        # tests count the reads apart, in `reads`).
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("PRAGMA data_version")
            return int(cursor.fetchone()[0])
        finally:
            cursor.close()


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


# The kinds of history pruned (`services.retention`) whose oldest row a look can tell, and how:
# the time of the oldest row (by id, an index) is a lower bound of when the first of them may go
# (rows of runs go when their run ended, jobs when they finished, after they were written). A
# kind the look does not tell of is pruned on the pass's own time, as before.
PRUNED_KINDS = ("step_runs", "outbox", "record_changes", "not_entered", "notifications", "jobs")
PRUNED_RECEIPTS = "webhook_receipts"


@dataclass(frozen=True)
class WorkSigns:
    """What an idle worker needs to know to sleep on: `work_signs`, `RestLooks.look`."""

    changes_unread: bool  # the change feed has changes after its cursor
    next_due: datetime | None  # an enrollment due, or free again (its lease over)
    next_trigger: datetime | None  # a time-based trigger's next run (`next_trigger_at`)
    next_scheduled: datetime | None  # a draft's start_at, an archive_at still to do
    drained: int = 0  # draining flows with nobody left inside
    # Asked for only (None otherwise): whether an open task has a due time (the deadline pass
    # has something to watch) ...
    watched: bool | None = None
    # ... and per kind of history, the time of its oldest row (None: it has none), with the
    # number of archived flows (their not-entered reasons are capped).
    oldest: dict[str, datetime | None] | None = None
    archived: int | None = None

    @property
    def next_at(self) -> datetime | None:
        """The earliest of the times: when there is work next, unless something changes."""
        times = [t for t in (self.next_due, self.next_trigger, self.next_scheduled) if t]
        return min(times) if times else None


def _first(table: sa.Table, at: sa.ColumnElement[Any], *order: sa.ColumnElement[Any]) -> Any:
    """The `at` of `table`'s first row in `order` (its primary key: one index probe)."""
    return sa.select(at).select_from(table).order_by(*order).limit(1).scalar_subquery()


def _sign_columns(*, deadlines: bool = False, prune: bool = False) -> list[Any]:
    """The columns of the one statement that says whether there is work (see `work_signs`)."""
    # Local: the enrollments' modules import this one (`mark_work`).
    from crmflow.store.enrollments.claims import next_due_select  # noqa: PLC0415
    from crmflow.store.enrollments.rows import RUNNING  # noqa: PLC0415

    e = enrollments.c
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
    inside = (
        sa.select(e.id).where(e.flow_id == flows.c.id, e.status.in_(RUNNING)).correlate(flows)
    ).exists()
    drained = sa.select(sa.func.count()).where(flows.c.status == FlowStatus.DRAINING.value, ~inside)
    newest = sa.select(sa.func.max(record_changes.c.id))
    position = sa.select(feed_cursors.c.position).where(feed_cursors.c.name == FEED)
    columns: list[Any] = [
        newest.scalar_subquery().label("newest"),
        position.scalar_subquery().label("position"),
        next_due_select().label("due"),
        _next_trigger().scalar_subquery().label("trigger"),
        start.scalar_subquery().label("start"),
        archive.scalar_subquery().label("archive"),
        drained.scalar_subquery().label("drained"),
    ]
    if deadlines:
        t = tasks.c
        watched = sa.exists().where(
            t.status.in_(OPEN_STATES), sa.or_(t.due_at.is_not(None), t.due_field.is_not(None))
        )
        columns.append(watched.label("watched"))
    if prune:
        s = step_runs.c
        columns += [
            _first(step_runs, s.started_at, s.enrollment_id, s.run).label("step_runs"),
            _first(outbox, outbox.c.created_at, outbox.c.id).label("outbox"),
            _first(record_changes, record_changes.c.at, record_changes.c.id).label(
                "record_changes"
            ),
            _first(entry_decisions, entry_decisions.c.at, entry_decisions.c.id).label(
                "not_entered"
            ),
            _first(notifications, notifications.c.created_at, notifications.c.id).label(
                "notifications"
            ),
            _first(jobs, jobs.c.created_at, jobs.c.id).label("jobs"),
            sa.select(sa.func.min(webhook_receipts.c.received_at))
            .scalar_subquery()
            .label(PRUNED_RECEIPTS),
            sa.select(sa.func.count())
            .where(flows.c.status == FlowStatus.ARCHIVED.value)
            .scalar_subquery()
            .label("archived"),
        ]
    return columns


def look_statement(dialect: str, columns: Sequence[Any], beat: Beat | None) -> Any:
    """One statement that reads `columns` (labelled scalar subqueries) and, with `beat`, also
    writes that heartbeat (`store.heartbeats.beat_statement`): on PostgreSQL a CTE (INSERT ...
    ON CONFLICT DO UPDATE) beside the columns, on SQLite an UPSERT ... RETURNING them. What a
    loop at rest makes at each wake-up: an idle worker's look (`RestLooks`), an idle
    dispatcher's (`store.outbox_signals`). Run it in autocommit, or in a write transaction."""
    if beat is None:
        return sa.select(*columns)
    if dialect == "postgresql":
        written = beat_statement(dialect, beat).returning(worker_heartbeats.c.name).cte("beat")
        return sa.select(
            *columns, sa.select(sa.func.count()).select_from(written).scalar_subquery()
        )
    return beat_statement(dialect, beat).returning(
        *(sa.label(c.name, _WithTables(c.element)) for c in columns)
    )


class _WithTables(sa.sql.ColumnElement[Any]):
    """`inner` compiled with its columns' table names, which SQLAlchemy's SQLite compiler leaves
    out of a RETURNING clause (only the table written may be named there, as a column's table)
    and, with them, out of its subqueries, where `flow_id = id` is then ambiguous."""

    inherit_cache = True
    _traverse_internals = [("inner", InternalTraversal.dp_clauseelement)]

    def __init__(self, inner: sa.ColumnElement[Any]) -> None:
        self.inner = inner
        self.type = inner.type


@compiles(_WithTables)
def _compile_with_tables(element: _WithTables, compiler: Any, **kw: Any) -> str:
    kw.pop("include_table", None)
    return str(compiler.process(element.inner, **kw))


def _signs(row: Any, *, deadlines: bool = False, prune: bool = False) -> WorkSigns:
    scheduled = [t for t in (row.start, row.archive) if t is not None]
    return WorkSigns(
        changes_unread=row.newest is not None and int(row.newest) > int(row.position or 0),
        next_due=row.due,
        next_trigger=row.trigger,
        next_scheduled=min(scheduled) if scheduled else None,
        drained=int(row.drained or 0),
        watched=bool(row.watched) if deadlines else None,
        oldest=(
            {kind: row._mapping[kind] for kind in (*PRUNED_KINDS, PRUNED_RECEIPTS)}
            if prune
            else None
        ),
        archived=int(row.archived or 0) if prune else None,
    )


def work_signs(engine: sa.Engine) -> WorkSigns:
    """In one statement, whether there is work for a worker now or when there will be: the
    change feed's unread changes, the next due enrollment (as `store.enrollments.next_due`),
    the next time-based trigger (`next_trigger_at`), the next start_at or archive_at
    (`store.flows.schedule.next_scheduled`), the draining flows with nobody left inside. What
    an idle worker asks (`RestLooks` asks it on a connection of its own, with its heartbeat)."""
    with read_connection(engine) as conn:
        row = conn.execute(sa.select(*_sign_columns())).one()
    return _signs(row)


class RestLooks:
    """Where an idle worker looks whether there is work: one statement a look, that also writes
    the worker's heartbeat when one is due (`store.heartbeats.beat_statement`): on PostgreSQL a
    CTE (INSERT ... ON CONFLICT DO UPDATE) beside the signs' scalar subqueries, on SQLite an
    UPSERT ... RETURNING them. No BEGIN / COMMIT around it (autocommit: the statement is its
    own transaction, one snapshot).

    On SQLite the statement runs on the `CommitWatcher`'s own connection, whose PRAGMA
    data_version does not change for its own commits: the worker's heartbeat does not wake the
    worker that wrote it. Elsewhere a connection is kept for the looks (a pooled one would be
    pinged at each checkout), and opened again after an error."""

    def __init__(self, engine: sa.Engine, watcher: CommitWatcher | None = None) -> None:
        self._engine = engine
        self._watcher = watcher
        self._conn: sa.Connection | None = None

    def look(
        self, *, beat: Beat | None = None, deadlines: bool = False, prune: bool = False
    ) -> WorkSigns:
        """The signs (`work_signs`); with `deadlines` whether an open task has a due time, with
        `prune` the oldest rows of the history pruned; `beat` written in the same statement."""
        columns = _sign_columns(deadlines=deadlines, prune=prune)
        query = look_statement(self._engine.dialect.name, columns, beat)

        def run(conn: sa.Connection) -> WorkSigns:
            try:
                row = conn.execute(query).one()
            finally:
                conn.commit()  # autocommit: nothing is sent; SQLAlchemy's transaction ends
            return _signs(row, deadlines=deadlines, prune=prune)

        if self._watcher is not None and self._watcher.connected:
            return self._watcher.run(run)
        # No watch (PostgreSQL, a database in memory) or a watch that stopped: a connection of
        # the looks' own (on SQLite the heartbeat's commit is then seen, one look more).
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            return run(self._conn)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:  # a connection already lost
                log.debug("closing the looks' connection: %s", exc)
