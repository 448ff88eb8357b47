"""The `run_sql` action: an administrator's SQL statement, run in the step's transaction.

Off unless the server allows it (`CRMFLOW_ALLOW_SQL_ACTIONS=true`); checked here again, at run
time, because a flow written while it was allowed may still be running after it was turned off.
Values only ever travel as bound parameters (`:name`); flow validation already refuses SQL built
from templates.

Each statement runs inside its own SAVEPOINT: a failing (or too slow) statement is rolled back
alone and fails its action, while the batch's other effects and enrollments are committed. The
timeout is the action's `timeout_seconds`, capped by the server's `sql_statement_timeout_ms`. The
statement itself is run by the store (`store.admin_sql`: the savepoint and each backend's way of
stopping it), like every other statement.

A statement that updates records need not touch `records.version`: the database adds one to it
for every UPDATE of a record's type, owner or data that left it as it was (migration 0008's
trigger), so the record's ETag changes and an If-Match read before the SQL ran is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crmflow.engine.commands import RunSql
from crmflow.settings import Settings
from crmflow.store.admin_sql import run_statement
from crmflow.store.database import Connection

__all__ = ["run_sql_actions"]

Fail = Callable[[Any, str], None]
TURNED_OFF = (
    "SQL actions are turned off on this server; an administrator may allow them with "
    "CRMFLOW_ALLOW_SQL_ACTIONS=true"
)


def _timeout_ms(settings: Settings, command: RunSql) -> int:
    return max(1, min(int(command.timeout_seconds * 1000), settings.sql_statement_timeout_ms))


def run_sql_actions(
    conn: Connection, settings: Settings, commands: Sequence[RunSql], fail: Fail
) -> None:
    """Run each statement in order, each in a savepoint; failures fail only their action."""
    if not commands:
        return
    if not settings.allow_sql_actions:
        for command in commands:
            fail(command, TURNED_OFF)
        return
    for command in commands:
        reason = run_statement(
            conn, command.sql, command.params, timeout_ms=_timeout_ms(settings, command)
        )
        if reason is not None:
            fail(command, reason)
