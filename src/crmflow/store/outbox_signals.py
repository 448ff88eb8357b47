"""Telling idle dispatchers that a message was written, without them polling the database.

Every outbox row is written by `store.outbox.insert_ignoring_duplicates` (a flow's step, a
deadline notice, an approval or invitation email, a failure notice, a test email): on
PostgreSQL it also sends `NOTIFY crmflow_outbox` (`store.outbox.notify_outbox`), delivered to
every dispatcher's LISTEN when the transaction commits (not at all if it rolls back; the
notifications of one transaction are one). A channel of its own, not the workers'
`crmflow_due`: a worker is not woken by the messages it writes, nor a dispatcher by every
record change. On SQLite a dispatcher watches the database's commits
(`store.wakeups.CommitWatcher`: `PRAGMA data_version`, any connection of any process). The rows
a dispatcher makes due later itself (a retry's next attempt, a message put back until its turn
under a rate limit or quiet hours) need no signal: it reads the next due time when it comes to
rest, and sleeps until then.

`OutboxWatch` is what a dispatcher waits on: one signal (a LISTEN connection, a commit watch)
shared by the dispatchers of a process on one database (`crmflow dispatch --threads N`), and
`next_due` the one statement of a look at rest (the next due time), on a connection kept for it
(no BEGIN, no pool checkout and ping), on SQLite the commit watch's own. A look also writes the
dispatcher's heartbeat when one is due (`store.wakeups.look_statement`), in that statement: on
the commit watch's connection (shared with the process's worker and job runner), the heartbeat
wakes none of the process's loops.
`next_due_polled` is the look of a dispatcher without a watch (one could not be had).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime

import sqlalchemy as sa

from crmflow.store.database import read_connection
from crmflow.store.heartbeats import Beat
from crmflow.store.outbox import OUTBOX_CHANNEL, earliest_due, next_due_columns
from crmflow.store.wakeups import CommitWatcher, OtherWrites, look_statement

__all__ = ["OutboxWatch", "next_due_polled"]

log = logging.getLogger("crmflow.delivery")


class _Shared:
    """The signal and the looks' connection of the dispatchers of this process on one engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.users = 0
        self._wakes: list[Callable[[], None]] = []
        self._lock = threading.Lock()  # the looks' connection: one look at a time
        self._conn: sa.Connection | None = None
        self.signal = OtherWrites(
            engine, self._wake, channel=OUTBOX_CHANNEL, log=log, who="dispatchers"
        )
        self.watcher = self.signal.watcher

    def add(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)
        self.users += 1

    def remove(self, wake: Callable[[], None]) -> None:
        self._wakes.remove(wake)
        self.users -= 1

    def _wake(self) -> None:
        for wake in list(self._wakes):
            wake()

    @property
    def signalled(self) -> bool:
        return self.signal.signalled

    def next_due(self, kinds: Collection[str], beat: Beat | None) -> datetime | None:
        query = look_statement(self.engine.dialect.name, next_due_columns(kinds), beat)

        def run(conn: sa.Connection) -> datetime | None:
            try:
                row = conn.execute(query).one()
            finally:
                conn.commit()  # autocommit: nothing is sent; SQLAlchemy's transaction ends
            return earliest_due(row)

        if self.watcher is not None and self.watcher.connected:
            return self.watcher.run(run)
        if self.engine.dialect.name != "postgresql":
            # No commit watch (a database in memory, a watch that stopped): as before.
            return next_due_polled(self.engine, kinds, beat=beat)
        with self._lock:
            if self._conn is None:
                self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                return run(self._conn)
            except Exception:
                self._close_conn()
                raise

    def _close_conn(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:  # a connection already lost
                log.debug("closing the dispatchers' looks connection: %s", exc)

    def close(self) -> None:
        self.signal.close()
        with self._lock:
            self._close_conn()


def next_due_polled(
    engine: sa.Engine, kinds: Collection[str], *, beat: Beat | None = None
) -> datetime | None:
    """The look of a dispatcher without a watch, on a connection of the pool: when the next
    message of `kinds` becomes due (None: none waits), in a read transaction; with `beat`, in a
    write transaction that writes it in the same statement."""
    query = look_statement(engine.dialect.name, next_due_columns(kinds), beat)
    if beat is None:
        with read_connection(engine) as conn:
            return earliest_due(conn.execute(query).one())
    with engine.begin() as conn:
        return earliest_due(conn.execute(query).one())


_shared: dict[int, _Shared] = {}
_shared_lock = threading.Lock()


class OutboxWatch:
    """What an idle dispatcher waits on and looks with: `wake` is called when another
    connection may have written a due message (a NOTIFY on PostgreSQL, a commit on SQLite),
    from another thread; `next_due` is one statement. Shared with the other dispatchers of the
    process on the same engine; `close()` when done (the last one closes the signal)."""

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self._wake = wake
        with _shared_lock:
            shared = _shared.get(id(engine))
            if shared is None or shared.engine is not engine:
                shared = _shared[id(engine)] = _Shared(engine)
            shared.add(wake)
        self._shared: _Shared | None = shared

    @property
    def signalled(self) -> bool:
        """Whether other connections' messages wake the dispatcher (else it must poll)."""
        return self._shared is not None and self._shared.signalled

    @property
    def commit_watch(self) -> CommitWatcher | None:
        """SQLite: the commit watch (tests and benchmarks count its reads)."""
        return None if self._shared is None else self._shared.watcher

    def next_due(self, kinds: Collection[str], *, beat: Beat | None = None) -> datetime | None:
        """When the next message of `kinds` becomes due; None when none waits. `beat`: the
        dispatcher's heartbeat, written by the same statement."""
        assert self._shared is not None, "closed"
        return self._shared.next_due(kinds, beat)

    def close(self) -> None:
        with _shared_lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.remove(self._wake)
            if shared.users == 0:
                _shared.pop(id(shared.engine), None)
            else:
                shared = None
        if shared is not None:
            shared.close()
