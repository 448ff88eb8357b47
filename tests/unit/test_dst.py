"""Daylight-saving days: daily times run once, days keep the wall clock, nothing is ever early."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmflow.engine.calendars import BusinessCalendar
from crmflow.engine.definition.calendar import Calendar, QuietHours
from crmflow.engine.definition.timing import AfterTiming, AtTimeTiming
from crmflow.engine.localtime import resolve_local
from crmflow.engine.timing import missed_daily_runs, next_daily_at, step_due_at

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone)


# (zone, gap day, daily time inside the gap, expected local wall time, expected UTC instant)
GAPS = [
    (PARIS, date(2026, 3, 29), "02:30", time(3, 0), utc(2026, 3, 29, 1, 0)),
    (PARIS, date(2026, 3, 29), "02:00", time(3, 0), utc(2026, 3, 29, 1, 0)),
    (NEW_YORK, date(2026, 3, 8), "02:30", time(3, 0), utc(2026, 3, 8, 7, 0)),
    (LORD_HOWE, date(2026, 10, 4), "02:15", time(2, 30), utc(2026, 10, 3, 15, 30)),
]
# (zone, fall-back day, daily time that happens twice, UTC of its first occurrence)
FOLDS = [
    (PARIS, date(2026, 10, 25), "02:30", utc(2026, 10, 25, 0, 30)),
    (NEW_YORK, date(2026, 11, 1), "01:30", utc(2026, 11, 1, 5, 30)),
    (LORD_HOWE, date(2026, 4, 5), "01:45", utc(2026, 4, 4, 14, 45)),
]


@pytest.mark.parametrize(("zone", "day", "clock", "wall", "instant"), GAPS)
def test_a_time_inside_the_gap_runs_at_the_first_instant_after_it(
    zone: ZoneInfo, day: date, clock: str, wall: time, instant: datetime
) -> None:
    the_day_before = datetime.combine(day - timedelta(days=1), time(12), tzinfo=zone)
    due = next_daily_at(clock, the_day_before, zone)
    assert due == instant
    assert local(due, zone).date() == day
    assert local(due, zone).time() == wall
    # The next run is the following day at the real time again, not a second one the same day.
    following = next_daily_at(clock, due, zone)
    assert local(following, zone).date() == day + timedelta(days=1)
    assert local(following, zone).strftime("%H:%M") == clock


@pytest.mark.parametrize(("zone", "day", "clock", "first"), FOLDS)
def test_a_time_that_happens_twice_runs_once_at_its_first_occurrence(
    zone: ZoneInfo, day: date, clock: str, first: datetime
) -> None:
    the_day_before = datetime.combine(day - timedelta(days=1), time(12), tzinfo=zone)
    due = next_daily_at(clock, the_day_before, zone)
    assert due == first
    # From the first occurrence (and from between the two) the next run is the next day.
    second = datetime.combine(day, time.fromisoformat(clock), tzinfo=zone).replace(fold=1)
    assert second.astimezone(UTC) > first
    for after in (first, first + timedelta(minutes=1), second.astimezone(UTC)):
        nxt = next_daily_at(clock, after, zone)
        assert local(nxt, zone).date() == day + timedelta(days=1)


@pytest.mark.parametrize(
    ("zone", "day", "clock"),
    [(z, d, c) for z, d, c, _, _ in GAPS] + [(z, d, c) for z, d, c, _ in FOLDS],
)
def test_every_day_of_a_week_spanning_the_change_has_exactly_one_run(
    zone: ZoneInfo, day: date, clock: str
) -> None:
    start = datetime.combine(day - timedelta(days=3), time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=4), time(0), tzinfo=zone).astimezone(UTC)
    runs: list[datetime] = []
    at = start
    while (at := next_daily_at(clock, at, zone)) < end:
        runs.append(at)
    per_day = Counter(local(r, zone).date() for r in runs)
    assert sorted(per_day) == [day + timedelta(days=n) for n in range(-3, 4)]
    assert set(per_day.values()) == {1}
    assert missed_daily_runs(clock, start, end, zone) == 7


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        (PARIS, datetime(2026, 3, 28, 9, 0, tzinfo=PARIS)),  # 23-hour day follows
        (PARIS, datetime(2026, 10, 24, 9, 0, tzinfo=PARIS)),  # 25-hour day follows
        (NEW_YORK, datetime(2026, 3, 7, 9, 0, tzinfo=NEW_YORK)),
        (NEW_YORK, datetime(2026, 10, 31, 9, 0, tzinfo=NEW_YORK)),
        (LORD_HOWE, datetime(2026, 10, 3, 9, 0, tzinfo=LORD_HOWE)),  # 23.5-hour day
        (LORD_HOWE, datetime(2026, 4, 4, 9, 0, tzinfo=LORD_HOWE)),  # 24.5-hour day
    ],
)
def test_one_day_after_keeps_the_local_wall_clock(zone: ZoneInfo, start: datetime) -> None:
    due = step_due_at(
        AfterTiming(type="after", amount=1, unit="days"),
        previous_end=start,
        record={},
        flow_zone=zone,
        calendar=None,
    )
    assert due.at is not None
    assert local(due.at, zone).replace(tzinfo=None) == (start + timedelta(days=1)).replace(
        tzinfo=None
    )
    assert due.at - start.astimezone(UTC) != timedelta(hours=24)
    # Hours are elapsed time: 24 hours later is not 09:00 on such a day.
    hours = step_due_at(
        AfterTiming(type="after", amount=24, unit="hours"),
        previous_end=start,
        record={},
        flow_zone=zone,
        calendar=None,
    )
    assert hours.at == start.astimezone(UTC) + timedelta(hours=24)


def test_one_day_after_a_time_that_lands_in_the_gap_gives_the_end_of_the_gap() -> None:
    due = step_due_at(
        AfterTiming(type="after", amount=1, unit="days"),
        previous_end=datetime(2026, 3, 28, 2, 30, tzinfo=PARIS),
        record={},
        flow_zone=PARIS,
        calendar=None,
    )
    assert due.at == utc(2026, 3, 29, 1, 0)  # 03:00 Paris, the first instant after the gap


def test_record_zone_at_time_on_its_own_dst_day() -> None:
    due = step_due_at(
        AtTimeTiming(type="at_time", time="02:30", zone_field="tz"),
        previous_end=utc(2026, 3, 7, 20, 0),
        record={"tz": "America/New_York"},
        flow_zone=PARIS,
        calendar=None,
    )
    assert due.at == utc(2026, 3, 8, 7, 0)  # 03:00 New York: 02:30 does not exist that day


class TestQuietHoursOnDstDays:
    cal = Calendar(quiet_hours=QuietHours(start="20:00", end="08:00"))

    def test_the_night_of_the_spring_change_ends_at_0800_local(self) -> None:
        bc = BusinessCalendar(self.cal, PARIS)
        late = datetime(2026, 3, 28, 23, 0, tzinfo=PARIS)
        assert bc.out_of_quiet_hours(late) == datetime(2026, 3, 29, 8, 0, tzinfo=PARIS)
        assert bc.out_of_quiet_hours(late) == utc(2026, 3, 29, 6, 0)

    def test_the_night_of_the_autumn_change_ends_at_0800_local(self) -> None:
        bc = BusinessCalendar(self.cal, NEW_YORK)
        inside_repeated_hour = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
        assert bc.out_of_quiet_hours(inside_repeated_hour) == utc(2026, 11, 1, 13, 0)

    def test_an_end_inside_the_gap_is_the_first_instant_after_it(self) -> None:
        cal = Calendar(quiet_hours=QuietHours(start="22:00", end="02:15"))
        bc = BusinessCalendar(cal, LORD_HOWE)
        moved = bc.out_of_quiet_hours(datetime(2026, 10, 3, 23, 0, tzinfo=LORD_HOWE))
        assert local(moved, LORD_HOWE).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 30)

    def test_an_end_that_happens_twice_is_never_before_the_moment_moved(self) -> None:
        # Quiet 20:00-01:45 on Lord Howe's fall-back night (02:00 -> 01:30): at 01:40 of the
        # repeated half hour, the first 01:45 is already past; the wait ends at the second one.
        cal = Calendar(quiet_hours=QuietHours(start="20:00", end="01:45"))
        bc = BusinessCalendar(cal, LORD_HOWE)
        first = datetime(2026, 4, 5, 1, 40, tzinfo=LORD_HOWE)
        second = first.replace(fold=1)
        assert bc.out_of_quiet_hours(first) == resolve_local(first.date(), time(1, 45), LORD_HOWE)
        moved = bc.out_of_quiet_hours(second)
        assert moved > second.astimezone(UTC)
        assert moved == resolve_local(first.date(), time(1, 45), LORD_HOWE, fold=1)


# -- the property: never early, always the earliest valid instant --------------------------------

ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",  # changes at midnight
    "America/St_Johns",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kathmandu",
    "Africa/Casablanca",  # leaves DST during Ramadan
    "Europe/London",
    "UTC",
]


@cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The UTC instants where the zone's offset changes in 2000-2037 (day by day, bisected)."""
    zone = ZoneInfo(name)
    found: list[datetime] = []
    at = utc(2000, 1, 1)
    while at.year < 2038:
        nxt = at + timedelta(days=1)
        if at.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = int(at.timestamp()), int(nxt.timestamp())
            old = at.astimezone(zone).utcoffset()
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, zone).utcoffset() == old:
                    lo = mid
                else:
                    hi = mid
            found.append(datetime.fromtimestamp(hi, UTC))
        at = nxt
    return tuple(found)


def offset(at: datetime, zone: ZoneInfo) -> timedelta:
    value = at.astimezone(zone).utcoffset()
    assert value is not None
    return value


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, datetime, str]:
    name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(name)
    near = transitions(name)
    if near and draw(st.integers(0, 9)) < 7:
        # Near a DST change, with a daily time inside the skipped or repeated wall times (or
        # close to them), and `after` mostly before that day's run.
        jump = draw(st.sampled_from(near))
        after = jump + timedelta(seconds=draw(st.integers(-2 * 86400, 86400)))
        shift = offset(jump, zone) - offset(jump - timedelta(seconds=1), zone)
        size = abs(int(shift.total_seconds()) // 60)
        if size and draw(st.booleans()):
            minutes = draw(
                st.integers(-size, -1) if shift > timedelta(0) else st.integers(0, size - 1)
            )
        else:
            minutes = draw(st.integers(-90, 90))
        clock = (jump.astimezone(zone) + timedelta(minutes=minutes)).strftime("%H:%M")
    else:
        after = utc(2000, 1, 1) + timedelta(seconds=draw(st.integers(0, 38 * 365 * 86400)))
        clock = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
    return name, after, clock


def _is_a_run(u: datetime, clock: time, zone: ZoneInfo) -> bool:
    """Whether instant `u` is the day's run of `clock`: its first occurrence or the end of a gap."""
    here = u.astimezone(zone)
    wall = datetime.combine(here.date(), clock)
    if here.time() == clock:
        return wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == u
    just_before = (u - timedelta(seconds=1)).astimezone(zone)
    if just_before.utcoffset() == here.utcoffset():
        return False
    gap_start = just_before.replace(tzinfo=None) + timedelta(seconds=1)
    return gap_start <= wall < here.replace(tzinfo=None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_next_daily_at_is_after_valid_and_the_earliest(case: tuple[str, datetime, str]) -> None:
    name, after, text = case
    zone = ZoneInfo(name)
    clock = time.fromisoformat(text)
    due = next_daily_at(text, after, zone)
    assert due.tzinfo is UTC
    assert due > after
    assert _is_a_run(due, clock, zone)
    # No earlier run exists: runs are whole minutes in these years, so checking every whole
    # minute in (after, due) is exhaustive.
    u = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while u < due:
        assert not _is_a_run(u, clock, zone), f"{u} is an earlier run than {due}"
        u += timedelta(minutes=1)
