"""A column compared with a list of ids, the list bound as one parameter.

`column.in_(ids)` binds one parameter per id: SQLAlchemy checks each value, renders a
placeholder for each when the statement runs, and the database parses a statement as long as the
list. A worker's batch does this with hundreds of ids in several statements, and it cost more
than the database's own work on them. Here the list is one value: a JSON array read with
`json_each` on SQLite, an array compared with `= ANY` on PostgreSQL.

A statement a worker runs in every batch is better built once (`among_bound`, the list passed
at execution as `id_list`): SQLAlchemy then neither builds it again nor works out its cache key,
which together cost more than its execution on a batch's few hundred ids.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crmflow.store.database import json_text

__all__ = ["IDS", "among", "among_bound", "id_list"]

IDS = "ids"  # the name `among_bound` binds the list under


def among(
    column: sa.ColumnElement[Any], ids: Collection[int], conn: sa.Connection
) -> sa.ColumnElement[bool]:
    """`column IN ids`, with `ids` bound as one parameter (see the module text)."""
    dialect = conn.dialect.name
    listed = sa.bindparam(None, id_list(ids, dialect), type_=_list_type(dialect))
    return _among(column, listed, dialect)


def among_bound(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[bool]:
    """`column IN :ids` for a statement built once: run it with `{IDS: id_list(ids, dialect)}`."""
    return _among(column, sa.bindparam(IDS, type_=_list_type(dialect)), dialect)


def id_list(ids: Collection[int], dialect: str) -> Any:
    """`ids` as `among_bound` takes them on `dialect`."""
    values = [int(i) for i in ids]
    return values if dialect == "postgresql" else json_text(values)


def _list_type(dialect: str) -> sa.types.TypeEngine[Any]:
    return postgresql.ARRAY(sa.BigInteger) if dialect == "postgresql" else sa.Text()


def _among(
    column: sa.ColumnElement[Any], listed: sa.BindParameter[Any], dialect: str
) -> sa.ColumnElement[bool]:
    if dialect == "postgresql":
        return column == sa.any_(listed)
    rows = sa.func.json_each(listed).table_valued("value")
    return column.in_(sa.select(rows.c.value))
