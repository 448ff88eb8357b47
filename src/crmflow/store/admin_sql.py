"""An administrator's own SQL statement (the `run_sql` action: `services.sql_actions` says when
it may run and for how long), run in the caller's transaction inside its own SAVEPOINT, with a
time limit: a failing (or too slow) statement is rolled back alone and fails its action, while the
batch's other work is committed.

The time limit is `statement_timeout` on PostgreSQL (transaction-local, restored afterwards), and
a progress handler on SQLite that interrupts the statement once the deadline has passed. Values
only ever travel as bound parameters (`:name`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa

__all__ = ["run_statement"]

# SQLite calls the progress handler every this many virtual machine instructions: often enough
# to stop within a few milliseconds of the deadline, rarely enough to cost nothing measurable.
_SQLITE_PROGRESS_STEPS = 10_000


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


def run_statement(
    conn: sa.Connection, sql: str, params: Mapping[str, Any], *, timeout_ms: int
) -> str | None:
    """Run `sql` with `params` in a savepoint, stopped after `timeout_ms`: None when it ran,
    otherwise why it did not (the database's words, or that it ran too long), for its action."""
    limit: Callable[[sa.Connection, int], AbstractContextManager[None]] = (
        _postgres_timeout if conn.dialect.name == "postgresql" else _sqlite_timeout
    )
    try:
        with limit(conn, timeout_ms), conn.begin_nested():
            conn.execute(sa.text(sql), params)
    except sa.exc.DBAPIError as exc:
        return _reason(exc, timeout_ms)
    except sa.exc.StatementError as exc:  # a parameter the driver cannot take
        return f"the SQL was not run: {exc.orig}"
    return None
