"""The date and time values a filter compares with: absolute days and instants, and relative
ones (`today - 180 days`, `now + 2 hours`, `end of month - 1 month`) resolved at a given `now`
in the organisation's time zone.

Which value is a day and which an instant, and how months, month ends and DST days move, is told
in `crmflow.engine.querylang`'s docstring; the flow simulator reuses `parse_time_value` and
`day_start` so that a simulated date reads the same as a saved query's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from dateutil.relativedelta import relativedelta

from crmflow.engine.querylang.parse import describe
from crmflow.errors import shown

__all__ = [
    "DATE_RANGE_HINT",
    "RELATIVE_FORMS",
    "DayValue",
    "InstantValue",
    "RelativeTime",
    "TimeOperand",
    "day_start",
    "parse_time_value",
]

RELATIVE_FORMS = (
    "a date YYYY-MM-DD, a date and time YYYY-MM-DDTHH:MM[:SS][+HH:MM], or a relative date: "
    "today, now, yesterday, tomorrow, start of day|week|month|year, end of day|week|month|year, "
    "optionally followed by '+ N unit' or '- N unit' (units: minutes, hours, days, weeks, months, "
    "years), e.g. 'today - 180 days', 'now + 2 hours', 'start of month - 1 month'"
)

_UNITS = {
    "minute": "minutes",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
    "month": "months",
    "year": "years",
}
_RELATIVE = re.compile(
    r"^(?P<anchor>today|now|yesterday|tomorrow|(?:start|end)\s+of\s+(?:day|week|month|year))"
    r"(?P<offsets>(?:\s*[+-]\s*\d+\s*[a-z]+)*)$"
)
_OFFSET = re.compile(r"\s*([+-])\s*(\d+)\s*([a-z]+)")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The largest amount of each unit that can stay within the years 1 to 9999 from any day: a
# larger one can never resolve, so it is refused when the filter is read, whatever the day.
_MAX_OFFSET = {
    "minutes": 9999 * 366 * 24 * 60,
    "hours": 9999 * 366 * 24,
    "days": 9999 * 366,
    "weeks": 9999 * 366 // 7,
    "months": 9999 * 12,
    "years": 9999,
}
DATE_RANGE_HINT = "dates run from year 1 to year 9999: use a smaller offset"


@dataclass(frozen=True)
class DayValue:
    """An absolute calendar day."""

    day: date

    def resolve(self, now: datetime, zone: tzinfo) -> date:
        return self.day


@dataclass(frozen=True)
class InstantValue:
    """An absolute instant; a naive one is read in the organisation's zone when resolved."""

    at: datetime

    def resolve(self, now: datetime, zone: tzinfo) -> datetime:
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=zone)
        return at.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RelativeTime:
    """`today - 180 days`, `now + 2 hours`, `start of month - 1 month`, ...

    `resolve` returns a `date` (a local day) or an aware UTC `datetime` (an instant): see the
    module docstring for which is which.
    """

    anchor: str  # today | now | yesterday | tomorrow | start of <unit> | end of <unit>
    offsets: tuple[tuple[int, str], ...] = ()  # (signed amount, plural unit)
    text: str = dc_field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> RelativeTime:
        """Parse a relative date; raise ValueError saying the accepted forms."""
        normal = " ".join(text.lower().split())
        match = _RELATIVE.match(normal)
        if match is None:
            raise ValueError(f"{shown(text)} is not a date: use {RELATIVE_FORMS}")
        offsets: list[tuple[int, str]] = []
        for sign, amount, unit in _OFFSET.findall(match["offsets"]):
            singular = unit[:-1] if unit.endswith("s") else unit
            if singular not in _UNITS:
                raise ValueError(
                    f"{text!r}: unknown unit {unit!r}; use minutes, hours, days, weeks, months "
                    "or years"
                )
            plural = _UNITS[singular]
            # Compared as text first: int() of thousands of digits is slow, then refused.
            limit = _MAX_OFFSET[plural]
            digits = amount.lstrip("0") or "0"
            if len(digits) > len(str(limit)) or int(digits) > limit:
                raise ValueError(
                    f"{shown(text)}: {shown(amount, quote=False)} {plural} is out of range "
                    f"(at most {limit:,} {plural}); {DATE_RANGE_HINT}"
                )
            offsets.append((int(digits) * (-1 if sign == "-" else 1), plural))
        anchor = " ".join(match["anchor"].split())
        return cls(anchor, tuple(offsets), text)

    def resolve(self, now: datetime, zone: tzinfo) -> date | datetime:
        """The day or instant at `now`; ValueError (never OverflowError) when it falls outside
        the years 1 to 9999."""
        if now.tzinfo is None:
            raise ValueError("`now` must be an aware datetime")
        try:
            return self._resolve(now, zone)
        except (OverflowError, ValueError):
            raise ValueError(
                f"{shown(self.text or self.anchor)} falls outside the years 1 to 9999 on "
                f"{now.astimezone(zone).date().isoformat()}; {DATE_RANGE_HINT}"
            ) from None

    def _resolve(self, now: datetime, zone: tzinfo) -> date | datetime:
        today = now.astimezone(zone).date()
        instant: datetime | None = None
        day = today
        # An `end of ...` day becomes, as an instant, the start of the next day; a month or year
        # end stays a month end when moved by months or years.
        is_end = False
        month_end = False
        if self.anchor == "now":
            instant = now.astimezone(UTC)
        elif self.anchor == "yesterday":
            day = today - timedelta(days=1)
        elif self.anchor == "tomorrow":
            day = today + timedelta(days=1)
        elif self.anchor.startswith("start of "):
            day = _start_of(today, self.anchor.removeprefix("start of "))
        elif self.anchor.startswith("end of "):
            unit = self.anchor.removeprefix("end of ")
            day = _end_of(today, unit)
            is_end = True
            month_end = unit in ("month", "year")
        for amount, unit in self.offsets:
            if unit in ("hours", "minutes"):
                if instant is None:
                    instant = day_start(day + timedelta(days=1) if is_end else day, zone)
                instant = instant + timedelta(**{unit: amount})
            elif instant is not None:
                wall = instant.astimezone(zone).replace(tzinfo=None) + relativedelta(
                    **{unit: amount}  # type: ignore[arg-type]
                )
                instant = wall.replace(tzinfo=zone).astimezone(UTC)
            elif month_end and unit in ("months", "years"):
                moved = day.replace(day=1) + relativedelta(**{unit: amount})  # type: ignore[arg-type]
                day = _end_of(moved, "month")
            else:
                day = day + relativedelta(**{unit: amount})  # type: ignore[arg-type]
                month_end = False
        if instant is not None:
            return instant.astimezone(UTC).replace(microsecond=0)
        return day


def _start_of(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    return day


def _end_of(day: date, unit: str) -> date:
    if unit == "week":
        return day + timedelta(days=6 - day.weekday())
    if unit == "month":
        return day.replace(day=1) + relativedelta(months=1) - timedelta(days=1)
    if unit == "year":
        return day.replace(month=12, day=31)
    return day


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant of a local day, in UTC (01:00 local where midnight is skipped)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


TimeOperand = DayValue | InstantValue | RelativeTime


def parse_time_value(raw: object) -> TimeOperand:
    """An absolute or relative date/time value; ValueError (saying the accepted forms) if not."""
    if isinstance(raw, datetime):
        return InstantValue(raw)
    if isinstance(raw, date):
        return DayValue(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected a date, got {describe(raw)}: use {RELATIVE_FORMS}")
    text = raw.strip()
    if _DATE_TEXT.match(text):
        try:
            return DayValue(date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid calendar date") from None
    if text[:4].isdigit():
        iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            return InstantValue(datetime.fromisoformat(iso))
        except ValueError:
            raise ValueError(f"{raw!r} is not a date: use {RELATIVE_FORMS}") from None
    return RelativeTime.parse(text)
