"""Local wall-clock time <-> instants, safe across daylight-saving changes.

Every rule a CRM admin writes is in local wall-clock time ("at 09:00", "1 day later", "quiet
until 08:00"), while due times are stored as UTC instants. Two days a year the mapping is not
one-to-one, and crmflow resolves them the same way everywhere:

- **Gap** (spring forward: 02:00 -> 03:00 in Paris, 02:00 -> 02:30 on Lord Howe Island): a wall
  time that does not exist resolves to the first valid instant after the gap, i.e. the moment
  the clocks jump (03:00 Paris time). It is never moved *earlier*.
- **Fold** (fall back: 03:00 -> 02:00): a wall time that happens twice resolves to its first
  occurrence (`fold=0`), so a daily step runs once, not twice.

All instants returned are aware datetimes in UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmflow.engine.definition.common import TIME_PATTERN

__all__ = [
    "add_local_days",
    "as_utc",
    "format_local",
    "gap_end",
    "local_date",
    "parse_time_of_day",
    "resolve_local",
    "zone_named",
]


def as_utc(at: datetime, name: str = "at") -> datetime:
    """`at` in UTC; a naive datetime is refused, since its instant would be a guess."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a time zone), got {at!r}")
    return at.astimezone(UTC)


def local_date(at: datetime, zone: tzinfo) -> date:
    """The calendar date that `at` falls on in `zone`."""
    return as_utc(at).astimezone(zone).date()


def parse_time_of_day(text: str) -> time:
    """`HH:MM` (24-hour clock) as a `time`; anything else is a ValueError naming the value."""
    if not isinstance(text, str) or not TIME_PATTERN.match(text):
        raise ValueError(f"{text!r} is not a time of day: write HH:MM on a 24-hour clock")
    return time(int(text[:2]), int(text[3:]))


def zone_named(name: object) -> ZoneInfo | None:
    """The IANA zone called `name`, or None when `name` is not one (empty, unknown, malformed)."""
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return ZoneInfo(name.strip())
    # Unknown keys raise ZoneInfoNotFoundError, malformed ones ValueError, and a key naming a
    # directory of the tz database ("Europe") an OSError on some platforms.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset_at(ts: int, zone: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()


def gap_end(day: date, clock: time, zone: tzinfo) -> datetime | None:
    """The instant the clocks jump, when `clock` on `day` falls into a DST gap; None otherwise."""
    wall = datetime.combine(day, clock)
    before = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if before.astimezone(zone).replace(tzinfo=None) == wall:
        return None
    # In a gap, fold=0 reads the wall time with the offset before the jump and fold=1 with the
    # offset after, so the transition lies between the two readings. Bisect on whole seconds
    # (tz transitions are on whole seconds) for the first instant with the new offset.
    after = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo = math.floor(min(before, after).timestamp())
    hi = math.ceil(max(before, after).timestamp())
    old = _offset_at(lo, zone)
    if _offset_at(hi, zone) == old:
        return before  # not a plain gap (should not happen): keep Python's own reading
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, zone) == old:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def resolve_local(day: date, clock: time, zone: tzinfo, *, fold: int = 0) -> datetime:
    """The UTC instant of wall time `clock` on `day` in `zone`.

    A wall time inside a DST gap gives the first valid instant after the gap; a wall time that
    happens twice gives its first occurrence (or the second with `fold=1`).
    """
    jump = gap_end(day, clock, zone)
    if jump is not None:
        return jump
    return datetime.combine(day, clock).replace(tzinfo=zone, fold=fold).astimezone(UTC)


def add_local_days(at: datetime, days: int, zone: tzinfo) -> datetime:
    """`days` calendar days after (or before, if negative) `at`, keeping the local wall time.

    "1 day after 09:00" is 09:00 the next day even when that day is 23 or 25 hours long; a wall
    time that does not exist on the target day gives the end of the gap, one that exists twice
    its first occurrence. Zero days returns `at` itself.
    """
    at = as_utc(at)
    if days == 0:
        return at
    local = at.astimezone(zone)
    return resolve_local(local.date() + timedelta(days=days), local.time(), zone)


def format_local(at: datetime, zone: tzinfo) -> str:
    """`2026-12-03 09:00 Europe/Paris`: how an instant is shown in history texts."""
    local = as_utc(at).astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M")
    if local.second or local.microsecond:
        text = local.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {getattr(zone, 'key', None) or local.tzname()}"
