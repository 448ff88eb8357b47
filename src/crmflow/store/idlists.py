"""A column compared with a list of ids, the list bound as one parameter.

`column.in_(ids)` binds one parameter per id: SQLAlchemy checks each value, renders a
placeholder for each when the statement runs, and the database parses a statement as long as the
list. A worker's batch does this with hundreds of ids in several statements, and it cost more
than the database's own work on them. Here the list is one value: a JSON array read with
`json_each` on SQLite, an array compared with `= ANY` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crmflow.store.database import json_text

__all__ = ["among"]


def among(
    column: sa.ColumnElement[Any], ids: Collection[int], conn: sa.Connection
) -> sa.ColumnElement[bool]:
    """`column IN ids`, with `ids` bound as one parameter (see the module text)."""
    values = [int(i) for i in ids]
    if conn.dialect.name == "postgresql":
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(sa.BigInteger))
        return column == sa.any_(array)
    listed = sa.func.json_each(sa.bindparam(None, json_text(values), type_=sa.Text))
    return column.in_(sa.select(listed.table_valued("value").c.value))
