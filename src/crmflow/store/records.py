"""Records and their change events: the one place that writes `records` and `record_changes`.

Whoever changes a record (the API, the CLI, an import, a flow's step), the change goes through
here: the record's row is written, its change event (`record_changes`) in the same statement
batch of the same transaction, and idle workers are told that there is work (`mark_work`: a
change may trigger flows) once it commits. An update bumps `records.version` (If-Match and
`--if-version` compare it) with a compare-and-set on the version the change was computed from.

A change event's `before` and `after` snapshots hold the record's field values plus its owner's
id under OWNER_KEY (no field can be named so: field keys start with a letter), so that
reassigning a record is a change like any other. Stored data never holds nulls: a None value
clears a field (`merged`), so "missing" and "empty" are the same thing for queries.

Writes are set-based: many records are written with one statement or one driver-level
executemany (see `store.bulk`), never one statement per record.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from crmflow.engine.recordtypes.fields import KEY_PATTERN
from crmflow.errors import ConflictError
from crmflow.store.bulk import Writer
from crmflow.store.idlists import among
from crmflow.store.schema import record_changes, records, users
from crmflow.store.types import UTCDateTime
from crmflow.store.wakeups import mark_work

__all__ = [
    "EXTERNAL_ID_CHARS",
    "IN_CHUNK",
    "OWNER_KEY",
    "BulkInsert",
    "NewRecord",
    "RecordUpdate",
    "StoredRecord",
    "change_page",
    "delete_record",
    "driver_time",
    "duplicated_field_values",
    "export_page",
    "find_by_external_ids",
    "find_by_field_values",
    "find_record",
    "find_records",
    "insert_records",
    "lock_records",
    "merged",
    "owner_contacts",
    "record_page",
    "record_type_of",
    "record_types_of",
    "record_with_owner",
    "records_insert",
    "snapshot",
    "update_records",
    "users_named_or_numbered",
    "without_nulls",
]

OWNER_KEY = "_owner_id"
# SQLite refuses statements with more than 32766 parameters; stay well below on both backends.
IN_CHUNK = 10_000
_EXTERNAL_ID_INDEX = "ux_records_type_external_id"
# The longest external id (the id an existing CRM knows a record by).
EXTERNAL_ID_CHARS: int = records.c.external_id.type.length  # type: ignore[attr-defined]


# The three shapes below are NamedTuples, immutable like a frozen dataclass: a worker's batch
# builds thousands of them, and a tuple costs a third of a frozen dataclass to build.


class StoredRecord(NamedTuple):
    """A record as its writes need it: what a change is computed from."""

    id: int
    type: str
    owner_id: int | None
    data: dict[str, Any]
    version: int


class NewRecord(NamedTuple):
    """A record to create: its stored values (no None among them), its owner, and the id an
    existing CRM knows it by (None: it has none)."""

    data: Mapping[str, Any]
    owner_id: int | None
    external_id: str | None = None


class RecordUpdate(NamedTuple):
    """One change to a stored record: its values and owner after the change, and the record as
    the change found it. Several changes to one record apply in order, each `record` holding
    the values the one before left (and the version the record was read at)."""

    record: StoredRecord
    data: dict[str, Any]
    owner_id: int | None


# -- the rule of stored values -------------------------------------------------------------------


def without_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values as stored: a field without a value is absent, never null."""
    return {k: v for k, v in values.items() if v is not None}


def merged(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with `values` applied: a value replaces the field's, None clears the field."""
    after = dict(data)
    for key, value in values.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


def snapshot(data: Mapping[str, Any], owner_id: int | None) -> dict[str, Any]:
    """The form a record takes in a change event."""
    return {**data, OWNER_KEY: owner_id}


# -- writes --------------------------------------------------------------------------------------


def _write_changes(conn: sa.Connection, events: Sequence[tuple[Any, ...]], now: datetime) -> None:
    """The change events (record id, type, kind, before, after, actor id), one executemany at
    `now`; then idle workers are told (a change may trigger flows). `before` and `after` of None
    are stored as JSON null, as SQLAlchemy's JSON type stores None."""
    writer = Writer(conn)
    json, at, dumps = writer.json_placeholder, writer.time(now), writer.json
    writer.executemany(
        "insert into record_changes (record_id, record_type, kind, before, after, actor_id, at)"
        f" values (?, ?, ?, {json}, {json}, ?, ?)",
        [
            (record_id, type_key, kind, dumps(before), dumps(after), actor_id, at)
            for record_id, type_key, kind, before, after, actor_id in events
        ],
    )
    mark_work(conn)


@contextmanager
def _external_ids_unique(type_key: str) -> Iterator[None]:
    """A record given an external id that another record of its type took meanwhile (between
    the caller's lookup and this insert): ConflictError, not a database error."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        if _EXTERNAL_ID_INDEX not in str(exc.orig) and "records.external_id" not in str(exc.orig):
            raise
        raise ConflictError(
            f"another {type_key} record was given one of these external ids meanwhile; "
            "nothing was written: send the change again (it then updates that record)"
        ) from None


def insert_records(
    conn: sa.Connection,
    type_key: str,
    new: Sequence[NewRecord],
    *,
    actor_id: int | None,
    now: datetime,
) -> list[int]:
    """Create records of one type, each with its `created` event; their ids, in order.

    One INSERT of the records (an executemany) and one of their events."""
    if not new:
        return []
    rows = [
        {
            "type": type_key,
            "owner_id": n.owner_id,
            "data": n.data,
            "external_id": n.external_id,
            "created_at": now,
            "updated_at": now,
        }
        for n in new
    ]
    # sort_by_parameter_order: the ids come back in the order of the rows, on both backends.
    statement = records.insert().returning(records.c.id, sort_by_parameter_order=True)
    with _external_ids_unique(type_key):
        ids = [int(i) for i in conn.execute(statement, rows).scalars()]
    _write_changes(
        conn,
        [
            (record_id, type_key, "created", None, snapshot(n.data, n.owner_id), actor_id)
            for n, record_id in zip(new, ids, strict=True)
        ],
        now,
    )
    return ids


def update_records(
    conn: sa.Connection,
    updates: Sequence[RecordUpdate],
    *,
    actor_id: int | None,
    now: datetime,
) -> None:
    """Apply changes to records that the caller read (and locked) in this transaction: each
    record is written once, with the values of its last change and its version one more, and
    every change leaves its `updated` event, in order.

    The UPDATE compares and sets the version each record was read at: were a lock ever lost, a
    concurrent write would make this a ConflictError (nothing written, the caller's transaction
    rolls back) rather than be silently overwritten. Set-based: one executemany of the records,
    one of the events (a worker's batch writes hundreds of these, see `store.bulk`)."""
    if not updates:
        return
    last = {u.record.id: u for u in updates}
    writer = Writer(conn)
    json, at = writer.json_placeholder, writer.time(now)
    written = writer.executemany(
        f"update records set data = {json}, owner_id = ?, updated_at = ?, version = version + 1"
        " where id = ? and version = ?",
        [
            (writer.json(u.data), u.owner_id, at, rid, u.record.version)
            for rid, u in sorted(last.items())
        ],
    )
    if written != len(last):
        if len(last) == 1:
            which, them = f"record {next(iter(last))}", "it"
        else:
            ids = ", ".join(map(str, sorted(last)))
            which, them = f"{len(last) - written} of the records {ids}", "them"
        raise ConflictError(
            f"{which} changed while this update was applied; nothing was written: read {them} "
            "again and retry"
        )
    _write_changes(
        conn,
        [
            (
                u.record.id,
                u.record.type,
                "updated",
                snapshot(u.record.data, u.record.owner_id),
                snapshot(u.data, u.owner_id),
                actor_id,
            )
            for u in updates
        ],
        now,
    )


def delete_record(
    conn: sa.Connection, record: StoredRecord, *, actor_id: int | None, now: datetime
) -> None:
    """Delete a record; its `deleted` event (and every earlier one) is kept."""
    conn.execute(records.delete().where(records.c.id == record.id))
    _write_changes(
        conn,
        [
            (
                record.id,
                record.type,
                "deleted",
                snapshot(record.data, record.owner_id),
                None,
                actor_id,
            )
        ],
        now,
    )


def records_insert(dialect: sa.Dialect) -> Any:
    """A multi-row INSERT into records taking `data` as JSON text already serialised by orjson.

    SQLAlchemy's JSON type would serialise each value with the standard json module, several
    times slower than orjson on a million rows. The parameter `p_now` is given already converted
    for the driver (see `driver_time`) so that it is not converted again on every row.
    """
    # Parameter names differ from the column names, which SQLAlchemy reserves for itself.
    data: Any = sa.bindparam("p_data", type_=sa.Text())
    if dialect.name == "postgresql":
        data = sa.cast(data, JSONB)
    # A type without a bind processor of its own (SQLite gets text, PostgreSQL a timestamptz).
    time_type: Any = sa.String() if dialect.name == "sqlite" else sa.DateTime(timezone=True)
    now = sa.bindparam("p_now", type_=time_type)
    return records.insert().values(
        type=sa.bindparam("p_type", type_=sa.String()),
        owner_id=sa.bindparam("p_owner", type_=sa.Integer()),
        data=data,
        created_at=now,
        updated_at=now,
    )


def driver_time(dialect: sa.Dialect, value: datetime) -> Any:
    """`value` as the records' timestamp columns hand it to the database driver."""
    # dialect_impl: on SQLite the column's own processor turns the datetime into the stored text
    # once here, instead of sqlite3 adapting a datetime on every row.
    processor = records.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor is not None else value


def _created_events(dialect: str, where: Any, actor_id: int | None, at: datetime) -> Any:
    """INSERT ... SELECT of the `created` events of the records matched by `where`."""
    if dialect == "postgresql":
        after: Any = records.c.data.op("||")(
            sa.func.jsonb_build_object(OWNER_KEY, records.c.owner_id)
        )
    else:
        after = sa.func.json_set(records.c.data, f"$.{OWNER_KEY}", records.c.owner_id)
    select = sa.select(
        records.c.id,
        records.c.type,
        sa.literal("created"),
        sa.null(),
        after,
        sa.literal(actor_id, sa.Integer()),
        sa.literal(at, UTCDateTime()),
    ).where(where)
    return record_changes.insert().from_select(
        ["record_id", "record_type", "kind", "before", "after", "actor_id", "at"], select
    )


class BulkInsert:
    """New records of one type from values already serialised as JSON text (an import's
    batches): one multi-row INSERT per batch, then one INSERT ... SELECT of their `created`
    events, a second INSERT that costs far less than writing each event from Python."""

    def __init__(
        self, dialect: sa.Dialect, type_key: str, *, actor_id: int | None, now: datetime
    ) -> None:
        self.dialect = dialect.name
        self.type_key = type_key
        self.actor_id = actor_id
        self.now = now
        self._driver_now = driver_time(dialect, now)
        self._insert = records_insert(dialect).returning(records.c.id)
        self._insert_external = (
            records_insert(dialect)
            .values(external_id=sa.bindparam("p_external", type_=sa.String()))
            .returning(records.c.id)
        )

    def write(
        self,
        conn: sa.Connection,
        rows: Sequence[tuple[int | None, str]],
        external_ids: Sequence[str | None] | None = None,
    ) -> int:
        """Insert the (owner id, data as JSON text) rows with their events, each with its
        external id when `external_ids` are given (one per row); how many."""
        if not rows:
            return 0
        type_key, now = self.type_key, self._driver_now
        params = [
            {"p_type": type_key, "p_owner": owner, "p_data": data, "p_now": now}
            for owner, data in rows
        ]
        insert = self._insert
        if external_ids is not None:
            insert = self._insert_external
            for param, external_id in zip(params, external_ids, strict=True):
                param["p_external"] = external_id
        with _external_ids_unique(type_key):
            ids = conn.execute(insert, params).scalars().all()
        first, last = min(ids), max(ids)
        if last - first + 1 == len(ids):
            # The batch's ids are contiguous, so no other writer's record lies in between.
            wheres = [records.c.id.between(first, last)]
        else:
            ordered = sorted(ids)
            wheres = [
                records.c.id.in_(ordered[i : i + IN_CHUNK])
                for i in range(0, len(ordered), IN_CHUNK)
            ]
        for where in wheres:
            conn.execute(_created_events(self.dialect, where, self.actor_id, self.now))
        mark_work(conn)  # new records may trigger flows: wake idle workers
        return len(ids)


# -- reads ---------------------------------------------------------------------------------------


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
    """Up to `limit` records of one type after id `after`, in id order: `.id`, `.data` and
    `.username` (the owner's)."""
    query: sa.Select[Any] = (
        sa.select(records.c.id, records.c.data, users.c.username)
        .select_from(records.outerjoin(users, users.c.id == records.c.owner_id))
        .where(records.c.type == type_key)
        .order_by(records.c.id)
        .limit(limit)
    )
    return list(conn.execute(query.where(records.c.id > after)).all())
