"""Small readers shared by the integration tests: what a test checks after the worker ran, and
how it waits for a thread or process to get there."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.store.schema import record_history

__all__ = ["count_rows", "eventually", "history"]


def count_rows(ctx: Context, table: sa.Table, **where: Any) -> int:
    """How many rows of `table` have the given column values."""
    query = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with ctx.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def eventually(check: Callable[[], object], seconds: float) -> bool:
    """Whether `check()` comes true within `seconds` (looked at every 10 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def history(ctx: Context, record_id: int) -> list[str]:
    """The history messages written on a record, oldest first."""
    with ctx.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(record_history.c.message)
                .where(record_history.c.record_id == record_id)
                .order_by(record_history.c.id)
            ).scalars()
        )
