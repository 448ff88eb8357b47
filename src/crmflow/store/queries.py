"""Saved queries as stored (`saved_queries`: the one place that writes the table), and the
records a checked filter matches, compiled by `store.querysql` for the connection's backend.

Relative values in a filter (`today - 180 days`) are resolved at the `now` and `zone` given,
when the statement is built; a value that falls outside the years 1 to 9999 is an
InvalidInputError raised before anything runs.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from crmflow.engine.querylang import CheckedFilter
from crmflow.store.querysql import filter_clause
from crmflow.store.schema import records, saved_queries

__all__ = [
    "IdSelect",
    "count_matching",
    "delete_saved_query",
    "find_saved_query",
    "insert_saved_query",
    "matching_ids",
    "matching_records",
    "saved_query_by_id",
    "saved_query_id",
    "saved_query_page",
    "update_saved_query",
]

# `SELECT records.id FROM records WHERE ...`, not executed: for the caller's set-based statements.
IdSelect = sa.Select[int]


def find_saved_query(
    conn: sa.Connection, name: str, *, for_update: bool = False
) -> sa.Row[Any] | None:
    """The row of the saved query `name` (locked for this transaction with `for_update`)."""
    query = sa.select(saved_queries).where(saved_queries.c.name == name)
    return conn.execute(query.with_for_update() if for_update else query).first()


def saved_query_id(conn: sa.Connection, name: str) -> int | None:
    """The id of the saved query `name`, or None when there is none."""
    found = conn.execute(sa.select(saved_queries.c.id).where(saved_queries.c.name == name))
    return found.scalar_one_or_none()


def saved_query_by_id(conn: sa.Connection, query_id: int) -> sa.Row[Any]:
    """The row of the saved query `query_id` (which exists)."""
    return conn.execute(sa.select(saved_queries).where(saved_queries.c.id == query_id)).one()


def saved_query_page(conn: sa.Connection, *, after: int | None, limit: int) -> list[sa.Row[Any]]:
    """Up to `limit` saved queries in id order, after id `after`."""
    statement = sa.select(saved_queries).order_by(saved_queries.c.id).limit(limit)
    if after is not None:
        statement = statement.where(saved_queries.c.id > after)
    return list(conn.execute(statement).all())


def insert_saved_query(
    conn: sa.Connection,
    *,
    name: str,
    record_type: str,
    description: str,
    filter: dict[str, Any],
    created_by: int | None,
    now: datetime,
) -> int:
    """A new saved query; its id. IntegrityError (`store.database`) when `name` is taken."""
    inserted = conn.execute(
        saved_queries.insert().values(
            name=name,
            record_type=record_type,
            description=description,
            filter=filter,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
    )
    return int(inserted.inserted_primary_key[0])  # type: ignore[index]


def update_saved_query(
    conn: sa.Connection,
    query_id: int,
    *,
    record_type: str,
    filter: dict[str, Any],
    description: str | None,
    now: datetime,
) -> None:
    """Replace a saved query's type and filter (and description, unless None); its version is
    one more (If-Match compares it)."""
    values: dict[str, Any] = {
        "record_type": record_type,
        "filter": filter,
        "updated_at": now,
        "version": saved_queries.c.version + 1,
    }
    if description is not None:
        values["description"] = description
    conn.execute(saved_queries.update().where(saved_queries.c.id == query_id).values(**values))


def delete_saved_query(conn: sa.Connection, query_id: int) -> None:
    conn.execute(saved_queries.delete().where(saved_queries.c.id == query_id))


def _where(
    conn: sa.Connection, checked: CheckedFilter, now: datetime, zone: tzinfo
) -> sa.ColumnElement[bool]:
    return filter_clause(checked, dialect=conn.dialect.name, now=now, zone=zone)


def count_matching(
    conn: sa.Connection, checked: CheckedFilter, *, now: datetime, zone: tzinfo
) -> int:
    """How many records the filter matches at `now` (one `SELECT count(*)`)."""
    where = _where(conn, checked, now, zone)
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(records).where(where)).scalar_one()
    )


def matching_records(
    conn: sa.Connection,
    checked: CheckedFilter,
    *,
    now: datetime,
    zone: tzinfo,
    after: int | None,
    limit: int,
) -> list[sa.Row[Any]]:
    """Up to `limit` rows of the records the filter matches at `now`, in id order after id
    `after`."""
    where = _where(conn, checked, now, zone)
    statement = sa.select(records).where(where).order_by(records.c.id).limit(limit)
    if after is not None:
        statement = statement.where(records.c.id > after)
    return list(conn.execute(statement).all())


def matching_ids(
    conn: sa.Connection, checked: CheckedFilter, *, now: datetime, zone: tzinfo
) -> IdSelect:
    """`SELECT records.id FROM records WHERE <the filter at now>`, not executed, compiled for
    `conn`'s backend; unordered."""
    return sa.select(records.c.id).where(_where(conn, checked, now, zone))
