"""Batched writes through the database driver, for the worker's hot path.

SQLAlchemy's `executemany` builds and converts a dictionary of parameters per row; for the few
thousand rows a worker's batch writes, that bookkeeping cost more than the database's own work.
Here a statement is written once with `?` placeholders and its rows are plain tuples of values
already in the driver's form (`Writer.time`, `Writer.json`), handed to the driver's
`executemany` as they are. Used only where a batch writes many rows of one shape; everything else
goes through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.database import json_text
from crmflow.store.types import sqlite_text

__all__ = ["Writer"]


class Writer:
    """Driver-level batched statements on one connection, whichever the backend."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self._texts: dict[datetime, str | None] = {}

    def time(self, value: datetime | None) -> Any:
        """A UTC column's value as the driver takes it."""
        if self.postgres or value is None:
            return value
        # A batch writes the same few instants (its `now`) thousands of times: converted once.
        text = self._texts.get(value)
        if text is None:
            text = self._texts[value] = sqlite_text(value)
        return text

    @staticmethod
    def json(value: Any) -> str:
        """A JSON column's value (pair it with `json_placeholder` in the statement)."""
        return json_text(value)

    @property
    def json_placeholder(self) -> str:
        return "?::jsonb" if self.postgres else "?"

    def executemany(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run `sql` (with `?` placeholders) once per row, in one driver call; the number of
        rows it changed, summed over the rows (both drivers report the sum)."""
        if not rows:
            return 0
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return int(self.conn.exec_driver_sql(sql, list(rows)).rowcount)
