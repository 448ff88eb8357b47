"""Records of any type: create, update, delete, get, list; every change leaves a change event.

A change event is written in the same transaction as the change it describes, so the feed of
events (`change_feed`, which the flow engine reads to trigger flows) never misses a change and
never shows one that was rolled back. Its `before` and `after` snapshots hold the record's field
values plus its owner's id under the key `_owner_id` (no field can be named so: field keys start
with a letter), so that reassigning a record is a change like any other.

Stored data never holds nulls: clearing a field removes its key, so "missing" and "empty" are the
same thing for queries on both backends.

Here are the checks (the record type's fields and values, users and referenced records, versions)
and the views; every write, whether one record from the API or CLI or many from a flow's batch,
goes through `crmflow.store.records` (its rows, its change events, waking the workers), where
`OWNER_KEY` and `snapshot` live too (named here as well for the services that read events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.recordtypes import MAX_ROW_ID, FieldType, RecordType
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services import invitations
from crmflow.services.context import Actor, Context
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.services.permissions import require_manager
from crmflow.services.preconditions import ExpectedVersion, require_version
from crmflow.services.record_types import record_type_in
from crmflow.store import records as store
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.records import (
    OWNER_KEY,
    KnownRecords,
    NewRecord,
    RecordUpdate,
    StoredRecord,
    snapshot,
)

__all__ = [
    "OWNER_KEY",
    "ChangeView",
    "FieldChange",
    "LinkResolver",
    "RecordView",
    "change_feed",
    "change_of",
    "create_record",
    "delete_record",
    "get_record",
    "list_records",
    "record_changes",
    "record_view",
    "refuse",
    "snapshot",
    "update_record",
    "update_records_in",
    "view_in",
]


@dataclass(frozen=True)
class RecordView:
    id: int
    type: str
    owner_id: int | None
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any]
    owner: str | None = None  # the owner's username, when the query joined it
    version: int = 1  # one more on every write: If-Match / --if-version compare it
    external_id: str | None = None  # the id an existing CRM knows the record by

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "external_id": self.external_id,
            "owner_id": self.owner_id,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "data": self.data,
        }


def record_view(row: Row) -> RecordView:
    """A view of a row selected from the `records` table (with `owner`, the username, if joined)."""
    mapping = row._mapping
    return RecordView(
        id=row.id,
        type=row.type,
        owner_id=row.owner_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        data=dict(row.data),
        owner=mapping.get("owner"),
        version=row.version,
        external_id=mapping.get("external_id"),
    )


@dataclass(frozen=True)
class ChangeView:
    """One change event: what happened to which record, the values before and after, who, when."""

    id: int
    record_id: int
    record_type: str
    kind: str  # created | updated | deleted
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor_id: int | None
    at: datetime
    actor: str | None = None

    @property
    def changed_fields(self) -> list[str]:
        """The keys (fields, and `_owner_id`) whose value differs between before and after."""
        before = self.before or {}
        after = self.after or {}
        return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "record_id": self.record_id,
            "record_type": self.record_type,
            "kind": self.kind,
            "before": self.before,
            "after": self.after,
            "changed_fields": self.changed_fields,
            "actor_id": self.actor_id,
            "actor": self.actor,
            "at": self.at.isoformat(),
        }


def _change_view(row: Row) -> ChangeView:
    return ChangeView(
        id=row.id,
        record_id=row.record_id,
        record_type=row.record_type,
        kind=row.kind,
        before=dict(row.before) if row.before is not None else None,
        after=dict(row.after) if row.after is not None else None,
        actor_id=row.actor_id,
        at=row.at,
        actor=row.actor,
    )


class LinkResolver:
    """Turns usernames into user ids and checks that users and referenced records exist.

    Works on a whole batch with one query for users and one for records (chunked only past
    `store.records.IN_CHUNK` distinct ids), never one query per row.
    """

    def __init__(self, rtype: RecordType) -> None:
        self.user_fields = tuple(f.key for f in rtype.fields if f.type is FieldType.USER)
        self.ref_fields = tuple(
            (f.key, f.reference_type or "") for f in rtype.fields if f.type is FieldType.REFERENCE
        )
        # The fields whose values point at a user or a record (what `resolve` looks up).
        self.link_fields = frozenset(self.user_fields) | {key for key, _ in self.ref_fields}

    def resolve(
        self,
        conn: Connection,
        items: Sequence[tuple[dict[str, Any], object]],
        default_owner: int | None,
    ) -> tuple[list[int | None], list[list[Problem]]]:
        """Owner ids and problems, one of each per (data, owner) item; `data` is fixed in place.

        An owner is a username, a user id, or None for `default_owner`.
        """
        names: set[str] = set()
        user_ids: set[int] = set()
        ref_ids: set[int] = set()
        user_fields, ref_fields = self.user_fields, self.ref_fields
        for data, owner in items:
            if owner is not None:
                if type(owner) is int:
                    if 0 < owner <= MAX_ROW_ID:  # a larger one names no user (and cannot be bound)
                        user_ids.add(owner)
                else:
                    names.add(str(owner))
            for key in user_fields:
                value = data.get(key)
                if type(value) is int:
                    user_ids.add(value)
                elif value is not None:
                    names.add(value)
            for key, _ in ref_fields:
                value = data.get(key)
                if value is not None:
                    ref_ids.add(value)
        found_users = store.users_named_or_numbered(conn, names, user_ids)
        by_name = {username: user_id for user_id, username in found_users}
        known_ids = {user_id for user_id, _ in found_users}
        ref_types = store.record_types_of(conn, ref_ids)

        owners: list[int | None] = []
        problems: list[list[Problem]] = []
        for data, owner in items:
            found: list[Problem] = []
            owner_id = default_owner
            if owner is not None:
                if type(owner) is int:
                    owner_id = owner if owner in known_ids else None
                    if owner_id is None:
                        found.append(Problem("owner", f"no user with id {owner}"))
                else:
                    owner_id = by_name.get(str(owner))
                    if owner_id is None:
                        found.append(
                            Problem("owner", f"no user named {owner!r}", "see `crmflow users list`")
                        )
            owners.append(owner_id)
            for key in user_fields:
                value = data.get(key)
                if value is None:
                    continue
                if type(value) is int:
                    if value not in known_ids:
                        found.append(Problem(key, f"no user with id {value}"))
                elif value in by_name:
                    data[key] = by_name[value]
                else:
                    found.append(
                        Problem(key, f"no user named {value!r}", "see `crmflow users list`")
                    )
            for key, wanted in ref_fields:
                value = data.get(key)
                if value is None:
                    continue
                actual = ref_types.get(value)
                if actual is None:
                    found.append(Problem(key, f"no {wanted} with id {value}"))
                elif actual != wanted:
                    found.append(Problem(key, f"record {value} is a {actual}, not a {wanted}"))
            problems.append(found)
        return owners, problems


def refuse(rtype: RecordType, problems: list[Problem]) -> None:
    """InvalidInputError naming the record type, when there are problems."""
    if problems:
        raise InvalidInputError(f"the {rtype.key} record", problems)


def _load(conn: Connection, record_id: int, *, for_update: bool = False) -> StoredRecord:
    record = store.find_record(conn, record_id, for_update=for_update)
    if record is None:
        raise NotFoundError(f"no record with id {record_id}")
    return record


def _require_version(record: StoredRecord, expected: ExpectedVersion) -> None:
    require_version(
        f"record {record.id}",
        record.version,
        expected,
        read_again=(
            f"GET /api/records/{record.type}/{record.id} or `crmflow records get {record.id}`"
        ),
    )


def view_in(conn: Connection, record_id: int) -> RecordView:
    """The record `record_id` as the API shows it, read on `conn`."""
    row = store.record_with_owner(conn, record_id)
    if row is None:
        raise NotFoundError(f"no record with id {record_id}")
    return record_view(row)


def _locked(
    conn: Connection, ids: set[int], current: Mapping[int, StoredRecord]
) -> dict[int, StoredRecord]:
    """The records among `ids` that exist, as stored now: from `current`, the others read and
    locked (a record absent from `current` may be one the caller did not read)."""
    known = {i: current[i] for i in ids if i in current}
    if len(known) < len(ids):
        known.update(store.lock_records(conn, ids - known.keys()))
    return known


def change_of(
    record: StoredRecord, values: Mapping[str, Any], owner_id: int | None
) -> RecordUpdate | None:
    """The change that checked `values` (None clears a field) and `owner_id` make to `record`;
    None when they change nothing (no event, no new version)."""
    after = store.merged(record.data, values)
    if after == record.data and owner_id == record.owner_id:
        return None
    return RecordUpdate(record, after, owner_id)


def create_record(
    ctx: Context,
    actor: Actor,
    type_key: str,
    values: Mapping[str, Any],
    *,
    owner: str | int | None = None,
) -> RecordView:
    """A new record of `type_key`, owned by `owner` (a username or id; the actor by default)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        rtype = record_type_in(conn, type_key)
        data = store.without_nulls(
            rtype.normalise(values, zone=ctx.zone, max_field_chars=ctx.settings.max_field_chars)
        )
        owners, problems = LinkResolver(rtype).resolve(conn, [(data, owner)], actor.id)
        refuse(rtype, problems[0])
        [record_id] = store.insert_records(
            conn, type_key, [NewRecord(data, owners[0])], actor_id=actor.id, now=now
        )
        return view_in(conn, record_id)


def update_record(
    ctx: Context,
    actor: Actor,
    record_id: int,
    values: Mapping[str, Any],
    *,
    owner: str | int | None = None,
    if_version: ExpectedVersion = None,
) -> RecordView:
    """Change the given fields (None clears one) and, if given, the owner.

    A change event is written, and the version bumped, only when something actually changed.
    With `if_version`, PreconditionFailedError unless the record is at that version (checked on
    the locked row, in the write's transaction).
    """
    with ctx.engine.begin() as conn:
        record = _load(conn, record_id, for_update=True)
        _require_version(record, if_version)
        rtype = record_type_in(conn, record.type)
        given = rtype.normalise(
            values, zone=ctx.zone, partial=True, max_field_chars=ctx.settings.max_field_chars
        )
        owners, problems = LinkResolver(rtype).resolve(conn, [(given, owner)], record.owner_id)
        refuse(rtype, problems[0])
        change = change_of(record, given, owners[0])
        if change is not None:
            store.update_records(conn, [change], actor_id=actor.id, now=ctx.now())
            invitations.follow_updates(conn, [change], now=ctx.now())
        return view_in(conn, record_id)


def delete_record(
    ctx: Context, actor: Actor, record_id: int, *, if_version: ExpectedVersion = None
) -> None:
    """Delete a record (managers and admins); its change events and history are kept.
    With `if_version`, PreconditionFailedError unless the record is at that version."""
    require_manager(actor, "delete records")
    with ctx.engine.begin() as conn:
        record = _load(conn, record_id, for_update=True)
        _require_version(record, if_version)
        store.delete_record(conn, record, actor_id=actor.id, now=ctx.now())
        invitations.follow_deletes(conn, [record], now=ctx.now())


def get_record(ctx: Context, record_id: int) -> RecordView:
    with read_connection(ctx.engine) as conn:
        return view_in(conn, record_id)


def list_records(
    ctx: Context, type_key: str, *, after: int | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page[RecordView]:
    """Records of one type in id order, `limit` at a time (pass `next_after` back as `after`)."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        record_type_in(conn, type_key)
        rows = store.record_page(conn, type_key, after=after, limit=size + 1)
    return keyset_page([record_view(r) for r in rows], size)


def record_changes(
    ctx: Context, record_id: int, *, after: int | None = None, limit: int = 100
) -> Page[ChangeView]:
    """The change events of one record, oldest first (also after the record was deleted)."""
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = store.change_page(conn, record_id=record_id, after=after, limit=size + 1)
        if not rows and after is None:
            _load(conn, record_id)  # NotFoundError for a record that never existed
    return keyset_page([_change_view(r) for r in rows], size)


def change_feed(ctx: Context, *, after: int | None = None, limit: int = 500) -> Page[ChangeView]:
    """Every change event in id order, from `after` on: what triggers flows.

    On PostgreSQL ids come from a sequence, so two concurrent transactions may commit their events
    out of id order; a reader that must never skip one re-reads a short window behind its cursor.
    """
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = store.change_page(conn, after=after, limit=size + 1)
    return keyset_page([_change_view(r) for r in rows], size)


# Not frozen, as `RecordSnapshot` (crmflow.engine.runtime): one per record a batch changes.
@dataclass(slots=True)
class FieldChange:
    """New values for some fields of one record (None clears a field), as a flow's step asks."""

    record_id: int
    values: Mapping[str, Any]


def update_records_in(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    items: Sequence[FieldChange],
    *,
    known: KnownRecords | None = None,
) -> list[str | None]:
    """Apply many field changes on an open transaction: the checks of `update_record` (the
    record type's fields and values, users and referenced records), one change event per change
    that changed something. Changes to the same record apply in order, each seeing the last.

    Returns, per item, None when it was applied or the reason it was refused (the record is
    gone, a value does not fit); a refused item changes nothing and the others still apply.
    Set-based: one query loads the records, one per record type resolves links, and the
    records and events are written with one executemany each (`store.records.update_records`,
    the write of every record change).

    `known`: records and record types the caller read in this transaction after taking
    SQLite's write lock (or on a snapshot nothing was committed after), as stored: those are
    not read again; the others are read and locked here. Were a record not current after all,
    the write's version check would refuse the whole transaction (ConflictError), never
    overwrite a newer change.
    """
    if not items:
        return []
    rows = _locked(conn, {item.record_id for item in items}, known.records if known else {})
    types: dict[str, RecordType] = dict(known.types) if known else {}
    resolvers: dict[str, LinkResolver] = {}
    given: list[dict[str, Any] | None] = []
    results: list[str | None] = []
    zone, max_chars = ctx.zone, ctx.settings.max_field_chars
    for item in items:
        row = rows.get(item.record_id)
        if row is None:
            given.append(None)
            results.append(f"record {item.record_id} no longer exists")
            continue
        if row.type not in types:
            types[row.type] = record_type_in(conn, row.type)
        if row.type not in resolvers:
            resolvers[row.type] = LinkResolver(types[row.type])
        try:
            given.append(
                types[row.type].normalise(
                    item.values, zone=zone, partial=True, max_field_chars=max_chars
                )
            )
            results.append(None)
        except InvalidInputError as exc:
            given.append(None)
            results.append("; ".join(str(p) for p in exc.problems))
    for type_key, resolver in resolvers.items():
        # Only the changes that set a user or record field have something to look up (a
        # flow's step mostly sets a status or a text).
        links = resolver.link_fields
        positions = [
            i
            for i, item in enumerate(items)
            if (values := given[i]) is not None
            and not links.isdisjoint(values)
            and rows[item.record_id].type == type_key
        ]
        if not positions:
            continue
        pairs = [(given[i] or {}, None) for i in positions]
        _, problems = resolver.resolve(conn, pairs, None)
        for i, found in zip(positions, problems, strict=True):
            if found:
                given[i] = None
                results[i] = "; ".join(str(p) for p in found)
    current = dict(rows)  # each record as the changes before have left it
    updates: list[RecordUpdate] = []
    for item, values in zip(items, given, strict=True):
        if values is None:
            continue
        record = current[item.record_id]
        change = change_of(record, values, record.owner_id)
        if change is None:
            continue
        updates.append(change)
        current[record.id] = StoredRecord(
            record.id, record.type, record.owner_id, change.data, record.version
        )
    store.update_records(conn, updates, actor_id=actor.id, now=ctx.now())
    invitations.follow_updates(conn, updates, now=ctx.now())
    return results
