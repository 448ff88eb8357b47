"""Daily times across every clock change of the whole tz database, not a sample.

For every zone with an offset change in the two years from 2027-01-01, a daily time is taken in
the middle of each skipped (gap) or repeated (fold) stretch of wall time, and its successive runs
are computed across the change. The expected runs are worked out here from the transitions alone:
each local day that exists has exactly one run, at its wall time (the first occurrence when it
happens twice), or, when the wall time falls in a gap, at the instant the clocks jump, also when
that instant is on the next date (a gap across midnight: Nuuk jumps from 23:00 to 00:00).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.definition.triggers import ScheduleTrigger
from crmflow.engine.timing import next_daily_at, schedule_due

START = datetime(2027, 1, 1, tzinfo=UTC)
END = datetime(2029, 1, 1, tzinfo=UTC)
STEP = 12 * 3600  # no zone changes its offset twice within 12 hours in these years


@dataclass(frozen=True)
class Change:
    at: int  # the UTC timestamp of the first second with the new offset
    before: timedelta
    after: timedelta


def _offset(ts: int, zone: ZoneInfo) -> timedelta:
    value = datetime.fromtimestamp(ts, zone).utcoffset()
    assert value is not None
    return value


@cache
def changes(name: str) -> tuple[Change, ...]:
    """The offset changes of `name` between START and END (sampled, then bisected)."""
    zone = ZoneInfo(name)
    found: list[Change] = []
    ts, end = int(START.timestamp()), int(END.timestamp())
    previous = _offset(ts, zone)
    while ts < end:
        following = _offset(ts + STEP, zone)
        if following != previous:
            lo, hi = ts, ts + STEP
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(mid, zone) == previous:
                    lo = mid
                else:
                    hi = mid
            found.append(Change(hi, previous, following))
        previous, ts = following, ts + STEP
    return tuple(found)


def _changing_zones() -> list[str]:
    return sorted(name for name in zoneinfo.available_timezones() if changes(name))


def _expected_run(day: date, clock: time, zone: ZoneInfo, known: tuple[Change, ...]) -> int | None:
    """The UTC timestamp of `day`'s run at `clock`, from the zone's changes (None: no such day)."""
    wall = datetime.combine(day, clock)
    midnight = datetime.combine(day, time(0))
    offsets = {c.before for c in known} | {c.after for c in known}

    def readings(naive: datetime) -> list[int]:
        # The instants whose local wall time is `naive`: one, two (a fold) or none (a gap).
        out = []
        for offset in offsets:
            ts = int((naive - offset).replace(tzinfo=UTC).timestamp())
            if _offset(ts, zone) == offset:
                out.append(ts)
        return sorted(out)

    def exists(naive: datetime) -> bool:
        return bool(readings(naive))

    # The day exists when some instant of it exists: its midnight, or the end of a gap that
    # swallowed its midnight and ended the same day.
    if not exists(midnight) and not any(
        c.after > c.before
        and (datetime.fromtimestamp(c.at, UTC).replace(tzinfo=None) + c.after).date() == day
        for c in known
    ):
        return None
    found = readings(wall)
    if found:
        return found[0]
    for change in known:  # in a gap: the instant the clocks jump
        start = datetime.fromtimestamp(change.at, UTC).replace(tzinfo=None) + change.before
        if change.after > change.before and start <= wall < start + (change.after - change.before):
            return change.at
    raise AssertionError(f"{wall} is neither a wall time of {zone.key} nor in a gap")


def _clocks(change: Change) -> list[time]:
    """Daily times inside the skipped or repeated stretch of wall time: its first minute and its
    middle one."""
    start = datetime.fromtimestamp(change.at, UTC).replace(tzinfo=None) + min(
        change.before, change.after
    )
    size = abs(change.after - change.before)
    first = start + timedelta(seconds=-start.second % 60)
    middle = start + size / 2
    return sorted({t.time().replace(second=0, microsecond=0) for t in (first, middle)})


def _runs(clock: time, begin: datetime, end: datetime, zone: ZoneInfo) -> list[int]:
    runs: list[int] = []
    at = begin
    while True:
        at = next_daily_at(f"{clock:%H:%M}", at, zone)
        if at > end:
            return runs
        runs.append(int(at.timestamp()))


def test_every_zone_every_change_one_run_per_local_day_never_early() -> None:
    zones = _changing_zones()
    assert len(zones) > 100  # the database is there, and most of it changes clocks
    checked = 0
    for name in zones:
        zone = ZoneInfo(name)
        known = changes(name)
        for change in known:
            begin = datetime.fromtimestamp(change.at, UTC) - timedelta(days=2)
            end = datetime.fromtimestamp(change.at, UTC) + timedelta(days=2)
            first_day = begin.astimezone(zone).date() - timedelta(days=1)
            for clock in _clocks(change):
                expected = [
                    run
                    for offset in range(6)
                    if (run := _expected_run(first_day + timedelta(offset), clock, zone, known))
                    is not None
                    and begin.timestamp() < run <= end.timestamp()
                ]
                got = _runs(clock, begin, end, zone)
                assert got == expected, (
                    f"{name} at {clock:%H:%M} around {datetime.fromtimestamp(change.at, UTC)}: "
                    f"{[str(datetime.fromtimestamp(t, zone)) for t in got]} != "
                    f"{[str(datetime.fromtimestamp(t, zone)) for t in expected]}"
                )
                checked += 1
    assert checked > 500


NUUK = ZoneInfo("America/Nuuk")


def test_a_gap_across_midnight_runs_that_day_at_the_jump_then_the_next_day_as_usual() -> None:
    """Nuuk, 27 March 2027: the clocks jump from 23:00 to 00:00, so 23:30 does not exist that
    day. The run was dropped; it is now at 00:00 (the first instant after the gap)."""
    saturday_evening = datetime(2027, 3, 27, 20, 0, tzinfo=NUUK)
    first = next_daily_at("23:30", saturday_evening, NUUK)
    assert first.astimezone(NUUK).replace(tzinfo=None) == datetime(2027, 3, 28, 0, 0)
    # One second earlier the clocks showed 22:59:59: this is the jump itself.
    assert (first - timedelta(seconds=1)).astimezone(NUUK).hour == 22
    second = next_daily_at("23:30", first, NUUK)
    assert second.astimezone(NUUK).replace(tzinfo=None) == datetime(2027, 3, 28, 23, 30)


def test_a_weekly_schedule_keeps_its_weekday_when_the_gap_pushes_it_past_midnight() -> None:
    trigger = ScheduleTrigger(type="schedule", time="23:30", query="q", weekdays=["sat"])
    due = schedule_due(trigger, after=datetime(2027, 3, 27, 12, 0, tzinfo=NUUK), zone=NUUK)
    # Saturday's run, at Sunday 00:00 local: not the next Saturday.
    assert due.astimezone(NUUK).replace(tzinfo=None) == datetime(2027, 3, 28, 0, 0)


def test_a_date_the_zone_skipped_has_no_run_and_its_neighbours_keep_theirs() -> None:
    apia = ZoneInfo("Pacific/Apia")  # 30 December 2011 never happened in Samoa
    runs = _runs(
        time(9, 0),
        datetime(2011, 12, 28, 12, 0, tzinfo=apia),
        datetime(2012, 1, 1, 12, 0, tzinfo=apia),
        apia,
    )
    days = [datetime.fromtimestamp(t, apia).strftime("%m-%d %H:%M") for t in runs]
    assert days == ["12-29 09:00", "12-31 09:00", "01-01 09:00"]


@pytest.mark.parametrize(
    ("zone", "after", "clock", "wall"),
    [
        # Pyongyang, 4 May 2018: 23:30 -> 00:00.
        ("Asia/Pyongyang", datetime(2018, 5, 4, 12), "23:45", datetime(2018, 5, 5, 0, 0)),
        # Dhaka, 19 June 2009: 23:00 -> 00:00.
        ("Asia/Dhaka", datetime(2009, 6, 19, 12), "23:00", datetime(2009, 6, 20, 0, 0)),
    ],
)
def test_past_gaps_across_midnight_run_at_the_jump(
    zone: str, after: datetime, clock: str, wall: datetime
) -> None:
    here = ZoneInfo(zone)
    due = next_daily_at(clock, after.replace(tzinfo=here), here)
    assert due.astimezone(here).replace(tzinfo=None) == wall
