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
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

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
from crmflow.store.schema import entry_decisions, flows, records, trigger_schedules
from crmflow.store.types import UTCDateTime

__all__ = ["catch_up_schedules", "fire_due_triggers"]

log = logging.getLogger("crmflow.triggers")


_TIMED_TRIGGERS = frozenset({"schedule", "date_reached"})
_MAX_CATCH_UP = timedelta(days=7)  # date triggers missed while no worker ran: at most this far
_DATETIME_POLL = timedelta(minutes=5)  # date-time fields without `time`: how often to look
_META_DATES = ("created_at", "updated_at")
_HEARING = ("active", "paused", "draining")  # whose timed triggers run (the last two refuse)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


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
    types: dict[str, RecordType] | None = None  # read only when a new date trigger needs it
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
            if types is None:
                types = catalog_in(conn)
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
        failures.clear(conn, gone)
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
    (up to a week), since each day has other records due. A paused or draining flow's run
    enters nobody and says so for each record it selects."""
    at = now or ctx.now()
    with ctx.engine.begin() as conn:
        _sync_schedules(conn, ctx, now=at)
        key = sa.tuple_(trigger_schedules.c.flow_id, trigger_schedules.c.trigger_index)
        due = conn.execute(
            sa.select(trigger_schedules)
            .where(trigger_schedules.c.next_at <= at)
            .where(
                trigger_schedules.c.flow_id.in_(
                    sa.select(flows.c.id).where(flows.c.status.in_(_HEARING))
                )
            )
            # A trigger that failed waits for its retry (backoff) instead of failing each loop.
            .where(key.not_in(failures.blocked(at)))
            .order_by(trigger_schedules.c.next_at)
            # Another worker firing the same trigger skips it rather than firing it twice.
            .with_for_update(skip_locked=True)
        ).all()
        if not due:
            return 0
        types = catalog_in(conn)
        refs: dict[int, FlowRef] = {}
        updates: list[dict[str, Any]] = []
        for row in due:
            try:
                # A savepoint per trigger: one that raises (a saved query gone bad, a flow that
                # no longer loads) is rolled back alone and marked failing; the others go on.
                with conn.begin_nested():
                    if row.flow_id not in refs:
                        refs[row.flow_id] = flow_ref(conn, ctx, row.flow_id)
                    next_at = _fire(conn, ctx, row, refs[row.flow_id], types, now=at)
            except Exception as exc:
                if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
                    raise  # the database went away: the worker's loop retries the whole run
                _failed(conn, row, refs.get(row.flow_id), exc, now=at)
                continue
            updates.append({"f": row.flow_id, "i": row.trigger_index, "n": next_at, "l": at})
        if updates:
            conn.execute(
                trigger_schedules.update()
                .where(
                    trigger_schedules.c.flow_id == sa.bindparam("f"),
                    trigger_schedules.c.trigger_index == sa.bindparam("i"),
                )
                .values(next_at=sa.bindparam("n"), last_at=sa.bindparam("l")),
                updates,
            )
            recovered = failures.clear(conn, [(u["f"], u["i"]) for u in updates])
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
    conn: sa.Connection,
    ctx: Context,
    row: sa.Row[Any],
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
        ids = matching_ids(ctx, conn, trigger.query, now=at, zone=zone).subquery("ids")
        if refusal is not None:
            _refuse(conn, flow.id, sa.select(ids.c.id), "schedule", refusal, now=at)
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
            found = sa.select(records.c.id).where(records.c.id.in_(reached))
            _refuse(conn, flow.id, found, "date_reached", refusal, now=at)
        else:
            enter_records(conn, ctx, flow, reached, trigger="date_reached", now=at)
    return _next_run(trigger, after=at, zone=zone, polls=polls)


def _failed(
    conn: sa.Connection,
    row: sa.Row[Any],
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


def _refuse(
    conn: sa.Connection,
    flow_id: int,
    selected: sa.Select[Any],
    trigger: str,
    reason: str,
    *,
    now: datetime,
) -> None:
    """Each record of `selected` (one id column) gets the entry decision `reason`, in one
    `INSERT ... SELECT`."""
    at = sa.bindparam(None, now, type_=UTCDateTime())
    ids = selected.subquery("refused")
    conn.execute(
        entry_decisions.insert().from_select(
            ["flow_id", "record_id", "trigger", "reason", "at"],
            sa.select(sa.literal(flow_id), ids.c[0], sa.literal(trigger), sa.literal(reason), at),
        )
    )


def catch_up_schedules(
    conn: sa.Connection,
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
    query = sa.select(trigger_schedules.c.trigger_index)
    rows = conn.execute(query.where(trigger_schedules.c.flow_id == flow_id)).scalars().all()
    mode = definition.catch_up.mode
    zone = flow_zone(ctx, definition)
    types: dict[str, RecordType] | None = None
    paused_at, now = as_utc(paused_at), as_utc(now)
    updates: list[dict[str, Any]] = []
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
        updates.append({"i": index, "n": next_at, "l": since})
    if updates:
        conn.execute(
            trigger_schedules.update()
            .where(
                trigger_schedules.c.flow_id == flow_id,
                trigger_schedules.c.trigger_index == sa.bindparam("i"),
            )
            .values(next_at=sa.bindparam("n"), last_at=sa.bindparam("l")),
            updates,
        )
    return len(updates)


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
