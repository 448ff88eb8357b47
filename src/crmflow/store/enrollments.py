"""The enrollment repository: due work claimed in batches, loaded and written set-based.

A worker claims a batch in a short transaction: on PostgreSQL `SELECT ... FOR UPDATE SKIP
LOCKED LIMIT n` (concurrent workers take disjoint batches without waiting for each other), on
SQLite the single writer (`BEGIN IMMEDIATE`). The claim sets a lease (owner, until) and commits.
The batch is then processed in one transaction that first locks its rows again *and* checks that
the lease is still ours: a worker that was too slow (its lease expired and another worker took the
rows) writes nothing, and a worker that died leaves rows that are free once the lease expires.
Every read and write of a batch is one statement (or one executemany), never one per enrollment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import FlowDefinition, FlowStatus
from crmflow.engine.entry import INSIDE, PastEntry
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    EnrollmentState,
    RecordSnapshot,
    StepRunLog,
)
from crmflow.store.bulk import Writer
from crmflow.store.database import json_value, read_connection
from crmflow.store.flow_access import FlowFilter
from crmflow.store.idlists import among
from crmflow.store.outbox import insert_ignoring_duplicates  # moved; still reached from here
from crmflow.store.schema import enrollments, flow_versions, flows, records, users
from crmflow.store.step_runs import write_runs
from crmflow.store.wakeups import NOTIFY_CHANNEL, mark_work

__all__ = [
    "NOTIFY_CHANNEL",
    "RUNNING",
    "RUNNING_FLOWS",
    "EnrollmentRow",
    "FlowInfo",
    "claim",
    "count_by_status_and_step",
    "due_ids",
    "enrollment_with_flow_key",
    "enrollments_of_record",
    "insert_enrollment",
    "insert_enrollments",
    "insert_ignoring_duplicates",
    "insert_starts",
    "inside_ids",
    "load_flows",
    "load_records",
    "lock",
    "next_due",
    "notify_due",
    "past_entries",
    "position",
    "release",
    "runs_page",
    "save",
]

# Statuses of an enrollment that is still inside its flow (a start held by the loop guard too).
RUNNING = INSIDE
# Only these flows move; a paused or archived flow's records wait where they are, frozen.
RUNNING_FLOWS = (FlowStatus.ACTIVE.value, FlowStatus.DRAINING.value)


@dataclass(frozen=True)
class EnrollmentRow:
    id: int
    flow_id: int
    flow_version: int
    record_id: int
    status: str
    step_key: str | None
    due_at: datetime | None
    entered_at: datetime
    state: EnrollmentState | None  # None: not entered yet (a follow-up due at `due_at`)


@dataclass(frozen=True)
class FlowInfo:
    id: int
    key: str
    status: str
    version: int
    definition: FlowDefinition
    owner: str | None


def _json_text(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[str]:
    """A JSON column read as its text: pydantic and orjson parse text several times faster than
    the driver's json.loads followed by validating Python objects (a batch reads hundreds)."""
    if dialect == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


def _row(r: sa.Row[Any]) -> EnrollmentRow:
    return EnrollmentRow(
        id=r.id,
        flow_id=r.flow_id,
        flow_version=r.flow_version,
        record_id=r.record_id,
        status=r.status,
        step_key=r.step_key,
        due_at=r.due_at,
        entered_at=r.entered_at,
        state=EnrollmentState.model_validate_json(r.state) if r.state is not None else None,
    )


def insert_enrollment(
    conn: sa.Connection,
    *,
    flow_id: int,
    flow_version: int,
    record_id: int,
    now: datetime,
    due_at: datetime,
    status: str = "active",
) -> int:
    """A new enrollment that enters its flow at `due_at` (its state is written when it does)."""
    row = _new_row(flow_id, flow_version, record_id, due_at, now=now, status=status)
    inserted = conn.execute(enrollments.insert().values(row).returning(enrollments.c.id))
    return int(inserted.scalar_one())


def insert_starts(
    conn: sa.Connection, starts: Sequence[tuple[int, int, int, datetime]], *, now: datetime
) -> None:
    """New enrollments, one per (flow id, flow version, record id, due time), each entering its
    flow at its due time: `insert_enrollment` for many at once, in one statement."""
    if starts:
        conn.execute(enrollments.insert(), [_new_row(*start, now=now) for start in starts])


def insert_enrollments(
    conn: sa.Connection,
    rows: Sequence[tuple[int, int, int]],
    *,
    now: datetime,
    due_at: datetime,
) -> list[int]:
    """New enrollments (flow id, flow version, record id) that enter at `due_at` (their state is
    written when they do), in one executemany; their ids, in the order of `rows`."""
    if not rows:
        return []
    result = conn.execute(
        enrollments.insert().returning(enrollments.c.id, sort_by_parameter_order=True),
        [_new_row(f, v, r, due_at, now=now) for f, v, r in rows],
    )
    return [int(i) for i in result.scalars()]


def _new_row(
    flow_id: int,
    flow_version: int,
    record_id: int,
    due_at: datetime,
    *,
    now: datetime,
    status: str = "active",
) -> dict[str, Any]:
    over = status not in RUNNING
    return {
        "flow_id": flow_id,
        "flow_version": flow_version,
        "record_id": record_id,
        "status": status,
        "entered_at": now,
        "finished_at": now if over else None,
        "due_at": None if over else due_at,
        "updated_at": now,
    }


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        enrollments.c.status.in_(RUNNING),
        enrollments.c.due_at <= now,
        sa.or_(enrollments.c.lease_until.is_(None), enrollments.c.lease_until < now),
        enrollments.c.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
    )


def due_ids(conn: sa.Connection, *, now: datetime, limit: int) -> list[int]:
    """Up to `limit` enrollments of running flows due at `now` and not leased, due first.

    On PostgreSQL the rows are locked, skipping those another worker is claiming right now."""
    query = (
        sa.select(enrollments.c.id)
        .where(_due(now))
        .order_by(enrollments.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=enrollments)
    )
    return [int(i) for i in conn.execute(query).scalars()]


def claim(
    engine: sa.Engine, *, now: datetime, owner: str, limit: int, lease: timedelta
) -> list[int]:
    """Lease up to `limit` due enrollments of running flows to `owner`; their ids, due first."""
    with engine.begin() as conn:
        ids = due_ids(conn, now=now, limit=limit)
        if ids:
            conn.execute(
                enrollments.update()
                .where(among(enrollments.c.id, ids, conn))
                .values(lease_owner=owner, lease_until=now + lease)
            )
    return ids


def lock(conn: sa.Connection, ids: Sequence[int], *, owner: str | None) -> list[EnrollmentRow]:
    """The enrollments `ids`, locked for this transaction, in id order. With `owner`, only those
    whose lease is still `owner`'s: the others were taken over and must not be written."""
    e = enrollments.c
    # Only what EnrollmentRow holds: every date-time column read is a conversion per row.
    columns: list[sa.ColumnElement[Any]] = [
        e.id,
        e.flow_id,
        e.flow_version,
        e.record_id,
        e.status,
        e.step_key,
        e.due_at,
        e.entered_at,
        _json_text(e.state, conn.dialect.name).label("state"),
    ]
    query: sa.Select[Any] = sa.select(*columns).where(among(e.id, ids, conn))
    if owner is not None:
        query = query.where(e.lease_owner == owner)
    return [_row(r) for r in conn.execute(query.order_by(e.id).with_for_update())]


def inside_ids(conn: sa.Connection, flow_id: int, record_id: int) -> list[int]:
    """The enrollments of a record still inside a flow (those not entered yet included)."""
    e = enrollments.c
    query = sa.select(e.id).where(
        e.flow_id == flow_id, e.record_id == record_id, e.status.in_(RUNNING)
    )
    return list(conn.execute(query).scalars().all())


def position(conn: sa.Connection, enrollment_id: int) -> tuple[str, str | None]:
    """Where the enrollment `enrollment_id` (which exists) is: its status and step key."""
    e = enrollments.c
    row = conn.execute(sa.select(e.status, e.step_key).where(e.id == enrollment_id)).one()
    return row.status, row.step_key


def release(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Give up the leases of enrollments that were claimed but not moved (nothing to do)."""
    if ids:
        conn.execute(
            enrollments.update()
            .where(among(enrollments.c.id, ids, conn))
            .values(lease_owner=None, lease_until=None)
        )


_PAST_CHUNK = 5_000  # (flow, record) pairs per history query: well below SQLite's parameter limit


def past_entries(
    conn: sa.Connection, pairs: Iterable[tuple[int, int]], *, since: datetime | None = None
) -> dict[tuple[int, int], list[PastEntry]]:
    """The enrollments of each (flow id, record id) pair, newest first, in one query per chunk
    of records: what the entry rules (`engine.entry`) judge a new start by. With `since`, only
    those that bear on the policies: inside now, or entered after `since` (the caller passes
    the longest look-back it needs), or any for 'never'."""
    wanted = set(pairs)
    out: dict[tuple[int, int], list[PastEntry]] = {}
    if not wanted:
        return out
    e = enrollments.c
    flow_ids = sorted({f for f, _ in wanted})
    record_ids = sorted({r for _, r in wanted})
    for i in range(0, len(record_ids), _PAST_CHUNK):
        query = (
            sa.select(e.flow_id, e.record_id, e.status, e.step_key, e.entered_at)
            .where(e.record_id.in_(record_ids[i : i + _PAST_CHUNK]))
            .where(e.flow_id.in_(flow_ids))
            .order_by(e.entered_at.desc(), e.id.desc())
        )
        if since is not None:
            query = query.where(sa.or_(e.status.in_(RUNNING), e.entered_at > since))
        for r in conn.execute(query):
            key = (r.flow_id, r.record_id)
            if key in wanted:
                out.setdefault(key, []).append(PastEntry(r.status, r.step_key, r.entered_at))
    return out


def load_flows(
    conn: sa.Connection,
    pairs: Iterable[tuple[int, int]],
    cache: dict[tuple[int, int], FlowDefinition],
) -> dict[tuple[int, int], FlowInfo]:
    """The flows of (flow id, version) pairs with their status read now; definitions are parsed
    once per version (`cache`), since a version that has run never changes."""
    wanted = set(pairs)
    if not wanted:
        return {}
    flow_ids = sorted({f for f, _ in wanted})
    rows = {
        r.id: r
        for r in conn.execute(
            sa.select(flows.c.id, flows.c.key, flows.c.status, users.c.username)
            .outerjoin(users, users.c.id == flows.c.owner_id)
            .where(flows.c.id.in_(flow_ids))
        )
    }
    missing = sorted(p for p in wanted if p not in cache)
    if missing:
        documents = conn.execute(
            sa.select(flow_versions.c.flow_id, flow_versions.c.version, flow_versions.c.document)
            .where(flow_versions.c.flow_id.in_(sorted({f for f, _ in missing})))
            .where(flow_versions.c.version.in_(sorted({v for _, v in missing})))
        )
        for d in documents:
            if (d.flow_id, d.version) in wanted:
                cache[(d.flow_id, d.version)] = FlowDefinition.model_validate(d.document)
    return {
        (f, v): FlowInfo(
            id=f,
            key=rows[f].key,
            status=rows[f].status,
            version=v,
            definition=cache[(f, v)],
            owner=rows[f].username,
        )
        for f, v in wanted
        if f in rows and (f, v) in cache
    }


def load_records(
    conn: sa.Connection, ids: Iterable[int], types: dict[str, RecordType]
) -> dict[int, RecordSnapshot]:
    """Records as the engine sees them (every field of the type; the owner's username), in one
    query. Deleted records are absent."""
    out: dict[int, RecordSnapshot] = {}
    r_ = records.c
    data = _json_text(r_.data, conn.dialect.name).label("data")
    columns = [r_.id, r_.type, data, r_.created_at, r_.updated_at]
    blanks: dict[str, dict[str, Any]] = {}  # per record type: its fields, none with a value
    query = (
        sa.select(*columns, users.c.username.label("owner_name"))
        .outerjoin(users, users.c.id == records.c.owner_id)
        .where(among(r_.id, set(ids), conn))
    )
    for r in conn.execute(query):
        rtype = types.get(r.type)
        values = json_value(r.data)
        if rtype is not None:
            # Every field of the type (None when empty), and only those.
            empty = blanks.get(r.type)
            if empty is None:
                empty = blanks[r.type] = dict.fromkeys(rtype.field_keys)
            if values.keys() <= empty.keys():
                values = {**empty, **values}
            else:
                values = {k: values.get(k) for k in empty}
        out[r.id] = RecordSnapshot(
            id=r.id,
            type=r.type,
            values=values,
            owner=r.owner_name,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
    return out


_SAVE_STATE = (
    "update enrollments set flow_version = ?, status = ?, step_key = ?, due_at = ?,"
    " finished_at = ?, state = {json}, updated_at = ?, lease_owner = null, lease_until = null"
    " where id = ?"
)


def save(
    conn: sa.Connection,
    states: Sequence[EnrollmentState],
    logs: Sequence[StepRunLog],
    *,
    now: datetime,
    runs_before: Mapping[int, int] | None = None,
) -> None:
    """Write the new states (columns + JSON, lease released) and the step runs, in bulk.

    `runs_before` maps an enrollment to the number of step runs its state had before this batch:
    a log of a later run is a new row for sure, and only the others (a waiting run that
    completes) are looked up and merged. Without it every log is looked up.
    """
    writer = Writer(conn)
    time = writer.time
    writer.executemany(
        _SAVE_STATE.format(json=writer.json_placeholder),
        [
            (
                s.flow_version,
                s.status.value,
                s.step_key,
                None if s.is_over else time(s.due_at),
                time(s.finished_at),
                # pydantic writes JSON text directly, several times faster than a dict that the
                # driver then serialises.
                s.model_dump_json(),
                time(now),
                s.enrollment_id,
            )
            for s in states
        ],
    )
    write_runs(writer, logs, runs_before=runs_before)


def next_due(engine: sa.Engine) -> datetime | None:
    """When the earliest pending enrollment of a running flow can be claimed: its due time, or
    the end of another worker's lease on it (so an idle worker does not spin on held rows)."""
    e = enrollments.c
    free_at = sa.case((e.lease_until > e.due_at, e.lease_until), else_=e.due_at)
    with read_connection(engine) as conn:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(sa.type_coerce(free_at, e.due_at.type))).where(
                e.status.in_(RUNNING),
                e.due_at.is_not(None),
                e.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
            )
        ).scalar_one()
    return value


def notify_due(conn: sa.Connection) -> None:
    """Wake idle workers at commit: work may be due sooner than they planned."""
    mark_work(conn)


# -- what people see of enrollments (the run views) ---------------------------------------------


def _with_flow_key() -> sa.Select[Any]:
    return sa.select(enrollments, flows.c.key.label("flow_key")).join(
        flows, flows.c.id == enrollments.c.flow_id
    )


def enrollment_with_flow_key(conn: sa.Connection, enrollment_id: int) -> sa.Row[Any]:
    """The enrollment `enrollment_id` (which exists): every column, and its flow's `.flow_key`."""
    return conn.execute(_with_flow_key().where(enrollments.c.id == enrollment_id)).one()


def enrollments_of_record(
    conn: sa.Connection, record_id: int, visible: FlowFilter
) -> list[sa.Row[Any]]:
    """The record's enrollments in the flows `visible` lets through, oldest first (as
    `enrollment_with_flow_key`)."""
    query = (
        _with_flow_key()
        .where(enrollments.c.record_id == record_id, visible)
        .order_by(enrollments.c.id)
    )
    return list(conn.execute(query))


def count_by_status_and_step(
    conn: sa.Connection, flow_id: int
) -> list[tuple[str, str | None, int]]:
    """How many of a flow's enrollments there are per (status, step key)."""
    e = enrollments.c
    query = (
        sa.select(e.status, e.step_key, sa.func.count())
        .where(e.flow_id == flow_id)
        .group_by(e.status, e.step_key)
    )
    return [(r[0], r[1], int(r[2])) for r in conn.execute(query)]


def runs_page(
    conn: sa.Connection,
    flow_id: int,
    *,
    status: str | None,
    step: str | None,
    after: int | None,
    limit: int,
) -> list[sa.Row[Any]]:
    """Up to `limit` of a flow's enrollments after id `after`, in id order, with `status` / at
    `step` when given: their columns for a list, and the record's `.data` (None once deleted)."""
    e = enrollments.c
    query = (
        sa.select(
            e.id,
            e.record_id,
            e.status,
            e.step_key,
            e.due_at,
            e.entered_at,
            e.finished_at,
            e.state,
            records.c.data,
        )
        .outerjoin(records, records.c.id == e.record_id)
        .where(e.flow_id == flow_id)
        .order_by(e.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(e.status == status)
    if step is not None:
        query = query.where(e.step_key == step)
    if after is not None:
        query = query.where(e.id > after)
    return list(conn.execute(query))
