"""Reading records (`records`) and their changes (`record_changes`): single records and pages,
by id, by external id or by a field's value, locked or not, with their owners. The writes are
`store.records`, the one writer of these tables; both are reached through `store.records`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from crmflow.engine.recordtypes import RecordType
from crmflow.engine.recordtypes.fields import KEY_PATTERN
from crmflow.store.idlists import among
from crmflow.store.schema import record_changes, records, users

__all__ = [
    "IN_CHUNK",
    "KnownRecords",
    "StoredRecord",
    "change_page",
    "duplicated_field_values",
    "export_page",
    "find_by_external_ids",
    "find_by_field_values",
    "find_record",
    "find_records",
    "lock_records",
    "owner_contacts",
    "record_page",
    "record_type_of",
    "record_types_of",
    "record_with_owner",
    "users_named_or_numbered",
]


# SQLite refuses statements with more than 32766 parameters; stay well below on both backends.
IN_CHUNK = 10_000


class StoredRecord(NamedTuple):
    """A record as its writes need it: what a change is computed from."""

    id: int
    type: str
    owner_id: int | None
    data: dict[str, Any]
    version: int


@dataclass(frozen=True)
class KnownRecords:
    """Records and record types a writer already read in its transaction and knows to be as
    stored now (on SQLite, read after taking the write lock, or on a snapshot that nothing was
    committed after): its record writes start from them instead of reading them again. A
    record it did not read is simply absent (then read and locked as usual)."""

    records: Mapping[int, StoredRecord]
    types: Mapping[str, RecordType]


# The columns of a StoredRecord, in its order: a row of them is one (`StoredRecord(*row)`, the
# cheapest way to build one; `data` is the fresh dict the JSON column's reader made).
_STORED = (records.c.id, records.c.type, records.c.owner_id, records.c.data, records.c.version)


def find_record(
    conn: sa.Connection, record_id: int, *, for_update: bool = False
) -> StoredRecord | None:
    """The record `record_id` (locked for this transaction with `for_update`), or None."""
    query: sa.Select[Any] = sa.select(*_STORED).where(records.c.id == record_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return StoredRecord(*row) if row is not None else None


def lock_records(conn: sa.Connection, ids: Collection[int]) -> dict[int, StoredRecord]:
    """The records among `ids` that exist, locked for this transaction, in one query."""
    query: sa.Select[Any] = sa.select(*_STORED).where(among(records.c.id, ids, conn))
    query = query.with_for_update()
    return {row[0]: StoredRecord(*row) for row in conn.execute(query)}


def find_records(conn: sa.Connection, ids: Collection[int]) -> dict[int, StoredRecord]:
    """The records among `ids` that exist, in one query (not locked)."""
    query: sa.Select[Any] = sa.select(*_STORED).where(records.c.id.in_(sorted(ids)))
    return {row[0]: StoredRecord(*row) for row in conn.execute(query)}


def find_by_external_ids(
    conn: sa.Connection, type_key: str, external_ids: Collection[str]
) -> dict[str, StoredRecord]:
    """The records of `type_key` whose external id is among `external_ids`, by external id,
    locked for this transaction (one query per IN_CHUNK ids)."""
    found: dict[str, StoredRecord] = {}
    for i in range(0, len(ordered := sorted(external_ids)), IN_CHUNK):
        query: sa.Select[Any] = (
            sa.select(records.c.external_id, *_STORED)
            .where(records.c.type == type_key)
            .where(records.c.external_id.in_(ordered[i : i + IN_CHUNK]))
            .with_for_update()
        )
        found.update({row[0]: StoredRecord(*row[1:]) for row in conn.execute(query)})
    return found


def _field_text(conn: sa.Connection, field_key: str) -> sa.ColumnElement[Any]:
    """A field's stored value as text (a number as its digits), on either backend."""
    if not KEY_PATTERN.match(field_key):
        raise ValueError(f"unsafe field key {field_key!r}")  # record types forbid these
    if conn.dialect.name == "postgresql":
        return records.c.data.op("->>", return_type=sa.Text)(sa.literal_column(f"'{field_key}'"))
    return sa.cast(
        sa.func.json_extract(records.c.data, sa.literal_column(f"'$.{field_key}'")), sa.Text
    )


def find_by_field_values(
    conn: sa.Connection, type_key: str, field_key: str, values: Collection[str]
) -> dict[str, list[StoredRecord]]:
    """The records of `type_key` whose field `field_key` holds one of `values` (compared as
    text: a number by its digits), by that text, locked for this transaction (one query per
    IN_CHUNK values). Several records under one value: the field does not tell them apart."""
    found: dict[str, list[StoredRecord]] = {}
    text = _field_text(conn, field_key)
    for i in range(0, len(ordered := sorted(values)), IN_CHUNK):
        query: sa.Select[Any] = (
            sa.select(text, *_STORED)
            .where(records.c.type == type_key)
            .where(text.in_(ordered[i : i + IN_CHUNK]))
            .order_by(records.c.id)
            .with_for_update()
        )
        for row in conn.execute(query):
            found.setdefault(row[0], []).append(StoredRecord(*row[1:]))
    return found


def duplicated_field_values(
    conn: sa.Connection, type_key: str, field_key: str, *, limit: int
) -> list[tuple[str, int]]:
    """Up to `limit` values (as text) that several records of `type_key` hold in the field
    `field_key`, with how many records hold each (one GROUP BY query)."""
    text = _field_text(conn, field_key)
    count = sa.func.count().label("n")
    query: sa.Select[Any] = (
        sa.select(text.label("value"), count)
        .where(records.c.type == type_key, text.is_not(None))
        .group_by(text)
        .having(sa.func.count() > 1)
        .order_by(text)
        .limit(limit)
    )
    return [(str(row.value), int(row.n)) for row in conn.execute(query)]


def record_type_of(conn: sa.Connection, record_id: int) -> str | None:
    """The type of record `record_id`, or None when there is no such record."""
    found = conn.execute(sa.select(records.c.type).where(records.c.id == record_id))
    return found.scalar_one_or_none()


def _chunks(values: Collection[int]) -> list[list[int]]:
    ordered = sorted(values)
    return [ordered[i : i + IN_CHUNK] for i in range(0, len(ordered), IN_CHUNK)]


def record_types_of(conn: sa.Connection, ids: Collection[int]) -> dict[int, str]:
    """The type of each record among `ids` that exists (one query per IN_CHUNK ids)."""
    found: dict[int, str] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(sa.select(records.c.id, records.c.type).where(records.c.id.in_(chunk)))
        found.update({r.id: r.type for r in rows})
    return found


def users_named_or_numbered(
    conn: sa.Connection, names: Collection[str], ids: Collection[int]
) -> list[tuple[int, str]]:
    """(id, username) of the users named `names` or numbered `ids`, in one query: what the
    owners and user fields of a batch of records point at."""
    if not names and not ids:
        return []
    conditions = []
    if names:
        conditions.append(users.c.username.in_(sorted(names)))
    if ids:
        conditions.append(users.c.id.in_(sorted(ids)))
    rows = conn.execute(sa.select(users.c.id, users.c.username).where(sa.or_(*conditions)))
    return [(r.id, r.username) for r in rows]


def owner_contacts(conn: sa.Connection, owner_ids: Collection[int]) -> dict[int, sa.Row[Any]]:
    """The email and display name (`.email`, `.display_name`) of the users `owner_ids`."""
    query: sa.Select[Any] = sa.select(users.c.id, users.c.email, users.c.display_name).where(
        users.c.id.in_(sorted(owner_ids))
    )
    return {r.id: r for r in conn.execute(query)}


def _with_owner() -> sa.Select[Any]:
    """Records with their owner's username as `owner`."""
    return sa.select(records, users.c.username.label("owner")).select_from(
        records.outerjoin(users, users.c.id == records.c.owner_id)
    )


def record_with_owner(conn: sa.Connection, record_id: int) -> sa.Row[Any] | None:
    """The row of record `record_id` (every column, and `owner`: its owner's username)."""
    return conn.execute(_with_owner().where(records.c.id == record_id)).first()


def record_page(
    conn: sa.Connection, type_key: str, *, after: int | None, limit: int
) -> list[sa.Row[Any]]:
    """Up to `limit` records of one type (with `owner`) in id order, after id `after`."""
    query = _with_owner().where(records.c.type == type_key)
    if after is not None:
        query = query.where(records.c.id > after)
    return list(conn.execute(query.order_by(records.c.id).limit(limit)).all())


def change_page(
    conn: sa.Connection, *, record_id: int | None = None, after: int | None, limit: int
) -> list[sa.Row[Any]]:
    """Up to `limit` change events in id order after id `after` (of one record, if given), each
    with `actor`, the username of who made it."""
    query = sa.select(record_changes, users.c.username.label("actor")).select_from(
        record_changes.outerjoin(users, users.c.id == record_changes.c.actor_id)
    )
    if record_id is not None:
        query = query.where(record_changes.c.record_id == record_id)
    if after is not None:
        query = query.where(record_changes.c.id > after)
    return list(conn.execute(query.order_by(record_changes.c.id).limit(limit)).all())


def export_page(conn: sa.Connection, type_key: str, *, after: int, limit: int) -> list[sa.Row[Any]]:
    """Up to `limit` records of one type after id `after`, in id order: `.id`, `.data`,
    `.username` (the owner's) and `.external_id`."""
    query: sa.Select[Any] = (
        sa.select(records.c.id, records.c.data, users.c.username, records.c.external_id)
        .select_from(records.outerjoin(users, users.c.id == records.c.owner_id))
        .where(records.c.type == type_key)
        .order_by(records.c.id)
        .limit(limit)
    )
    return list(conn.execute(query.where(records.c.id > after)).all())
