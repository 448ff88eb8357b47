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

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from crmflow.errors import ConflictError
from crmflow.store.bulk import ID, Writer

# The reads live in their own module (this one holds the writes, the only ones of the two tables);
# they are importable from here too, as the records group's one entry point.
from crmflow.store.idlists import among
from crmflow.store.record_reads import (
    IN_CHUNK,
    KnownRecords,
    StoredRecord,
    change_page,
    duplicated_field_values,
    export_page,
    find_by_external_ids,
    find_by_field_values,
    find_record,
    find_records,
    lock_records,
    owner_contacts,
    record_page,
    record_type_of,
    record_types_of,
    record_with_owner,
    users_named_or_numbered,
)
from crmflow.store.schema import record_changes, records
from crmflow.store.types import UTCDateTime
from crmflow.store.wakeups import mark_work

__all__ = [
    "EXTERNAL_ID_CHARS",
    "IN_CHUNK",
    "OWNER_KEY",
    "BulkInsert",
    "KnownRecords",
    "NewRecord",
    "RecordUpdate",
    "StoredRecord",
    "change_page",
    "delete_changes",
    "delete_record",
    "delete_records",
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
_EXTERNAL_ID_INDEX = "ux_records_type_external_id"
# The longest external id (the id an existing CRM knows a record by).
EXTERNAL_ID_CHARS: int = records.c.external_id.type.length  # type: ignore[attr-defined]


# The three shapes below are NamedTuples, immutable like a frozen dataclass: a worker's batch
# builds thousands of them, and a tuple costs a third of a frozen dataclass to build.


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
    at, dumps = writer.time(now), writer.json
    writer.insert(
        record_changes,
        ("record_id", "record_type", "kind", "before", "after", "actor_id", "at"),
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
    at = writer.time(now)
    written = writer.update(
        records,
        (("data", "jsonb"), ("owner_id", "int8"), ("updated_at", "timestamptz")),
        [
            (writer.json(u.data), u.owner_id, at, rid, u.record.version)
            for rid, u in sorted(last.items())
        ],
        keys=(ID, ("version", "int4")),
        also="version = version + 1",
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
    delete_records(conn, [record], actor_id=actor_id, now=now)


def delete_records(
    conn: sa.Connection, gone: Sequence[StoredRecord], *, actor_id: int | None, now: datetime
) -> None:
    """Delete records with one DELETE and one executemany of their `deleted` events (a sync
    batch may delete thousands: not three statements each)."""
    if not gone:
        return
    conn.execute(records.delete().where(among(records.c.id, [r.id for r in gone], conn)))
    _write_changes(
        conn,
        [(r.id, r.type, "deleted", snapshot(r.data, r.owner_id), None, actor_id) for r in gone],
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


def delete_changes(conn: sa.Connection, ids: Sequence[int]) -> int:
    """Delete the record changes `ids` (pruning, services.retention); how many were asked."""
    if ids:
        conn.execute(record_changes.delete().where(record_changes.c.id.in_(ids)))
    return len(ids)
