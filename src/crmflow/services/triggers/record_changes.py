"""What record changes do to flows: records that enter through change triggers (created /
updated / deleted / field_changed / status_changed), the reasons of those that do not, and the
enrollments already inside that hear of their record's changes (wait steps, date timings).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, cast

from crmflow.engine.definition.triggers import Trigger
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.transition import hears_changes
from crmflow.engine.trigger_matching import (
    CHANGE_TRIGGERS,
    Change,
    ChangeTrigger,
    change_triggers,
    first_fired,
)
from crmflow.runner import load_reference, move_batch, trip_loop_guard
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
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
from crmflow.services.record_types import catalog_in
from crmflow.services.records import OWNER_KEY
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.enrollments import enrollments_hearing
from crmflow.store.entry_decisions import drop_refusals
from crmflow.store.flows import non_draft_flows_of_types
from crmflow.store.users import usernames_by_id

__all__ = [
    "CHANGE_TRIGGERS",
    "Change",
    "Listeners",
    "change_event",
    "could_not_enter",
    "handle_changes",
    "listeners",
    "merge_events",
    "user_names",
]

ChangeKind = Literal["created", "updated", "deleted"]
_ARCHIVED = admission_refusal("archived") or "flow archived"


def change_event(change: Change, names: dict[int, str]) -> RecordChanged:
    """`change` as conditions see it (`change.fields`, `change.before.x`, `change.by`): the
    stored owner id told as the owner's username, `names` by user id (see `user_names`)."""

    def values(snap: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in snap.items() if k != OWNER_KEY}
        if snap:
            out["owner"] = names.get(snap.get(OWNER_KEY) or 0)
        return out

    fields = sorted("owner" if k == OWNER_KEY else k for k in change.changed)
    return RecordChanged(
        change=cast(ChangeKind, change.kind),
        fields=tuple(fields),
        before=values(change.before),
        after=values(change.after),
        by=names.get(change.actor_id or 0),
        at=change.at,
    )


@dataclass(frozen=True)
class _Watcher:
    """A flow whose triggers listen to record changes, with from/to values in stored form."""

    flow: FlowRef
    started_at: datetime | None
    triggers: list[ChangeTrigger]


@dataclass(frozen=True)
class Listeners:
    """Who listens to the changes of some record types, read once per batch of the feed.

    `watchers`: per record type, the non-draft flows with change triggers (a paused, draining or
    archived flow is listed too, so that its refusal can be said). `hearing`: the record types
    with a running flow whose records inside can be moved by a change of their record (see
    `hears_changes`). `running`: the record types with a running flow at all (a deletion ends
    the records inside any of them). `flows`: every flow that may act on these changes (watches
    them, or is running), id -> key. `only`: when set, the flows whose work is done (the others'
    watchers are left out, and their records inside hear nothing): `restricted_to`."""

    watchers: dict[str, list[_Watcher]]
    hearing: frozenset[str]
    running: frozenset[str]
    types: dict[str, RecordType]  # the catalog, when it was needed for `watchers`
    flows: dict[int, str]
    only: frozenset[int] | None = None

    def hear(self, record_type: str, kind: str) -> bool:
        """Whether a change of this record type and kind may do anything at all."""
        return (
            record_type in self.watchers
            or record_type in self.hearing
            or (kind == "deleted" and record_type in self.running)
        )

    def restricted_to(self, flow_ids: Collection[int]) -> Listeners:
        """The same listeners doing the work of the flows `flow_ids` only: what the change feed
        redoes flow by flow when handling changes raised, to find the flow at fault and keep
        the others' work (each flow's entries and records inside are its own)."""
        only = frozenset(flow_ids) & self.flows.keys()
        watchers = {
            record_type: [w for w in found if w.flow.id in only]
            for record_type, found in self.watchers.items()
        }
        return replace(self, watchers={t: w for t, w in watchers.items() if w}, only=only)

    def fired(self, batch: Sequence[Change]) -> Iterator[tuple[_Watcher, Change, int, Trigger]]:
        """For each change in order, each flow whose change trigger it fires: the flow, the
        change, the trigger's index and the trigger."""
        for change in batch:
            for w in self.watchers.get(change.record_type, ()):
                found = first_fired(w.triggers, change, started_at=w.started_at)
                if found is not None:
                    yield w, change, found.index, found.trigger


def listeners(conn: Connection, ctx: Context, record_types: set[str]) -> Listeners:
    """Who listens to the changes of `record_types` now: a query of `flows` (definitions are
    cached per version), and the record types' catalog only when some flow listens."""
    rows = non_draft_flows_of_types(conn, record_types)
    if not rows:
        return Listeners({}, frozenset(), frozenset(), {}, {})
    infos = repo.load_flows(conn, [(r.id, r.current_version) for r in rows], definitions_cache(ctx))
    started = {r.id: r.started_at for r in rows}
    running = {
        info.definition.record_type for info in infos.values() if info.status in repo.RUNNING_FLOWS
    }
    hearing = {
        info.definition.record_type
        for info in infos.values()
        if info.status in repo.RUNNING_FLOWS and hears_changes(info.definition)
    }
    listening = [
        (flow_id, version, info)
        for (flow_id, version), info in sorted(infos.items(), key=lambda item: item[0])
        if any(t.type in CHANGE_TRIGGERS for t in info.definition.triggers)
    ]
    acting = {flow_id: info.key for flow_id, _, info in listening} | {
        flow_id: info.key
        for (flow_id, _), info in infos.items()
        if info.status in repo.RUNNING_FLOWS
    }
    if not listening:
        return Listeners({}, frozenset(hearing), frozenset(running), {}, acting)
    types = catalog_in(conn)
    watchers: dict[str, list[_Watcher]] = {}
    for flow_id, version, info in listening:
        definition = info.definition
        found = change_triggers(
            definition, types.get(definition.record_type), flow_zone(ctx, definition)
        )
        ref = FlowRef(flow_id, info.key, info.status, version, definition)
        watchers.setdefault(definition.record_type, []).append(
            _Watcher(ref, started[flow_id], found)
        )
    return Listeners(watchers, frozenset(hearing), frozenset(running), types, acting)


def _snapshot(
    change: Change, rtype: RecordType | None, current: RecordSnapshot | None, names: dict[int, str]
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


def handle_changes(
    conn: Connection,
    ctx: Context,
    system: Actor,
    batch: list[Change],
    heard: Listeners,
    *,
    now: datetime,
) -> set[int]:
    """Records enter the flows whose change triggers `batch` fires (or are told why not), and
    the enrollments inside hear of their record's changes. `heard`: `listeners` of the batch's
    record types, read in this transaction (restricted to some flows: only their work is
    done). The flows that took part (a trigger fired, or records inside heard a change)."""
    types = heard.types or catalog_in(conn)
    names = user_names(conn, batch)
    current = repo.load_records(conn, {c.record_id for c in batch}, types)
    events = {c.id: change_event(c, names) for c in batch}

    # Enrollments inside a flow before this batch hear of their record's changes; those the batch
    # creates do not hear of the change that made them enter.
    took_part = _wake_enrolled(
        conn, ctx, system, batch, events, only=heard.only, now=now, types=types, current=current
    )
    # Nothing moved: the records are still as read above, and the entering batch takes them.
    unchanged = current if not took_part else None

    candidates: list[Candidate] = []
    archived: dict[tuple[int, int], Decision] = {}
    for w, change, _, fired in heard.fired(batch):
        took_part.add(w.flow.id)
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
    write_decisions(conn, verdict.refused, now=now)
    _write_archived(conn, list(archived.values()), now=now)
    admitted = verdict.admitted
    ids = insert_enrollments(
        conn, [(c.flow.id, c.flow.version, c.record_id) for c in admitted], now=now, due_at=now
    )
    if ids:
        entering = {eid: c.change for eid, c in zip(ids, admitted, strict=True) if c.change}
        rows = repo.lock(conn, ids)
        reference = load_reference(conn, ctx, rows, types=types, records=unchanged)
        move_batch(conn, ctx, system, rows, now=now, events=entering, reference=reference)
        repo.notify_due(conn)
    return took_part


def could_not_enter(
    conn: Connection, batch: Sequence[Change], heard: Listeners, reason: str, *, now: datetime
) -> list[tuple[int, int, Trigger]]:
    """Each record whose change in `batch` fired a trigger of `heard`'s flows gets the entry
    decision `reason`: their handling failed and was rolled back (see `change_feed`), so they
    did not enter and nothing else will say why. What fired: (change id, trigger index,
    trigger), in change order."""
    decisions: list[Decision] = []
    fired: list[tuple[int, int, Trigger]] = []
    for w, change, index, trigger in heard.fired(batch):
        decisions.append(Decision(w.flow.id, change.record_id, trigger.type, reason, change.id))
        fired.append((change.id, index, trigger))
    write_decisions(conn, decisions, now=now)
    return fired


def _write_archived(conn: Connection, decisions: Sequence[Decision], *, now: datetime) -> None:
    """The reasons of records kept out of archived flows: one row per (flow, record), replaced
    by each new change, so an archived flow that still hears every change of its record type
    keeps as many reasons as records that changed since, not one per change forever. The row
    is written anew (not updated) so that it stays in its place in the newest-first listing."""
    if not decisions:
        return
    drop_refusals(conn, {(x.flow_id, x.record_id) for x in decisions}, reason=_ARCHIVED)
    write_decisions(conn, decisions, now=now)


def user_names(conn: Connection, changes: Sequence[Change]) -> dict[int, str]:
    """The usernames of the users these changes name (who made them, the owners before and
    after), by id: one query."""
    user_ids = {c.actor_id for c in changes if c.actor_id is not None}
    for c in changes:
        user_ids |= {int(s[OWNER_KEY]) for s in (c.before, c.after) if s.get(OWNER_KEY)}
    return usernames_by_id(conn, user_ids)


def merge_events(events: Sequence[RecordChanged]) -> RecordChanged:
    """Several changes of one record told as one (a feed batch's, or a freeze's): every field
    that changed, the values before the first and after the last."""
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
    conn: Connection,
    ctx: Context,
    system: Actor,
    batch: list[Change],
    events: dict[int, RecordChanged],
    *,
    only: frozenset[int] | None,
    now: datetime,
    types: dict[str, RecordType],
    current: dict[int, RecordSnapshot],
) -> set[int]:
    """Tell each enrollment inside a running flow (of the flows `only`, when set) about its
    record's changes (one event per enrollment for the whole batch), set-based: one query finds
    them, one `move_batch`, given the record types and the batch's records (`current`) read in
    this transaction. The flows whose enrollments heard something."""
    by_record: dict[int, list[Change]] = {}
    for change in batch:
        by_record.setdefault(change.record_id, []).append(change)
    found = enrollments_hearing(conn, sorted(by_record), only=only)
    wake: dict[int, RecordChanged] = {}
    woken: set[int] = set()
    for eid, flow_id, record_id, entered_at in found:
        # A change made before the record entered is not news to the enrollment; one made at
        # the very instant it entered counts as before (the change that created the record
        # and the start that followed it, with the same clock reading).
        heard = [events[c.id] for c in by_record[record_id] if c.at > entered_at]
        if heard:
            wake[eid] = merge_events(heard)
            woken.add(flow_id)
    if wake:
        rows = repo.lock(conn, sorted(wake))
        reference = load_reference(conn, ctx, rows, types=types, records=current)
        move_batch(conn, ctx, system, rows, now=now, events=wake, reference=reference)
    return woken
