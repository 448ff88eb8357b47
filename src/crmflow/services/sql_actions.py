"""The `run_sql` action: an administrator's SQL statement, run in the step's transaction.

Off unless the server allows it (`CRMFLOW_ALLOW_SQL_ACTIONS=true`); checked here again, at run
time, because a flow written while it was allowed may still be running after it was turned off.
Values only ever travel as bound parameters (`:name`); flow validation already refuses SQL built
from templates.

Each statement runs inside its own SAVEPOINT: a failing (or too slow) statement is rolled back
alone and fails its action, while the batch's other effects and enrollments are committed. The
timeout is the action's `timeout_seconds`, capped by the server's `sql_statement_timeout_ms`:
`statement_timeout` on PostgreSQL (transaction-local, restored afterwards), and a progress
handler on SQLite that interrupts the statement once the deadline has passed.

A statement that updates records need not touch `records.version`: the database adds one to it
for every UPDATE of a record's type, owner or data that left it as it was (migration 0008's
trigger), so the record's ETag changes and an If-Match read before the SQL ran is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from crmflow.engine.commands import RunSql
from crmflow.settings import Settings

__all__ = ["run_sql_actions"]

Fail = Callable[[Any, str], None]
# SQLite calls the progress handler every this many virtual machine instructions: often enough
# to stop within a few milliseconds of the deadline, rarely enough to cost nothing measurable.
_SQLITE_PROGRESS_STEPS = 10_000
TURNED_OFF = (
    "SQL actions are turned off on this server; an administrator may allow them with "
    "CRMFLOW_ALLOW_SQL_ACTIONS=true"
)


def _timeout_ms(settings: Settings, command: RunSql) -> int:
    return max(1, min(int(command.timeout_seconds * 1000), settings.sql_statement_timeout_ms))


@contextmanager
def _postgres_timeout(conn: sa.Connection, ms: int) -> Iterator[None]:
    previous = conn.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one()
    conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"), {"v": f"{ms}ms"})
    try:
        yield
    finally:
        # Only after the savepoint is released or rolled back: the transaction is usable again.
        conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"), {"v": previous})


@contextmanager
def _sqlite_timeout(conn: sa.Connection, ms: int) -> Iterator[None]:
    raw = conn.connection.driver_connection
    deadline = time.monotonic() + ms / 1000

    def stop_when_late() -> int:
        return 1 if time.monotonic() > deadline else 0  # non-zero interrupts the statement

    raw.set_progress_handler(stop_when_late, _SQLITE_PROGRESS_STEPS)  # type: ignore[union-attr]
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)  # type: ignore[union-attr]


def _reason(exc: sa.exc.DBAPIError, ms: int) -> str:
    text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "statement timeout" in text or text == "interrupted":
        return f"the SQL ran longer than {ms / 1000:g} s and was stopped"
    return f"the SQL failed: {text}"


def run_sql_actions(
    conn: sa.Connection, settings: Settings, commands: Sequence[RunSql], fail: Fail
) -> None:
    """Run each statement in order, each in a savepoint; failures fail only their action."""
    if not commands:
        return
    if not settings.allow_sql_actions:
        for command in commands:
            fail(command, TURNED_OFF)
        return
    limit: Callable[[sa.Connection, int], Any] = (
        _postgres_timeout if conn.dialect.name == "postgresql" else _sqlite_timeout
    )
    for command in commands:
        ms = _timeout_ms(settings, command)
        try:
            with limit(conn, ms), conn.begin_nested():
                conn.execute(sa.text(command.sql), command.params)
        except sa.exc.DBAPIError as exc:
            fail(command, _reason(exc, ms))
        except sa.exc.StatementError as exc:  # a parameter the driver cannot take
            fail(command, f"the SQL was not run: {exc.orig}")
