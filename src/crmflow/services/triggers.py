"""Records entering flows through their triggers, and why they did not.

- **Record changes** (`ingest_changes`): the feed of `record_changes` is read after the cursor
  `feed_cursors['record_changes']`, a batch at a time. Each change is matched against the
  triggers of the flows of its record type (created / updated / deleted / field_changed /
  status_changed); the records that may enter do (their first steps run in the same transaction,
  through `move_batch`, as a manual start does), and every record that matched a trigger but did
  not enter leaves an `entry_decisions` row with the reason. The same batch wakes the
  enrollments of the changed records (`RecordChanged`: wait steps, date timings). The cursor
  moves in the transaction that did the work, so a crash redoes the batch or none of it.
- **Start lists** (`enter_start_lists`): when a flow starts, its saved queries' records enter with
  one `INSERT INTO enrollments ... SELECT`; the worker runs their first steps.
- **Schedules and dates** (`fire_due_triggers`): `trigger_schedules` holds the next run of each
  `schedule` and `date_reached` trigger of every active flow; each run enters the records the
  trigger selects then, set-based, and sets the next run.
- **Why not** (`entry_decisions_for`): the reasons, per flow or per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.engine.definition import FlowDefinition, ReentryPolicy
from crmflow.engine.definition.triggers import (
    DateReachedTrigger,
    FieldChangedTrigger,
    RecordUpdatedTrigger,
    ScheduleTrigger,
    StatusChangedTrigger,
    Trigger,
)
from crmflow.engine.localtime import as_utc, local_date
from crmflow.engine.recordtypes import FieldType, RecordType, format_datetime, normalise_value
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.timing import date_trigger_due, next_daily_at, schedule_due
from crmflow.errors import NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.enrollments import definitions_cache, move_batch, trip_loop_guard
from crmflow.services.entry import (
    Candidate,
    Decision,
    FlowRef,
    admission_refusal,
    decide_entries,
    flow_zone,
    insert_enrollments,
    write_decisions,
)
from crmflow.services.flows import _flow_row, _visible_to
from crmflow.services.queries import matching_ids
from crmflow.services.record_types import catalog_in
from crmflow.services.records import OWNER_KEY
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.schema import (
    enrollments,
    entry_decisions,
    feed_cursors,
    flows,
    record_changes,
    records,
    trigger_schedules,
    users,
)
from crmflow.store.types import UTCDateTime

__all__ = [
    "FEED",
    "NotEntered",
    "enter_start_lists",
    "entry_decisions_for",
    "fire_due_triggers",
    "ingest_changes",
    "process_triggers",
]

FEED = "record_changes"
# PostgreSQL only: a gap in the change ids that is being waited for (see `_settle`).
_GAP_HORIZON = "record_changes:gap_horizon"  # xmax of the snapshot that first saw the gap
_GAP_BELOW = "record_changes:gap_below"  # the highest change id that snapshot saw
_CHANGE_TRIGGERS = frozenset(
    {"record_created", "record_updated", "record_deleted", "field_changed", "status_changed"}
)
_TIMED_TRIGGERS = frozenset({"schedule", "date_reached"})
_MAX_CATCH_UP = timedelta(days=7)  # date triggers missed while no worker ran: at most this far
_DATETIME_POLL = timedelta(minutes=5)  # date-time fields without `time`: how often to look
_IDS_CHUNK = 5_000
_ARCHIVED = admission_refusal("archived") or "flow archived"
_META_DATES = ("created_at", "updated_at")
ChangeKind = Literal["created", "updated", "deleted"]


def process_triggers(ctx: Context, *, now: datetime | None = None) -> int:
    """Everything triggers have to do at `now`: the change feed, then schedules and dates.
    How many changes and timed triggers were handled (0: nothing to do). The worker's hook."""
    at = now or ctx.now()
    return ingest_changes(ctx, now=at) + fire_due_triggers(ctx, now=at)


# -- the change feed -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    id: int
    record_id: int
    record_type: str
    kind: str  # created | updated | deleted
    before: dict[str, Any]
    after: dict[str, Any]
    actor_id: int | None
    at: datetime

    @property
    def changed(self) -> set[str]:
        keys = self.before.keys() | self.after.keys()
        return {k for k in keys if self.before.get(k) != self.after.get(k)}

    def event(self, names: dict[int, str]) -> RecordChanged:
        """The change as conditions see it (`change.fields`, `change.before.x`, `change.by`)."""

        def values(snap: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in snap.items() if k != OWNER_KEY}
            if snap:
                out["owner"] = names.get(snap.get(OWNER_KEY) or 0)
            return out

        fields = sorted("owner" if k == OWNER_KEY else k for k in self.changed)
        return RecordChanged(
            change=cast(ChangeKind, self.kind),
            fields=tuple(fields),
            before=values(self.before),
            after=values(self.after),
            by=names.get(self.actor_id or 0),
            at=self.at,
        )


def ingest_changes(ctx: Context, *, now: datetime | None = None, limit: int = 500) -> int:
    """Consume the record changes written since the last call, `limit` per transaction; how many
    were consumed. Safe to call from many workers at once (one of them ingests at a time)."""
    at = now or ctx.now()
    system = ensure_system_user(ctx)
    total = 0
    while True:
        consumed, more = _ingest_batch(ctx, system, now=at, limit=limit)
        total += consumed
        if not more:
            return total


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _cursor_rows(conn: sa.Connection, now: datetime) -> dict[str, int] | None:
    """The feed's cursor rows, locked for this transaction; None when another worker holds them
    (it is ingesting right now: nothing for us to do)."""
    names = [FEED, _GAP_HORIZON, _GAP_BELOW]
    conn.execute(
        _insert(conn, feed_cursors).on_conflict_do_nothing(index_elements=["name"]),
        [{"name": n, "position": 0, "updated_at": now} for n in names],
    )
    query = sa.select(feed_cursors.c.name, feed_cursors.c.position).where(
        feed_cursors.c.name.in_(names)
    )
    rows = {r.name: int(r.position) for r in conn.execute(query.with_for_update(skip_locked=True))}
    return rows if len(rows) == len(names) else None


def _read_feed(
    conn: sa.Connection, position: int, limit: int
) -> tuple[list[sa.Row[Any]], int, int]:
    """The changes after `position` in id order, and (PostgreSQL) the xmin / xmax of the very
    snapshot they were read with (one statement, so one snapshot)."""
    after = (
        sa.select(record_changes)
        .where(record_changes.c.id > position)
        .order_by(record_changes.c.id)
        .limit(limit)
        .subquery("c")
    )
    if conn.dialect.name != "postgresql":
        rows = conn.execute(sa.select(after).order_by(after.c.id)).all()
        return list(rows), 0, 0

    def xid(fn: str) -> sa.ColumnElement[int]:
        snapshot = getattr(sa.func, fn)(sa.func.pg_current_snapshot())
        return sa.cast(sa.cast(snapshot, sa.Text), sa.BigInteger)

    snap = sa.select(xid("pg_snapshot_xmin").label("lo"), xid("pg_snapshot_xmax").label("hi"))
    snap_q = snap.subquery("s")
    query = (
        sa.select(snap_q.c.lo, snap_q.c.hi, after)
        .select_from(snap_q.outerjoin(after, sa.true()))
        .order_by(after.c.id)
    )
    found = conn.execute(query).all()
    lo, hi = int(found[0].lo), int(found[0].hi)
    return [r for r in found if r.id is not None], lo, hi


def _settle(
    ids: Sequence[int], position: int, gap: tuple[int, int], *, snapshot: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """How far the cursor may move over `ids` (read after `position`), and the gap state.

    Why: on PostgreSQL ids come from a sequence when a row is inserted, but become visible when
    its transaction commits, so id 41 may commit after id 42. A reader that moved its cursor past
    42 would never see 41. So the cursor stops at the first gap in the ids. A gap is either a
    transaction still in flight or one that rolled back (gone for good); to tell them apart,
    the first time a gap is seen we keep the xmax of that snapshot (every transaction that could
    hold a missing id has an xid below it: it drew the id before the higher id we saw was
    drawn, after its first write to the record) and the highest id seen. Once a later snapshot's
    xmin reaches that horizon, all those transactions have ended; a missing id up to the kept
    id that is still not visible then never will be, and the cursor moves past it. Nothing is
    ever skipped that could still commit, and no change is read twice, so no de-duplication is
    needed. The price: a gap behind a long transaction holds the feed until it ends.

    SQLite has one writer at a time and ids are given in commit order: a gap is a rollback.
    `gap` is (horizon, highest id) or (0, 0); `snapshot` is (xmin, xmax), None on SQLite.
    """
    horizon, below = gap
    cursor = position
    stopped = False
    for change_id in ids:
        if change_id != cursor + 1 and snapshot is not None:
            passed = horizon > 0 and snapshot[0] >= horizon and change_id - 1 <= below
            if not passed:
                stopped = True
                break
        cursor = change_id
    if not stopped:
        return cursor, (0, 0)
    assert snapshot is not None
    if horizon > 0 and snapshot[0] < horizon:
        return cursor, gap  # still waiting for the transactions of the gap we know about
    return cursor, (snapshot[1], max(ids))


def _ingest_batch(ctx: Context, system: Actor, *, now: datetime, limit: int) -> tuple[int, bool]:
    with ctx.engine.begin() as conn:
        cursor = _cursor_rows(conn, now)
        if cursor is None:
            return 0, False
        position = cursor[FEED]
        if conn.dialect.name == "sqlite" and position:
            # SQLite gives max(id) + 1 to a new row: if the table was emptied (pruned), ids
            # start over below the cursor, and those changes must still be read.
            top = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar_one()
            if top is None or int(top) < position:
                position = 0
        rows, lo, hi = _read_feed(conn, position, limit)
        snapshot = (lo, hi) if conn.dialect.name == "postgresql" else None
        gap = (cursor[_GAP_HORIZON], cursor[_GAP_BELOW])
        new_position, new_gap = _settle([r.id for r in rows], position, gap, snapshot=snapshot)
        batch = [_as_change(r) for r in rows if r.id <= new_position]
        if batch:
            _handle_changes(conn, ctx, system, batch, now=now)
        values = {FEED: new_position, _GAP_HORIZON: new_gap[0], _GAP_BELOW: new_gap[1]}
        conn.execute(
            feed_cursors.update()
            .where(feed_cursors.c.name == sa.bindparam("n"))
            .values(position=sa.bindparam("p"), updated_at=now),
            [{"n": n, "p": p} for n, p in values.items()],
        )
    more = bool(rows) and len(rows) == limit and new_position == rows[-1].id
    return len(batch), more


def _as_change(row: sa.Row[Any]) -> _Change:
    return _Change(
        id=row.id,
        record_id=row.record_id,
        record_type=row.record_type,
        kind=row.kind,
        before=dict(row.before or {}),
        after=dict(row.after or {}),
        actor_id=row.actor_id,
        at=row.at,
    )


@dataclass(frozen=True)
class _Watcher:
    """A flow whose triggers listen to record changes, with from/to values in stored form."""

    flow: FlowRef
    started_at: datetime | None
    triggers: list[tuple[Trigger, Any, Any]]  # (trigger, from, to)


def _stored(rtype: RecordType | None, key: str, value: Any, zone: ZoneInfo) -> Any:
    """A trigger's from/to value as records store it (dates as text, numbers as numbers)."""
    fdef = rtype.field(key) if rtype is not None else None
    if value is None or fdef is None:
        return value
    try:
        return normalise_value(fdef, value, zone=zone)
    except ValueError:  # checked when the flow was saved; a changed type keeps the raw value
        return value


def _watchers(
    conn: sa.Connection, ctx: Context, types: dict[str, RecordType], record_types: set[str]
) -> dict[str, list[_Watcher]]:
    """Per record type, the non-draft flows with change triggers (a paused, draining or
    archived flow is listed too, so that its refusal can be said)."""
    rows = conn.execute(
        sa.select(flows.c.id, flows.c.current_version, flows.c.started_at)
        .where(flows.c.record_type.in_(sorted(record_types)))
        .where(flows.c.status != "draft")
    ).all()
    infos = repo.load_flows(conn, [(r.id, r.current_version) for r in rows], definitions_cache(ctx))
    started = {r.id: r.started_at for r in rows}
    out: dict[str, list[_Watcher]] = {}
    for (flow_id, version), info in sorted(infos.items(), key=lambda item: item[0]):
        definition = info.definition
        zone = flow_zone(ctx, definition)
        rtype = types.get(definition.record_type)
        found: list[tuple[Trigger, Any, Any]] = []
        for t in definition.triggers:
            if t.type not in _CHANGE_TRIGGERS:
                continue
            if isinstance(t, FieldChangedTrigger):
                found.append(
                    (t, _stored(rtype, t.field, t.from_, zone), _stored(rtype, t.field, t.to, zone))
                )
            elif isinstance(t, StatusChangedTrigger):
                found.append(
                    (
                        t,
                        _stored(rtype, "status", t.from_, zone),
                        _stored(rtype, "status", t.to, zone),
                    )
                )
            else:
                found.append((t, None, None))
        if found:
            ref = FlowRef(flow_id, info.key, info.status, version, definition)
            out.setdefault(definition.record_type, []).append(
                _Watcher(ref, started[flow_id], found)
            )
    return out


def _fired(trigger: Trigger, old: Any, new: Any, change: _Change) -> bool:
    """Whether `trigger` fires for `change`; `old` / `new` are its from / to in stored form."""
    if trigger.type == "record_created":
        return change.kind == "created"
    if trigger.type == "record_deleted":
        return change.kind == "deleted"
    if change.kind != "updated":
        return False
    if isinstance(trigger, RecordUpdatedTrigger):
        return not trigger.fields or bool(set(trigger.fields) & change.changed)
    key = trigger.field if isinstance(trigger, FieldChangedTrigger) else "status"
    before, after = change.before.get(key), change.after.get(key)
    if before == after:
        return False
    return (old is None or before == old) and (new is None or after == new)


def _snapshot(
    change: _Change, rtype: RecordType | None, current: RecordSnapshot | None, names: dict[int, str]
) -> RecordSnapshot:
    """The record as it was right after `change` (before it, for a deletion): what the entry
    condition is about, even when later changes are already in the feed."""
    values = change.before if change.kind == "deleted" else change.after
    keys = rtype.field_keys if rtype is not None else [k for k in values if k != OWNER_KEY]
    return RecordSnapshot(
        id=change.record_id,
        type=change.record_type,
        values={k: values.get(k) for k in keys},
        owner=names.get(values.get(OWNER_KEY) or 0),
        created_at=current.created_at if current is not None else None,
        updated_at=change.at,
    )


def _handle_changes(
    conn: sa.Connection, ctx: Context, system: Actor, batch: list[_Change], *, now: datetime
) -> None:
    types = catalog_in(conn)
    watchers = _watchers(conn, ctx, types, {c.record_type for c in batch})
    user_ids = {c.actor_id for c in batch if c.actor_id is not None}
    for c in batch:
        user_ids |= {int(s[OWNER_KEY]) for s in (c.before, c.after) if s.get(OWNER_KEY)}
    names: dict[int, str] = {
        r.id: r.username
        for r in conn.execute(
            sa.select(users.c.id, users.c.username).where(users.c.id.in_(sorted(user_ids)))
        )
    }
    current = repo.load_records(conn, {c.record_id for c in batch}, types)
    events = {c.id: c.event(names) for c in batch}

    # Enrollments inside a flow before this batch hear of their record's changes; those the batch
    # creates do not hear of the change that made them enter.
    _wake_enrolled(conn, ctx, system, batch, events, now=now)

    candidates: list[Candidate] = []
    refused: list[Decision] = []
    archived: dict[tuple[int, int], Decision] = {}
    for change in batch:
        for w in watchers.get(change.record_type, ()):
            if w.started_at is None or change.at < w.started_at:
                continue  # the change happened before the flow ever started
            fired = next((t for t, old, new in w.triggers if _fired(t, old, new, change)), None)
            if fired is None:
                continue
            if w.flow.status == "archived":
                # One reason per (flow, record), the latest change's (see `_write_archived`).
                archived[(w.flow.id, change.record_id)] = Decision(
                    w.flow.id, change.record_id, fired.type, _ARCHIVED, change.id
                )
                continue
            candidates.append(
                Candidate(
                    flow=w.flow,
                    record_id=change.record_id,
                    trigger=fired.type,
                    record=_snapshot(
                        change, types.get(change.record_type), current.get(change.record_id), names
                    ),
                    change=events[change.id],
                    change_id=change.id,
                    caused_by=names.get(change.actor_id or 0),
                )
            )
    verdict = decide_entries(conn, ctx, candidates, now=now)
    for tripped in verdict.tripped:
        trip_loop_guard(
            conn,
            flow_id=tripped.flow.id,
            flow_key=tripped.flow.key,
            flow_version=tripped.flow.version,
            controller=tripped.flow.definition.controller,
            record_id=tripped.record_id,
            told=tripped.caused_by,
            now=now,
        )
    refused += verdict.refused
    write_decisions(conn, refused, now=now)
    _write_archived(conn, list(archived.values()), now=now)
    admitted = verdict.admitted
    ids = insert_enrollments(
        conn, [(c.flow.id, c.flow.version, c.record_id) for c in admitted], now=now, due_at=now
    )
    if ids:
        entering = {eid: c.change for eid, c in zip(ids, admitted, strict=True) if c.change}
        move_batch(conn, ctx, system, repo.lock(conn, ids, owner=None), now=now, events=entering)
        repo.notify_due(conn)


def _write_archived(conn: sa.Connection, decisions: Sequence[Decision], *, now: datetime) -> None:
    """The reasons of records kept out of archived flows: one row per (flow, record), replaced
    by each new change, so an archived flow that still hears every change of its record type
    keeps as many reasons as records that changed since, not one per change forever. The row
    is written anew (not updated) so that it stays in its place in the newest-first listing."""
    if not decisions:
        return
    d = entry_decisions.c
    flow_ids = sorted({x.flow_id for x in decisions})
    record_ids = sorted({x.record_id for x in decisions})
    wanted = {(x.flow_id, x.record_id) for x in decisions}
    stale: list[int] = []
    for i in range(0, len(record_ids), _IDS_CHUNK):
        stale += [
            int(r.id)
            for r in conn.execute(
                sa.select(d.id, d.flow_id, d.record_id)
                .where(d.record_id.in_(record_ids[i : i + _IDS_CHUNK]))
                .where(d.flow_id.in_(flow_ids), d.reason == _ARCHIVED)
            )
            if (r.flow_id, r.record_id) in wanted
        ]
    for i in range(0, len(stale), _IDS_CHUNK):
        conn.execute(entry_decisions.delete().where(d.id.in_(stale[i : i + _IDS_CHUNK])))
    write_decisions(conn, decisions, now=now)


def _merge(events: Sequence[RecordChanged]) -> RecordChanged:
    """Several changes of one record in a batch, told as one: every field that changed, the
    values before the first and after the last."""
    if len(events) == 1:
        return events[0]
    first, last = events[0], events[-1]
    kind = "deleted" if any(e.change == "deleted" for e in events) else last.change
    fields = sorted({f for e in events for f in e.fields})
    return RecordChanged(
        change=kind,
        fields=tuple(fields),
        before=first.before,
        after=last.after,
        by=last.by,
        at=last.at,
    )


def _wake_enrolled(
    conn: sa.Connection,
    ctx: Context,
    system: Actor,
    batch: list[_Change],
    events: dict[int, RecordChanged],
    *,
    now: datetime,
) -> None:
    """Tell each enrollment inside a running flow about its record's changes (one event per
    enrollment for the whole batch), set-based: one query finds them, one `move_batch`."""
    by_record: dict[int, list[_Change]] = {}
    for change in batch:
        by_record.setdefault(change.record_id, []).append(change)
    running_flows = sa.select(flows.c.id).where(flows.c.status.in_(repo.RUNNING_FLOWS))
    found: list[tuple[int, int, datetime]] = []
    record_ids = sorted(by_record)
    for i in range(0, len(record_ids), _IDS_CHUNK):
        found += [
            (int(r.id), int(r.record_id), r.entered_at)
            for r in conn.execute(
                sa.select(enrollments.c.id, enrollments.c.record_id, enrollments.c.entered_at)
                .where(enrollments.c.record_id.in_(record_ids[i : i + _IDS_CHUNK]))
                .where(enrollments.c.status.in_(repo.RUNNING))
                .where(enrollments.c.state.is_not(None))
                .where(enrollments.c.flow_id.in_(running_flows))
            )
        ]
    wake: dict[int, RecordChanged] = {}
    for eid, record_id, entered_at in found:
        # A change made before the record entered is not news to the enrollment; one made at
        # the very instant it entered counts as before (the change that created the record
        # and the start that followed it, with the same clock reading).
        heard = [events[c.id] for c in by_record[record_id] if c.at > entered_at]
        if heard:
            wake[eid] = _merge(heard)
    if wake:
        rows = repo.lock(conn, sorted(wake), owner=None)
        move_batch(conn, ctx, system, rows, now=now, events=wake)


# -- start lists ----------------------------------------------------------------------------------


def _ids_union(ctx: Context, conn: sa.Connection, names: Sequence[str]) -> sa.Subquery:
    selects = [matching_ids(ctx, conn, name) for name in names]
    union = sa.union(*selects) if len(selects) > 1 else selects[0]
    return union.subquery("ids")


def _flow_ref(conn: sa.Connection, ctx: Context, flow_id: int) -> FlowRef:
    row = conn.execute(
        sa.select(flows.c.key, flows.c.status, flows.c.current_version).where(flows.c.id == flow_id)
    ).one()
    [info] = repo.load_flows(
        conn, [(flow_id, row.current_version)], definitions_cache(ctx)
    ).values()
    return FlowRef(flow_id, row.key, row.status, row.current_version, info.definition)


def enter_start_lists(
    conn: sa.Connection, ctx: Context, flow_id: int, *, expected: int | None, now: datetime
) -> int:
    """The records of the flow's start lists enter it (on `conn`, the transaction that starts
    the flow): one `INSERT INTO enrollments ... SELECT`, due now, entered by the worker on its
    first claim. Returns how many entered. The lists must hold `expected` records (the count
    the user confirmed), with or without an entry condition: a different number means the lists
    changed since, ConfirmationRequiredError, and nothing happens (the caller's transaction is
    rolled back)."""
    flow = _flow_ref(conn, ctx, flow_id)
    names = flow.definition.start_list_queries()
    if not names:
        return 0
    ids = _ids_union(ctx, conn, names)
    if flow.definition.entry_condition:
        selected = _selected(conn, ids)
        _check_confirmed(flow, expected, len(selected))
        return _enter_records(conn, ctx, flow, selected, trigger="start_list", now=now)
    considered, entered = _enter_set(conn, flow, ids, trigger="start_list", now=now)
    _check_confirmed(flow, expected, considered)
    return entered


def _check_confirmed(flow: FlowRef, expected: int | None, found: int) -> None:
    """ConfirmationRequiredError when the start lists hold `found` records, not the `expected`
    the user confirmed."""
    if expected is None or found == expected:
        return
    from crmflow.services.flows import ConfirmationRequiredError

    raise ConfirmationRequiredError(
        f"the start list of {flow.key!r} holds {found} record(s) now, not {expected}; "
        f"check the list and confirm {found} to start",
        count=found,
        confirm_with=f"crmflow flows start {flow.key} --confirm {found}",
    )


def _selected(conn: sa.Connection, ids: sa.Subquery) -> list[int]:
    return [int(i) for i in conn.execute(sa.select(ids.c.id).order_by(ids.c.id)).scalars()]


def _refusals(policy: ReentryPolicy, flow_id: int, now: datetime) -> sa.Subquery | None:
    """The records the re-entry policy keeps out of `flow_id` now, with why: a subquery
    (record_id, reason) over the flow's own enrollments only (one row per record, whatever the
    records being considered), or None when the policy keeps nobody out."""
    e = enrollments.c
    running = e.status.in_(repo.RUNNING)
    if policy.mode == "always":
        return None
    if policy.mode == "never":
        counts: sa.ColumnElement[bool] = e.status != "cancelled"
        other = "re-entry: never, and the record already went through this flow"
    elif policy.mode == "once_per_days" and policy.days:
        since = sa.bindparam(None, now - timedelta(days=policy.days), type_=UTCDateTime())
        counts = sa.or_(running, sa.and_(e.status != "cancelled", e.entered_at > since))
        other = f"re-entry: once per {policy.days} days, entered within the last {policy.days}"
    else:
        counts, other = running, ""
    inside = sa.func.max(sa.case((running, 1), else_=0)) == 1
    why = sa.case((inside, sa.literal("already inside this flow")), else_=sa.literal(other))
    return (
        sa.select(e.record_id, why.label("reason"))
        .where(e.flow_id == flow_id, counts)
        .group_by(e.record_id)
        .subquery("refused")
    )


def _enter_selected(
    conn: sa.Connection,
    ctx: Context,
    flow: FlowRef,
    ids: sa.Subquery,
    *,
    trigger: str,
    now: datetime,
) -> int:
    """The records of `ids` (a subquery with an `id` column) enter `flow` now, as far as its
    re-entry policy allows; the others get an entry decision. A flow with an entry condition
    needs CEL, which SQL cannot run: its records are judged in Python, a chunk at a time.
    How many entered."""
    if flow.definition.entry_condition:
        return _enter_records(conn, ctx, flow, _selected(conn, ids), trigger=trigger, now=now)
    return _enter_set(conn, flow, ids, trigger=trigger, now=now)[1]


def _enter_set(
    conn: sa.Connection, flow: FlowRef, ids: sa.Subquery, *, trigger: str, now: datetime
) -> tuple[int, int]:
    """`_enter_selected` set-based, for a flow without an entry condition: one
    `INSERT INTO enrollments ... SELECT` of the records the re-entry policy lets in and, when
    the flow has enrollments already, one `INSERT INTO entry_decisions ... SELECT` of those it
    keeps out. (How many records `ids` held, how many entered.)

    The records kept out are found once, from the flow's own enrollments (a flow started for
    the first time has none, and the selected records go straight in: no anti-join at all)."""
    at = sa.bindparam(None, now, type_=UTCDateTime())
    refused = _refusals(flow.definition.reentry, flow.id, now)
    if refused is not None and not _has_enrollments(conn, flow.id):
        refused = None
    source = sa.select(ids.c.id)
    kept_out = 0
    if refused is not None:
        kept_out = conn.execute(
            entry_decisions.insert()
            .execution_options(preserve_rowcount=True)
            .from_select(
                ["flow_id", "record_id", "trigger", "reason", "at"],
                sa.select(
                    sa.literal(flow.id),
                    refused.c.record_id,
                    sa.literal(trigger),
                    refused.c.reason,
                    at,
                ).where(refused.c.record_id.in_(sa.select(ids.c.id))),
            )
        ).rowcount
        source = source.where(_not_among(conn, ids.c.id, refused))
    admitted = source.subquery("admitted")
    # preserve_rowcount: psycopg's rowcount of an INSERT ... SELECT is otherwise not kept.
    inserted = conn.execute(
        enrollments.insert()
        .execution_options(preserve_rowcount=True)
        .from_select(
            [
                "flow_id",
                "flow_version",
                "record_id",
                "status",
                "entered_at",
                "due_at",
                "updated_at",
            ],
            sa.select(
                sa.literal(flow.id),
                sa.literal(flow.version),
                admitted.c.id,
                sa.literal("active"),
                at,
                at,
                at,
            ),
        )
    ).rowcount
    if inserted:
        repo.notify_due(conn)
    return int(inserted) + int(kept_out), int(inserted)


def _has_enrollments(conn: sa.Connection, flow_id: int) -> bool:
    found = conn.execute(
        sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id).limit(1)
    ).first()
    return found is not None


def _not_among(
    conn: sa.Connection, record_id: sa.ColumnElement[int], refused: sa.Subquery
) -> sa.ColumnElement[bool]:
    """`record_id` is not one of `refused`'s: an anti-join each backend runs in one pass
    (PostgreSQL: NOT EXISTS, a hash anti-join; SQLite: NOT IN, one ephemeral index)."""
    if conn.dialect.name == "postgresql":
        return ~sa.exists().where(refused.c.record_id == record_id)
    return record_id.not_in(sa.select(refused.c.record_id))


def _enter_records(
    conn: sa.Connection,
    ctx: Context,
    flow: FlowRef,
    record_ids: Sequence[int],
    *,
    trigger: str,
    now: datetime,
) -> int:
    """`record_ids` enter `flow` when the rules allow, a chunk at a time (one query loads a
    chunk's records, one inserts its enrollments); the others get an entry decision."""
    types = catalog_in(conn)
    entered = 0
    for i in range(0, len(record_ids), _IDS_CHUNK):
        chunk = record_ids[i : i + _IDS_CHUNK]
        snapshots = repo.load_records(conn, chunk, types)
        candidates = [
            Candidate(flow=flow, record_id=r, trigger=trigger, record=snapshots[r])
            for r in chunk
            if r in snapshots
        ]
        verdict = decide_entries(conn, ctx, candidates, now=now)
        write_decisions(conn, verdict.refused, now=now)
        entered += len(
            insert_enrollments(
                conn,
                [(c.flow.id, c.flow.version, c.record_id) for c in verdict.admitted],
                now=now,
                due_at=now,
            )
        )
    if entered:
        repo.notify_due(conn)
    return entered


# -- schedules and dates ---------------------------------------------------------------------------


def _is_datetime_field(
    definition: FlowDefinition, trigger: DateReachedTrigger, types: dict[str, RecordType]
) -> bool:
    rtype = types.get(definition.record_type)
    if trigger.field in _META_DATES:
        return True
    fdef = rtype.field(trigger.field) if rtype is not None else None
    return fdef is not None and fdef.type is FieldType.DATETIME


def _next_run(trigger: Trigger, *, after: datetime, zone: ZoneInfo, polls: bool) -> datetime | None:
    """The next run of a timed trigger strictly after `after`.

    A schedule runs at its daily time. A date trigger looks once a day at its `time` (00:00 when
    absent), when every record due that day is due; a date-time field without `time` is due at
    its own time, any minute, so it is looked at every few minutes (`polls`)."""
    if isinstance(trigger, ScheduleTrigger):
        return schedule_due(trigger, after=after, zone=zone)
    if isinstance(trigger, DateReachedTrigger):
        if polls and trigger.time is None:
            return after + _DATETIME_POLL
        return next_daily_at(trigger.time or "00:00", after, zone)
    return None


def _sync_schedules(conn: sa.Connection, ctx: Context, *, now: datetime) -> None:
    """Each active flow gets a `trigger_schedules` row per timed trigger (so a flow that became
    active is scheduled on the worker's next look); rows of triggers a new version removed go.
    A new row's first run is the first one after the flow last changed (its start or resume),
    so a worker that looks a little late does not miss the day's run."""
    active = conn.execute(
        sa.select(flows.c.id, flows.c.current_version, flows.c.updated_at).where(
            flows.c.status == "active"
        )
    ).all()
    if not active:
        return
    infos = repo.load_flows(
        conn, [(r.id, r.current_version) for r in active], definitions_cache(ctx)
    )
    changed_at = {r.id: r.updated_at for r in active}
    existing = {
        (r.flow_id, r.trigger_index)
        for r in conn.execute(
            sa.select(trigger_schedules.c.flow_id, trigger_schedules.c.trigger_index).where(
                trigger_schedules.c.flow_id.in_([r.id for r in active])
            )
        )
    }
    types = catalog_in(conn)
    wanted: set[tuple[int, int]] = set()
    new: list[dict[str, Any]] = []
    for (flow_id, _), info in infos.items():
        definition = info.definition
        zone = flow_zone(ctx, definition)
        for index, trigger in enumerate(definition.triggers):
            if trigger.type not in _TIMED_TRIGGERS:
                continue
            wanted.add((flow_id, index))
            if (flow_id, index) in existing:
                continue
            after = max(as_utc(changed_at[flow_id]), now - timedelta(days=1))
            polls = isinstance(trigger, DateReachedTrigger) and _is_datetime_field(
                definition, trigger, types
            )
            first = _next_run(trigger, after=min(after, now), zone=zone, polls=polls)
            new.append({"flow_id": flow_id, "trigger_index": index, "next_at": first})
    if new:
        conn.execute(
            _insert(conn, trigger_schedules).on_conflict_do_nothing(
                index_elements=["flow_id", "trigger_index"]
            ),
            new,
        )
    gone = existing - wanted
    if gone:
        conn.execute(
            trigger_schedules.delete().where(
                sa.tuple_(trigger_schedules.c.flow_id, trigger_schedules.c.trigger_index).in_(
                    sorted(gone)
                )
            )
        )


def fire_due_triggers(ctx: Context, *, now: datetime | None = None) -> int:
    """Run the schedule and date_reached triggers of active flows that are due at `now`, and
    set their next runs; how many ran. A daily schedule whose runs were missed (no worker was
    running) runs once, not once per missed day; a date trigger catches up the days it missed
    (up to a week), since each day has other records due."""
    at = now or ctx.now()
    with ctx.engine.begin() as conn:
        _sync_schedules(conn, ctx, now=at)
        due = conn.execute(
            sa.select(trigger_schedules)
            .where(trigger_schedules.c.next_at <= at)
            .where(
                trigger_schedules.c.flow_id.in_(
                    sa.select(flows.c.id).where(flows.c.status == "active")
                )
            )
            .order_by(trigger_schedules.c.next_at)
            # Another worker firing the same trigger skips it rather than firing it twice.
            .with_for_update(skip_locked=True)
        ).all()
        if not due:
            return 0
        types = catalog_in(conn)
        refs = {flow_id: _flow_ref(conn, ctx, flow_id) for flow_id in {r.flow_id for r in due}}
        updates: list[dict[str, Any]] = []
        for row in due:
            flow = refs[row.flow_id]
            zone = flow_zone(ctx, flow.definition)
            trigger = flow.definition.triggers[row.trigger_index]
            polls = False
            if isinstance(trigger, ScheduleTrigger):
                ids = matching_ids(ctx, conn, trigger.query, now=at, zone=zone).subquery("ids")
                _enter_selected(conn, ctx, flow, ids, trigger="schedule", now=at)
            elif isinstance(trigger, DateReachedTrigger):
                polls = _is_datetime_field(flow.definition, trigger, types)
                since = max(
                    as_utc(row.last_at) if row.last_at else as_utc(row.next_at) - timedelta(days=1),
                    at - _MAX_CATCH_UP,
                )
                reached = _dates_reached(conn, flow, trigger, since=since, until=at, zone=zone)
                _enter_records(conn, ctx, flow, reached, trigger="date_reached", now=at)
            updates.append(
                {
                    "f": row.flow_id,
                    "i": row.trigger_index,
                    "n": _next_run(trigger, after=at, zone=zone, polls=polls),
                    "l": at,
                }
            )
        conn.execute(
            trigger_schedules.update()
            .where(
                trigger_schedules.c.flow_id == sa.bindparam("f"),
                trigger_schedules.c.trigger_index == sa.bindparam("i"),
            )
            .values(next_at=sa.bindparam("n"), last_at=sa.bindparam("l")),
            updates,
        )
    return len(due)


def _field_text(conn: sa.Connection, key: str) -> sa.ColumnElement[Any]:
    if key in _META_DATES:
        return records.c[key]
    if conn.dialect.name == "postgresql":
        return records.c.data.op("->>", return_type=sa.Text)(sa.literal_column(f"'{key}'"))
    return sa.func.json_extract(records.c.data, sa.literal_column(f"'$.{key}'"), type_=sa.Text)


def _month_day(conn: sa.Connection, key: str) -> sa.ColumnElement[str]:
    value = _field_text(conn, key)
    if key not in _META_DATES:
        return sa.func.substr(value, 6, 5)
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", value), "MM-DD")
    return sa.func.strftime("%m-%d", value)


def _days(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _dates_reached(
    conn: sa.Connection,
    flow: FlowRef,
    trigger: DateReachedTrigger,
    *,
    since: datetime,
    until: datetime,
    zone: ZoneInfo,
) -> list[int]:
    """The records whose date makes the trigger due in (since, until].

    SQL narrows them down to the few whose date is near (the field's text against a range of
    days, or its month-day for anniversaries, with a day's margin for time zones); the engine's
    own `date_trigger_due` then decides exactly, so this and a step's date timing agree."""
    shift = trigger.days if trigger.direction == "before" else -trigger.days
    first = local_date(since, zone) + timedelta(days=shift - 1)
    last = local_date(until, zone) + timedelta(days=shift + 1)
    key = trigger.field
    value = _field_text(conn, key)
    if trigger.ignore_year:
        month_days = {d.strftime("%m-%d") for d in _days(first, last)}
        if "02-28" in month_days:
            month_days.add("02-29")  # a leap-day birthday falls on 28 February in common years
        near: sa.ColumnElement[bool] = _month_day(conn, key).in_(sorted(month_days))
    elif key in _META_DATES:
        lo = datetime.combine(first, datetime.min.time(), UTC)
        hi = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
        near = sa.and_(value >= lo, value < hi)
    else:
        near = sa.and_(value >= first.isoformat(), value < (last + timedelta(days=1)).isoformat())
    rows = conn.execute(
        sa.select(records.c.id, value.label("value"))
        .where(records.c.type == flow.definition.record_type)
        .where(value.is_not(None))
        .where(near)
        .order_by(records.c.id)
    ).all()
    out = []
    after = since + timedelta(microseconds=1)
    for r in rows:
        raw = format_datetime(r.value) if isinstance(r.value, datetime) else str(r.value)
        due = date_trigger_due(trigger, raw, now=after, zone=zone)
        if due is not None and due <= until:
            out.append(int(r.id))
    return out


# -- why records did not enter ---------------------------------------------------------------------


@dataclass(frozen=True)
class NotEntered:
    id: int
    flow: str
    record_id: int
    trigger: str
    change_id: int | None
    reason: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "record_id": self.record_id,
            "trigger": self.trigger,
            "change_id": self.change_id,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


MAX_DECISIONS = 1_000


def entry_decisions_for(
    ctx: Context,
    actor: Actor,
    *,
    flow_key: str | None = None,
    record_id: int | None = None,
    record_type: str | None = None,
    limit: int = 100,
) -> list[NotEntered]:
    """Why records did not enter flows, newest first: of one flow, of one record, or both.
    Only flows `actor` can see are listed (a private flow's refusals stay private). With
    `record_type`, a record of another type is NotFoundError (the API's /records/{type}/{id})."""
    size = max(1, min(limit, MAX_DECISIONS))
    d = entry_decisions.c
    query = (
        sa.select(entry_decisions, flows.c.key.label("flow_key"))
        .join(flows, flows.c.id == d.flow_id)
        .where(_visible_to(actor))
        .order_by(d.id.desc())
        .limit(size)
    )
    with ctx.engine.connect() as conn:
        if flow_key is not None:
            query = query.where(d.flow_id == _flow_row(conn, actor, flow_key).id)
        if record_id is not None:
            if record_type is not None:
                found = conn.execute(
                    sa.select(records.c.type).where(records.c.id == record_id)
                ).scalar()
                if found is not None and found != record_type:
                    raise NotFoundError(f"no {record_type} record with id {record_id}")
            query = query.where(d.record_id == record_id)
        rows = conn.execute(query).all()
    return [
        NotEntered(r.id, r.flow_key, r.record_id, r.trigger, r.change_id, r.reason, r.at)
        for r in rows
    ]
