"""When things are due: step timings, daily times, date triggers and schedules (pure functions).

The rules a CRM admin relies on (all local times are in the flow's zone unless said otherwise):

- **Never early.** Every instant returned is after the moment it is computed from: a daily time is
  strictly after `after`, a step is never due before the previous step ended (a date that is
  already past makes the step due at once, and the history says so).
- **Daily HH:MM across DST.** On the spring-forward day a time inside the gap (02:30 in Paris)
  runs once, at the first valid instant after the gap (03:00); on the fall-back day a time that
  happens twice runs once, at its first occurrence. Every local day has exactly one run, also
  when its gap runs past midnight (Nuuk jumps from 23:00 to 00:00: that day's 23:30 runs at
  00:00, the first instant after the gap, on the next date). Only a date the zone skipped
  altogether (Samoa's 30 December 2011) has no run: it had no instant to run at.
- **Minutes and hours are elapsed time** ("2 hours after" is 2 real hours, also across a DST
  change). **Days are calendar days**: "1 day after 09:00" is 09:00 the next day, even when that
  day has 23 or 25 hours.
- **Business days** (a calendar setting) count only business days, see `calendars`. For minutes
  and hours they only move a result that lands on a day off to the next business day.
- **Quiet hours** of the calendar apply to every computed instant: one that falls inside them
  moves to their end. For `at_time` with a record zone, business days and quiet hours are read in
  the record's zone (09:00 for the contact, not for the office).
- **Date fields**: a date (`YYYY-MM-DD`) is taken at `time`, or 00:00 local; a datetime at
  `time` on its local date, or at its own time. An empty field cannot be scheduled.
- **Anniversaries** (`ignore_year`): the date's month and day in the current or next year, never
  before the date itself. 29 February falls on 28 February in common years, so a leap-day
  birthday is kept in February and never skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.calendars import MAX_SEARCH_DAYS, BusinessCalendar
from crmflow.engine.definition.calendar import Calendar
from crmflow.engine.definition.common import WEEKDAYS
from crmflow.engine.definition.timing import (
    AfterTiming,
    AtTimeTiming,
    DateTiming,
    EventTiming,
    ImmediateTiming,
    Timing,
)
from crmflow.engine.definition.triggers import DateReachedTrigger, ScheduleTrigger
from crmflow.engine.localtime import (
    add_local_days,
    as_utc,
    format_local,
    local_date,
    parse_time_of_day,
    resolve_local,
    zone_named,
)
from crmflow.engine.recordtypes import parse_date, parse_datetime

__all__ = [
    "DueTime",
    "date_trigger_due",
    "field_date_due",
    "missed_daily_runs",
    "next_daily_at",
    "next_daily_run",
    "schedule_due",
    "shift",
    "step_due_at",
]

# Enough days to get past any skipped calendar day (Samoa skipped 30 December 2011) and a week of
# excluded weekdays; running out means the rule can never fire.
_MAX_DAYS_AHEAD = 16


@dataclass(frozen=True)
class DueTime:
    """When a step becomes due. `at` is None when it cannot be scheduled; `reason` says why."""

    at: datetime | None
    reason: str = ""
    waits_for_event: bool = False
    # The time the step was due, when it had already passed at the moment it was worked out
    # (a date field in the past): `at` is then that moment, and the step's run says so.
    passed: datetime | None = None


def _daily_instant(day: date, clock: time, zone: ZoneInfo) -> datetime | None:
    """The run of local day `day` at `clock`; None when the zone skipped that date altogether.

    A gap is resolved to its end even when the end is on the next date (a jump from 23:00 to
    00:00): the day's run is late, never lost. It is still that day's only run: the next date's
    own run is at its own `clock`, later."""
    if resolve_local(day, time(0), zone).astimezone(zone).date() != day:
        return None  # even the day's first instant resolves past it: the date never happened
    return resolve_local(day, clock, zone)


def next_daily_run(clock: time, after: datetime, zone: ZoneInfo) -> tuple[date, datetime]:
    """The first daily run strictly after `after`: the local day it belongs to, and its instant
    (which is on the next date when that day's gap runs past midnight)."""
    after = as_utc(after, "after")
    # From the day before: its run may fall on `after`'s date (a gap ending at midnight). Runs
    # never go backwards from one day to the next, so the first one after `after` is the answer.
    day = local_date(after, zone) - timedelta(days=1)
    for _ in range(_MAX_DAYS_AHEAD):
        candidate = _daily_instant(day, clock, zone)
        if candidate is not None and candidate > after:
            return day, candidate
        day += timedelta(days=1)
    raise ValueError(f"no {clock:%H:%M} in {zone.key} in the {_MAX_DAYS_AHEAD} days after {after}")


def next_daily_at(time_of_day: str, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant strictly after `after` whose local time in `zone` is `time_of_day`.

    In a DST gap: the first valid instant after the gap (the next date's midnight when the gap
    runs past it). Twice in a day (fall back): the first occurrence only. One run per local day.
    Returns an aware UTC datetime.
    """
    return next_daily_run(parse_time_of_day(time_of_day), after, zone)[1]


def schedule_due(trigger: ScheduleTrigger, *, after: datetime, zone: ZoneInfo) -> datetime:
    """The next run of a daily schedule trigger (strictly after `after`) on its allowed weekdays."""
    allowed = {WEEKDAYS.index(d) for d in trigger.weekdays} or set(range(7))
    clock = parse_time_of_day(trigger.time)
    at = as_utc(after, "after")
    for _ in range(_MAX_DAYS_AHEAD):
        # The weekday is the run's own day, even when a gap past midnight makes it run on the
        # next date (Saturday's run at Sunday 00:00 is Saturday's).
        day, at = next_daily_run(clock, at, zone)
        if day.weekday() in allowed:
            return at
    raise ValueError(f"schedule at {trigger.time} on {trigger.weekdays} never runs")


def missed_daily_runs(time_of_day: str, start: datetime, end: datetime, zone: ZoneInfo) -> int:
    """How many daily `time_of_day` runs fell in (start, end]: the pause catch-up policies."""
    start, end = as_utc(start, "start"), as_utc(end, "end")
    count = 0
    at = start
    while True:
        at = next_daily_at(time_of_day, at, zone)
        if at > end:
            return count
        count += 1


def shift(at: datetime, by: timedelta) -> datetime:
    """`at` moved by `by` elapsed time (the shift_delays policy: a due time moves by the pause)."""
    return as_utc(at) + by


def _days_text(amount: int, unit: str, business: bool) -> str:
    noun = unit[:-1] if amount == 1 else unit
    if business and unit == "days":
        noun = "business " + noun
    return f"{amount} {noun}"


def _after_duration(
    start: datetime, amount: int, unit: str, business_days: bool, cal: BusinessCalendar
) -> datetime:
    if unit == "minutes":
        return start + timedelta(minutes=amount)
    if unit == "hours":
        return start + timedelta(hours=amount)
    if business_days:
        return cal.add_business_days(start, amount)
    return add_local_days(start, amount, cal.zone)


def _settled(at: datetime, reason: str, cal: BusinessCalendar, *, business_days: bool) -> DueTime:
    moved = cal.settle(at, business_days=business_days)
    if moved != at:
        why = []
        if business_days and not cal.is_business_day(local_date(at, cal.zone)):
            why.append("day off")
        quiet = cal.quiet_hours
        if quiet is not None and moved.astimezone(cal.zone).time() == quiet[1]:
            why.append(f"quiet hours {quiet[0]:%H:%M}-{quiet[1]:%H:%M}")
        reason += f"; moved to {format_local(moved, cal.zone)} ({', '.join(why) or 'calendar'})"
    return DueTime(moved, reason)


def _record_moment(value: object, zone: ZoneInfo) -> date | datetime:
    # Stored dates are `YYYY-MM-DD` text, datetimes `...Z` text; objects are accepted as well.
    if isinstance(value, datetime):
        return parse_datetime(value, zone)
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:
        return parse_date(value)
    return parse_datetime(value, zone)


def _date_target(
    moment: date | datetime, signed_days: int, clock: time | None, zone: ZoneInfo
) -> datetime:
    if isinstance(moment, datetime):
        if clock is None:
            return add_local_days(moment, signed_days, zone)
        moment = local_date(moment, zone)
    return resolve_local(moment + timedelta(days=signed_days), clock or time(0), zone)


def field_date_due(raw: object, offset_days: int, zone: ZoneInfo) -> datetime | None:
    """`offset_days` days after (before, when negative) the date or date-time `raw` held by a
    record's field: a date at midnight in `zone`; None when `raw` is empty or not a date."""
    if _empty(raw):
        return None
    try:
        return _date_target(_record_moment(raw, zone), offset_days, None, zone)
    except (ValueError, OverflowError):
        return None


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def step_due_at(
    timing: Timing | None,
    *,
    previous_end: datetime,
    record: Mapping[str, Any],
    flow_zone: ZoneInfo,
    calendar: Calendar | None,
) -> DueTime:
    """When a step with this timing becomes due, given when the previous step ended.

    See the module text for the rules. `at` is None (with the reason) only for a date timing whose
    field is empty or not a date. An event timing gives its timeout, with `waits_for_event`.
    """
    previous_end = as_utc(previous_end, "previous_end")
    if calendar is None and (timing is None or isinstance(timing, ImmediateTiming)):
        return DueTime(previous_end, "immediately")  # no calendar: nothing can move it
    cal = BusinessCalendar(calendar, flow_zone)
    if timing is None or isinstance(timing, ImmediateTiming):
        return _settled(previous_end, "immediately", cal, business_days=False)
    if isinstance(timing, AfterTiming | EventTiming):
        if isinstance(timing, EventTiming):
            amount, unit = timing.timeout.amount, timing.timeout.unit
            business = timing.timeout.business_days
        else:
            amount, unit, business = timing.amount, timing.unit, timing.business_days
        at = _after_duration(previous_end, amount, unit, business, cal)
        span = _days_text(amount, unit, business)
        if isinstance(timing, EventTiming):
            due = _settled(at, f"waiting for an event, at most {span}", cal, business_days=business)
            return DueTime(due.at, due.reason, waits_for_event=True)
        return _settled(at, f"{span} after the previous step", cal, business_days=business)
    if isinstance(timing, AtTimeTiming):
        zone, note = flow_zone, ""
        if timing.zone_field is not None:
            raw = record.get(timing.zone_field)
            found = zone_named(raw)
            if found is None:
                note = (
                    f" (the record's {timing.zone_field} {raw!r} is not a time zone; "
                    "the flow's zone is used)"
                )
            else:
                zone = found
                cal = BusinessCalendar(calendar, zone)
        daily = parse_time_of_day(timing.time)
        day, at = next_daily_run(daily, previous_end, zone)
        for _ in range(MAX_SEARCH_DAYS):
            if not timing.business_days or cal.is_business_day(day):
                break
            day, at = next_daily_run(daily, at, zone)
        reason = f"next {timing.time} {zone.key}{note}"
        return _settled(at, reason, cal, business_days=timing.business_days)
    if isinstance(timing, DateTiming):
        raw = record.get(timing.field)
        if _empty(raw):
            return DueTime(None, f"the record has no {timing.field}, so the step cannot be timed")
        signed = timing.days if timing.direction == "after" else -timing.days
        clock = parse_time_of_day(timing.time) if timing.time else None
        try:
            moment = _record_moment(raw, flow_zone)
            at = _date_target(moment, signed, clock, flow_zone)
        except (ValueError, OverflowError):  # not a date, or a date too near year 1 or 9999
            return DueTime(None, f"{timing.field} holds {raw!r}, which is not a usable date")
        shown = moment.isoformat() if not isinstance(moment, datetime) else raw
        if timing.days:
            reason = f"{_days_text(timing.days, 'days', False)} {timing.direction} "
        else:
            reason = "on "
        reason += f"{timing.field} ({shown}): {format_local(at, flow_zone)}"
        if at < previous_end:
            reason += ", already past, so at once"
            due = _settled(previous_end, reason, cal, business_days=False)
            return DueTime(due.at, due.reason, passed=at)
        return _settled(at, reason, cal, business_days=False)
    raise TypeError(f"unknown timing {timing!r}")  # pragma: no cover - the union is closed


def _anniversary(day: date, year: int) -> date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February in a common year: the last day of February
        return date(year, 2, 28)


def date_trigger_due(
    trigger: DateReachedTrigger, value: str, *, now: datetime, zone: ZoneInfo
) -> datetime | None:
    """The next instant >= `now` at which `value` (a stored date or datetime) -/+ `days` is reached.

    At `time` local, or 00:00 for a date and its own time for a datetime. With `ignore_year`, the
    anniversary in the current or next year (29 February -> 28 February in common years), never
    before the date itself. None when the field is empty or not a date, or when the instant is
    past and the trigger does not recur.
    """
    now = as_utc(now, "now")
    if _empty(value):
        return None
    signed = trigger.days if trigger.direction == "after" else -trigger.days
    clock = parse_time_of_day(trigger.time) if trigger.time else None
    try:
        return _date_reached(
            moment=_record_moment(value, zone),
            signed=signed,
            clock=clock,
            ignore_year=trigger.ignore_year,
            now=now,
            zone=zone,
        )
    except (ValueError, OverflowError):  # not a date, or one too near year 1 or 9999
        return None


def _date_reached(
    *,
    moment: date | datetime,
    signed: int,
    clock: time | None,
    ignore_year: bool,
    now: datetime,
    zone: ZoneInfo,
) -> datetime | None:
    if not ignore_year:
        at = _date_target(moment, signed, clock, zone)
        return at if at >= now else None
    if isinstance(moment, datetime):
        local = moment.astimezone(zone)
        day, clock = local.date(), clock or local.time()
    else:
        day = moment
    # "5 days before 2 January" falls in the previous December, so look one year back as well.
    first = max(day.year, local_date(now, zone).year - 1)
    for year in range(first, first + 4):
        at = _date_target(_anniversary(day, year), signed, clock, zone)
        if at >= now:
            return at
    return None  # pragma: no cover - four consecutive years always include one ahead
