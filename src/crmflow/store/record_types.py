"""Record types as stored (`record_types`), and the counts of records that a change of a type
would contradict: the one place that writes the table."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from functools import cache
from typing import Any, cast

import sqlalchemy as sa

from crmflow.engine.recordtypes import RecordType
from crmflow.store.database import as_text, json_value
from crmflow.store.schema import record_types, records

__all__ = [
    "all_record_types",
    "count_with_value",
    "count_with_value_in",
    "count_without_value",
    "find_record_type",
    "insert_record_type",
    "record_type_catalog",
    "record_type_from_row",
    "record_type_keys",
    "update_record_type",
]


def all_record_types(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Every record type's row (`.key`, `.name`, `.builtin`, `.fields`), by key."""
    return list(conn.execute(sa.select(record_types).order_by(record_types.c.key)).all())


def record_type_from_row(row: sa.Row[Any]) -> RecordType:
    """A row of `all_record_types` / `find_record_type` as the engine's RecordType."""
    return _record_type(row.key, row.name, row.builtin, row.fields)


def _record_type(key: str, name: str, builtin: bool, fields: Any) -> RecordType:
    """The engine's RecordType of a stored type (`fields`: the column's JSON, decoded)."""
    return RecordType.from_dict({"key": key, "name": name, "fields": fields}, builtin=bool(builtin))


# Record types parsed once per content (name, builtin, fields as JSON text): the worker reads
# the catalogue in every batch, since a type may change between two, and parsing each type's
# fields cost three times reading them. The last content seen is kept per key, so a changed type
# is parsed again whichever database or clock changed it, and what is kept is one type per key
# (at most _PARSED_MAX keys); a RecordType is never changed once made.
_PARSED: dict[str, tuple[tuple[str, bool, str], RecordType]] = {}
_PARSED_MAX = 256


@cache
def _catalog_query(dialect: str) -> sa.Select[Any]:
    """Every record type's key, name, builtin flag and fields as JSON text, by key (built once
    per dialect: a worker reads the catalogue in every batch)."""
    t = record_types.c
    return sa.select(t.key, t.name, t.builtin, as_text(t.fields, dialect)).order_by(t.key)


def record_type_catalog(conn: sa.Connection) -> dict[str, RecordType]:
    """Every record type as the engine sees it, by key (the batch runner's and the services'
    catalogue, read on an open connection)."""
    rows = conn.execute(_catalog_query(conn.dialect.name))
    catalog: dict[str, RecordType] = {}
    for key, name, builtin, text in cast("Iterable[tuple[Any, ...]]", rows):
        content = (name, bool(builtin), text)
        kept = _PARSED.get(key)
        if kept is not None and kept[0] == content:
            catalog[key] = kept[1]
            continue
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        parsed = _record_type(key, name, builtin, json_value(text))
        _PARSED[key] = (content, parsed)
        catalog[key] = parsed
    return catalog


def find_record_type(conn: sa.Connection, key: str) -> sa.Row[Any] | None:
    """The row of record type `key`, or None."""
    return conn.execute(sa.select(record_types).where(record_types.c.key == key)).first()


def record_type_keys(conn: sa.Connection) -> list[str]:
    """The keys of every record type, in order (to name them in a message)."""
    return list(conn.execute(sa.select(record_types.c.key).order_by(record_types.c.key)).scalars())


def insert_record_type(
    conn: sa.Connection,
    *,
    key: str,
    name: str,
    builtin: bool,
    fields: list[dict[str, Any]],
    now: datetime,
) -> None:
    """A new record type; IntegrityError (`store.database`) when `key` is taken."""
    conn.execute(
        record_types.insert().values(
            key=key, name=name, builtin=builtin, fields=fields, created_at=now, updated_at=now
        )
    )


def update_record_type(
    conn: sa.Connection, key: str, *, name: str, fields: list[dict[str, Any]], now: datetime
) -> None:
    """Replace the name and fields of record type `key`."""
    conn.execute(
        record_types.update()
        .where(record_types.c.key == key)
        .values(name=name, fields=fields, updated_at=now)
    )


def _count(conn: sa.Connection, type_key: str, condition: sa.ColumnElement[bool]) -> int:
    query = sa.select(sa.func.count()).select_from(records)
    return int(conn.execute(query.where(records.c.type == type_key, condition)).scalar_one())


def _value(field: str) -> sa.ColumnElement[str]:
    """The field's value as text (None when the record has none)."""
    value: sa.ColumnElement[str] = records.c.data[field].as_string()
    return value


def count_with_value(conn: sa.Connection, type_key: str, field: str) -> int:
    """How many records of `type_key` have a value for `field`."""
    return _count(conn, type_key, _value(field).is_not(None))


def count_without_value(conn: sa.Connection, type_key: str, field: str) -> int:
    """How many records of `type_key` have no value for `field`."""
    return _count(conn, type_key, _value(field).is_(None))


def count_with_value_in(
    conn: sa.Connection, type_key: str, field: str, values: Collection[str]
) -> int:
    """How many records of `type_key` hold one of `values` in `field`."""
    return _count(conn, type_key, _value(field).in_(values))
