"""Batched writes through the database driver, for the worker's hot path.

SQLAlchemy's `executemany` builds and converts a dictionary of parameters per row; for the few
thousand rows a worker's batch writes, that bookkeeping cost more than the database's own work.
Here rows are plain tuples of values already in the driver's form (`Writer.time`, JSON columns
as their text), handed to the driver as they are. Used only where a batch writes many rows of
one shape; everything else goes through SQLAlchemy Core.

On PostgreSQL a batch's rows are one statement, not one per row: even pipelined, an `executemany`
runs a statement per row on the server (a bind, an execution, its result), which cost as much
CPU there as the rows' own work, on the machine that also runs the workers. `Writer.insert`
sends the rows as one `COPY ... FROM STDIN` (a third of the CPU of the `executemany`, client and
server together, for a batch's step runs), `Writer.update` as one JSON array joined in one
`UPDATE ... FROM jsonb_array_elements(...)` (about half). SQLite, in process, keeps the
`executemany`: there a statement per row costs no round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crmflow.store.database import json_text
from crmflow.store.types import sqlite_text

__all__ = ["ID", "Column", "Writer"]

# A column of `Writer.update`: its name and its PostgreSQL type (what the row's value, read from
# JSON, is cast to; `jsonb` for a JSON column, whose value is its JSON text).
Column = tuple[str, str]
ID: Column = ("id", "int8")


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

    def insert(
        self, table: sa.TableClause, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Insert `rows` (values of `columns`, in order; a JSON column's value is its text):
        one COPY on PostgreSQL, an executemany on SQLite."""
        if not rows:
            return
        names = ", ".join(columns)
        if not self.postgres:
            marks = ", ".join("?" * len(columns))
            self.executemany(f"insert into {table.name} ({names}) values ({marks})", rows)
            return
        statement = f"copy {table.name} ({names}) from stdin"
        with (
            self._driver_errors(statement),
            self._cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            write = copy.write_row
            for row in rows:
                write(row)

    def update(
        self,
        table: sa.TableClause,
        columns: Sequence[Column],
        rows: Sequence[tuple[Any, ...]],
        *,
        keys: Sequence[Column] = (ID,),
        also: str = "",
    ) -> int:
        """Set `columns` of the row of `table` whose `keys` match, for each of `rows` (the
        values of `columns` then of `keys`); `also`: more assignments, the same for every row
        (`lease_owner = null`). The number of rows changed. A row whose keys come again later in
        `rows` is left out: the last one is written, as one statement per row would leave it.

        PostgreSQL: one statement, the rows one JSON array; SQLite: an executemany."""
        if not rows:
            return 0
        width = len(keys)
        rows = list({row[-width:]: row for row in rows}.values())
        if not self.postgres:
            sets = ", ".join([*(f"{name} = ?" for name, _ in columns), *([also] if also else [])])
            where = " and ".join(f"{name} = ?" for name, _ in keys)
            return self.executemany(f"update {table.name} set {sets} where {where}", rows)
        every = [*columns, *keys]
        value = {name: self._from_json(i, kind) for i, (name, kind) in enumerate(every)}
        sets = ", ".join(
            [*(f"{name} = {value[name]}" for name, _ in columns), *([also] if also else [])]
        )
        where = " and ".join(f"{table.name}.{name} = {value[name]}" for name, _ in keys)
        jsonb = {i for i, (_, kind) in enumerate(every) if kind == "jsonb"}
        document = orjson.dumps([self._wrapped(row, jsonb) for row in rows] if jsonb else rows)
        statement = (
            f"update {table.name} set {sets} from jsonb_array_elements(%s::jsonb) as batch_rows(r)"
            f" where {where}"
        )
        return int(self.conn.exec_driver_sql(statement, (document.decode(),)).rowcount)

    @staticmethod
    def _wrapped(row: tuple[Any, ...], jsonb: set[int]) -> list[Any]:
        """The row with the text of each JSON column put in as JSON, in an array (see
        `_from_json`), not as a string to parse twice."""
        out = list(row)
        for i in jsonb:
            out[i] = orjson.Fragment("[]" if out[i] is None else f"[{out[i]}]")
        return out

    @staticmethod
    def _from_json(index: int, kind: str) -> str:
        """The SQL of a row's value at `index` of the JSON array `r`, as a `kind`."""
        if kind == "jsonb":
            # The document comes wrapped in an array, None as an empty one: None is then SQL
            # NULL and the text "null" JSON null, as an executemany of `?::jsonb` wrote them.
            return f"(r -> {index} -> 0)"
        if kind == "text":
            return f"(r ->> {index})"
        return f"(r ->> {index})::{kind}"

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def _driver_errors(self, statement: str) -> Iterator[None]:
        """The driver's errors of a statement run on its own cursor as SQLAlchemy raises them
        (an IntegrityError, an OperationalError with the connection invalidated when the
        database went away), so that callers and the worker's loop see no difference."""
        dialect = self.conn.dialect
        base = dialect.loaded_dbapi.Error
        try:
            yield
        except base as exc:
            lost = dialect.is_disconnect(exc, self.conn.connection.dbapi_connection, None)
            if lost:
                self.conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                statement, None, exc, base, connection_invalidated=lost, dialect=dialect
            ) from exc
