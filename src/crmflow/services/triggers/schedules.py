"""Schedules and dates reached: `trigger_schedules` holds the next run of each `schedule` and
`date_reached` trigger of every active flow; each run enters the records the trigger selects
then, set-based, and sets the next run.

A run that comes while the flow is paused or draining enters nobody: each record it selects
gets the entry decision "flow paused" / "flow draining" (one row per record, written set-based,
like every other refusal: "why did Claire not get her birthday email" is answered on her record),
and the next run is set as usual. When a paused (or archived) flow resumes, `catch_up_schedules`
applies its catch-up policy to the runs that fell in the pause: run_late runs once at the resume
(a date trigger then looks at the dates reached during the pause, at most a week of them);
skip_missed goes on with the next run after the resume; shift_delays runs the first missed run
as late as the pause was long."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.definition.triggers import DateReachedTrigger, ScheduleTrigger, Trigger
from crmflow.engine.localtime import as_utc, local_date
from crmflow.engine.recordtypes import FieldType, RecordType, format_datetime
from crmflow.engine.timing import date_trigger_due, next_daily_at, schedule_due
from crmflow.services.context import Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import FlowRef, admission_refusal, flow_zone
from crmflow.services.queries import matching_ids
from crmflow.services.record_types import catalog_in
from crmflow.services.triggers.failures import error_text, trigger_failed, trigger_runs_again
from crmflow.services.triggers.start_lists import enter_records, enter_selected, flow_ref
from crmflow.store import enrollments as repo
from crmflow.store import trigger_failures as failures
from crmflow.store.database import Connection, Row, connection_lost
from crmflow.store.enrollments import record_ids
from crmflow.store.entry_decisions import refuse_records
from crmflow.store.flows import active_flows
from crmflow.store.schedules import (
    RECORD_TIMESTAMPS,
    NextRun,
    delete_schedules,
    insert_schedules,
    lock_due_schedules,
    records_dated_near,
    schedule_indexes,
    scheduled_triggers,
    set_next_runs,
)

__all__ = ["catch_up_schedules", "fire_due_triggers"]

log = logging.getLogger("crmflow.triggers")


_TIMED_TRIGGERS = frozenset({"schedule", "date_reached"})
_MAX_CATCH_UP = timedelta(days=7)  # date triggers missed while no worker ran: at most this far
_DATETIME_POLL = timedelta(minutes=5)  # date-time fields without `time`: how often to look
_HEARING = ("active", "paused", "draining")  # whose timed triggers run (the last two refuse)


def _is_datetime_field(
    definition: FlowDefinition, trigger: DateReachedTrigger, types: dict[str, RecordType]
) -> bool:
    rtype = types.get(definition.record_type)
    if trigger.field in RECORD_TIMESTAMPS:
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


def _sync_schedules(conn: Connection, ctx: Context, *, now: datetime) -> None:
    """Each active flow gets a `trigger_schedules` row per timed trigger (so a flow that became
    active is scheduled on the worker's next look); rows of triggers a new version removed go.
    A new row's first run is the first one after the flow last changed (its start or resume),
    so a worker that looks a little late does not miss the day's run."""
    active = active_flows(conn)
    if not active:
        return
    infos = repo.load_flows(
        conn, [(r.id, r.current_version) for r in active], definitions_cache(ctx)
    )
    changed_at = {r.id: r.updated_at for r in active}
    existing = scheduled_triggers(conn, [r.id for r in active])
    types: dict[str, RecordType] | None = None  # read only when a new date trigger needs it
    wanted: set[tuple[int, int]] = set()
    new: list[tuple[int, int, datetime | None]] = []
    for (flow_id, _), info in infos.items():
        definition = info.definition
        zone = flow_zone(ctx, definition)
        for index, trigger in enumerate(definition.triggers):
            if trigger.type not in _TIMED_TRIGGERS:
                continue
            wanted.add((flow_id, index))
            if (flow_id, index) in existing:
                continue
            if types is None:
                types = catalog_in(conn)
            after = max(as_utc(changed_at[flow_id]), now - timedelta(days=1))
            polls = isinstance(trigger, DateReachedTrigger) and _is_datetime_field(
                definition, trigger, types
            )
            first = _next_run(trigger, after=min(after, now), zone=zone, polls=polls)
            new.append((flow_id, index, first))
    insert_schedules(conn, new)
    gone = existing - wanted
    if gone:
        delete_schedules(conn, gone)


def fire_due_triggers(ctx: Context, *, now: datetime | None = None) -> int:
    """Run the schedule and date_reached triggers of active flows that are due at `now`, and
    set their next runs; how many ran. A daily schedule whose runs were missed (no worker was
    running) runs once, not once per missed day; a date trigger catches up the days it missed
    (up to a week), since each day has other records due. A paused or draining flow's run
    enters nobody and says so for each record it selects."""
    at = now or ctx.now()
    with ctx.engine.begin() as conn:
        _sync_schedules(conn, ctx, now=at)
        # A trigger that failed waits for its retry (backoff) instead of failing each loop;
        # another worker firing the same trigger skips it rather than firing it twice.
        due = lock_due_schedules(conn, at, statuses=_HEARING)
        if not due:
            return 0
        types = catalog_in(conn)
        refs: dict[int, FlowRef] = {}
        updates: list[NextRun] = []
        for row in due:
            try:
                # A savepoint per trigger: one that raises (a saved query gone bad, a flow that
                # no longer loads) is rolled back alone and marked failing; the others go on.
                with conn.begin_nested():
                    if row.flow_id not in refs:
                        refs[row.flow_id] = flow_ref(conn, ctx, row.flow_id)
                    next_at = _fire(conn, ctx, row, refs[row.flow_id], types, now=at)
            except Exception as exc:
                if connection_lost(exc):
                    raise  # the database went away: the worker's loop retries the whole run
                _failed(conn, row, refs.get(row.flow_id), exc, now=at)
                continue
            updates.append((row.flow_id, row.trigger_index, next_at, at))
        if updates:
            set_next_runs(conn, updates)
            recovered = failures.clear(conn, [(f, i) for f, i, _, _ in updates])
            for flow_id, index in recovered:
                ref = refs[flow_id]
                trigger_runs_again(
                    conn,
                    flow_id=flow_id,
                    flow_name=ref.key,
                    trigger_index=index,
                    trigger_type=ref.definition.triggers[index].type,
                    now=at,
                )
    return len(due)


def _fire(
    conn: Connection,
    ctx: Context,
    row: Row,
    flow: FlowRef,
    types: dict[str, RecordType],
    *,
    now: datetime,
) -> datetime | None:
    """One due run of a timed trigger: the records it selects enter `flow` (or are told why
    not); its next run."""
    at = now
    zone = flow_zone(ctx, flow.definition)
    trigger = flow.definition.triggers[row.trigger_index]
    polls = False
    refusal = admission_refusal(flow.status)
    if isinstance(trigger, ScheduleTrigger):
        ids = record_ids([matching_ids(ctx, conn, trigger.query, now=at, zone=zone)])
        if refusal is not None:
            refuse_records(conn, flow.id, ids, trigger="schedule", reason=refusal, now=at)
        else:
            enter_selected(conn, ctx, flow, ids, trigger="schedule", now=at)
    elif isinstance(trigger, DateReachedTrigger):
        polls = _is_datetime_field(flow.definition, trigger, types)
        since = max(
            as_utc(row.last_at) if row.last_at else as_utc(row.next_at) - timedelta(days=1),
            at - _MAX_CATCH_UP,
        )
        reached = _dates_reached(conn, flow, trigger, since=since, until=at, zone=zone)
        if refusal is not None:
            refuse_records(conn, flow.id, reached, trigger="date_reached", reason=refusal, now=at)
        else:
            enter_records(conn, ctx, flow, reached, trigger="date_reached", now=at)
    return _next_run(trigger, after=at, zone=zone, polls=polls)


def _failed(
    conn: Connection,
    row: Row,
    flow: FlowRef | None,
    exc: Exception,
    *,
    now: datetime,
) -> None:
    """Mark the trigger of `row` failing: the error, the count, and when it is tried again (its
    next run stays due, so the retry runs what was missed). Logged, and said once in the flow's
    history when it starts failing."""
    index = row.trigger_index
    triggers = flow.definition.triggers if flow is not None else ()
    trigger_failed(
        conn,
        flow_id=row.flow_id,
        flow_name=flow.key if flow is not None else f"#{row.flow_id}",
        trigger_index=index,
        trigger_type=triggers[index].type if index < len(triggers) else "unknown",
        error=error_text(exc),
        exc=exc,
        now=now,
    )


def catch_up_schedules(
    conn: Connection,
    ctx: Context,
    flow_id: int,
    definition: FlowDefinition,
    *,
    paused_at: datetime,
    now: datetime,
) -> int:
    """On resume after a freeze from `paused_at`, set the next run of each timed trigger of
    `definition` (the version the flow resumes on) by its catch-up policy, when a run fell in
    the freeze: run_late, once now; skip_missed, the next run after now; shift_delays, the first
    missed run moved by the length of the freeze. A date trigger's next run then looks at the
    dates reached since the freeze began (run_late, shift_delays) or since now (skip_missed).
    How many triggers had a missed run."""
    rows = schedule_indexes(conn, flow_id)
    mode = definition.catch_up.mode
    zone = flow_zone(ctx, definition)
    types: dict[str, RecordType] | None = None
    paused_at, now = as_utc(paused_at), as_utc(now)
    updates: list[NextRun] = []
    for index in rows:
        if index >= len(definition.triggers):
            continue  # the new version has no such trigger: the next sync removes the row
        trigger = definition.triggers[index]
        if trigger.type not in _TIMED_TRIGGERS:
            continue
        polls = False
        if isinstance(trigger, DateReachedTrigger):
            types = types if types is not None else catalog_in(conn)
            polls = _is_datetime_field(definition, trigger, types)
        missed = _next_run(trigger, after=paused_at, zone=zone, polls=polls)
        if missed is None or missed > now:
            continue  # no run fell in the pause: the next one stands
        if mode == "skip_missed":
            next_at, since = _next_run(trigger, after=now, zone=zone, polls=polls), now
        elif mode == "shift_delays":
            next_at, since = missed + (now - paused_at), paused_at
        else:
            next_at, since = now, paused_at
        updates.append((flow_id, index, next_at, since))
    set_next_runs(conn, updates)
    return len(updates)


def _dates_reached(
    conn: Connection,
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
    rows = records_dated_near(
        conn,
        flow.definition.record_type,
        trigger.field,
        first=first,
        last=last,
        ignore_year=trigger.ignore_year,
    )
    out = []
    after = since + timedelta(microseconds=1)
    for r in rows:
        raw = format_datetime(r.value) if isinstance(r.value, datetime) else str(r.value)
        due = date_trigger_due(trigger, raw, now=after, zone=zone)
        if due is not None and due <= until:
            out.append(int(r.id))
    return out
