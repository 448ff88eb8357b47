"""Business days, public holidays and quiet hours: the flow calendar as a pure, cached object.

The rules a CRM admin relies on:

- A **business day** is a weekday listed in `business_days` (Monday to Friday by default) that is
  neither a public holiday of `holidays` (an ISO country code such as FR, RO, IT, optionally
  narrowed by `holiday_subdivision`, read from the `holidays` package) nor one of
  `extra_holidays`. Days are local dates in the flow's time zone.
- **Adding N business days** keeps the local wall-clock time and lands on the N-th business day
  after the start date: Friday 15:00 + 1 = Monday 15:00, and Saturday 15:00 + 1 = Monday 15:00 too
  (each step forward to the next business day counts one). **Zero business days** from a day off
  moves to the next business day at the same local time; from a business day it changes nothing.
- **Quiet hours** (`20:00`-`08:00`, spanning midnight when the end is before the start) hold
  anything that falls inside them until their end, in local time: 23:10 waits until 08:00 the
  next morning, 06:00 until 08:00 the same morning. The start is quiet, the end is not. An end
  that falls into a DST gap is the first instant after the gap; on a fall-back night the wait
  ends at the first 08:00 that is not before the moment being moved. Equal start and end mean
  no quiet hours.
- Without a calendar every day is a business day and there are no quiet hours.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from crmflow.engine.definition.calendar import Calendar
from crmflow.engine.definition.common import WEEKDAYS
from crmflow.engine.localtime import as_utc, parse_time_of_day, resolve_local
from crmflow.errors import InvalidInputError, Problem

__all__ = ["MAX_SEARCH_DAYS", "BusinessCalendar", "calendar_problems"]

# How far ahead a search for the next business day may go before the calendar is declared
# unusable (a calendar without business days would otherwise loop forever).
MAX_SEARCH_DAYS = 3 * 366


# The two-letter names the holidays package (0.109) knows, checked without importing it: its
# calendars (Hebrew, Islamic, Hindu, ...) take 20 ms to load, a twentieth of `flows validate`.
# A code not listed is looked up in the package itself, which may be newer; a unit test checks
# that the package still knows every code listed.
KNOWN_COUNTRIES = frozenset(
    (  # noqa: SIM905 - 251 codes read better as words than as a list of strings
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
        "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
        "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
        "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
        "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
        "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
        "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
        "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UK UM US UY UZ VA VC VE VG "
        "VI VN VU WF WS XK YE YT ZA ZM ZW"
    ).split()
)


@lru_cache(maxsize=1024)
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    # Holidays are pure data, so memoising them per (country, subdivision, year) is safe and
    # keeps the per-step cost of a business-day check to a set lookup.
    # Imported here: the holidays package takes a noticeable part of a second to load, and most
    # commands (and flows without a holiday calendar) never need it.
    import holidays  # noqa: PLC0415 - lazy: loading it costs a noticeable part of a second

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())


def _known_country(country: str) -> None:
    """NotImplementedError, worded as `holidays.country_holidays` words it, unless the holidays
    package knows `country`.

    Read from KNOWN_COUNTRIES, else from the package's registry of names: computing one year of
    holidays to find out (what the business-day arithmetic does) imports every country module
    of the package, 60 ms that `crmflow flows validate` would pay for a flow with a calendar."""
    if country in KNOWN_COUNTRIES:
        return
    from holidays.registry import COUNTRIES  # noqa: PLC0415 - lazy, as in _public_holidays

    if not any(country in names for names in COUNTRIES.values()):
        raise NotImplementedError(f"Country {country} not available")


def calendar_problems(calendar: Calendar, path: str = "calendar") -> list[Problem]:
    """What is wrong with a calendar definition (unknown country or subdivision, no work days)."""
    problems: list[Problem] = []
    if not calendar.business_days:
        problems.append(
            Problem(
                f"{path}.business_days",
                "no business day is listed, so nothing counted in business days could ever run",
                "list at least one weekday, e.g. [mon, tue, wed, thu, fri]",
            )
        )
    if calendar.holidays is not None:
        for where, subdivision in (
            ("holidays", None),
            ("holiday_subdivision", calendar.holiday_subdivision),
        ):
            if where == "holiday_subdivision" and subdivision is None:
                break
            try:
                if subdivision is None:
                    _known_country(calendar.holidays)
                else:
                    _public_holidays(calendar.holidays, subdivision, 2000)
            except NotImplementedError as exc:
                problems.append(
                    Problem(
                        f"{path}.{where}",
                        str(exc),
                        "use a country code (FR, RO, IT, ...) and subdivision the holidays "
                        "package knows",
                    )
                )
                break
    elif calendar.holiday_subdivision is not None:
        problems.append(
            Problem(
                f"{path}.holiday_subdivision",
                "a holiday subdivision needs a country in `holidays`",
                "set holidays: FR (for example) or remove holiday_subdivision",
            )
        )
    return problems


class BusinessCalendar:
    """A flow's calendar in one time zone: business days, holidays, and quiet hours."""

    __slots__ = ("_business_weekdays", "_country", "_extra", "_quiet", "_subdivision", "zone")

    def __init__(self, calendar: Calendar | None, zone: ZoneInfo) -> None:
        self.zone = zone
        self._country: str | None = None
        self._subdivision: str | None = None
        self._extra: frozenset[date] = frozenset()
        self._quiet: tuple[time, time] | None = None
        # Without a calendar, "business days" still means Monday to Friday (what an admin writing
        # "5 business days" expects), with no holidays and no quiet hours.
        self._business_weekdays = frozenset(range(5))
        if calendar is None:
            return
        problems = calendar_problems(calendar)
        if problems:
            raise InvalidInputError("the flow's calendar", problems)
        self._business_weekdays = frozenset(WEEKDAYS.index(d) for d in calendar.business_days)
        self._country = calendar.holidays
        self._subdivision = calendar.holiday_subdivision
        self._extra = frozenset(calendar.extra_holidays)
        if calendar.quiet_hours is not None:
            start = parse_time_of_day(calendar.quiet_hours.start)
            end = parse_time_of_day(calendar.quiet_hours.end)
            if start != end:
                self._quiet = (start, end)

    @property
    def quiet_hours(self) -> tuple[time, time] | None:
        """(start, end) of the quiet hours, or None when there are none."""
        return self._quiet

    # -- business days -----------------------------------------------------------------------

    def is_holiday(self, day: date) -> bool:
        """A public holiday of the calendar's country (and subdivision), or an extra holiday."""
        if day in self._extra:
            return True
        if self._country is None:
            return False
        return day in _public_holidays(self._country, self._subdivision, day.year)

    def is_business_day(self, day: date) -> bool:
        """A listed weekday that is not a holiday."""
        return day.weekday() in self._business_weekdays and not self.is_holiday(day)

    def next_business_day(self, day: date) -> date:
        """`day` itself when it is a business day, else the first business day after it."""
        for offset in range(MAX_SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(
            f"the calendar has no business day in the {MAX_SEARCH_DAYS} days after {day}"
        )

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The N-th business day after `start`'s local date, at `start`'s local wall time.

        Zero days from a day off gives the next business day at the same time (see the module
        text); a wall time missing on the target day (DST gap) gives the end of the gap.
        """
        if days < 0:
            raise ValueError(f"business days to add must not be negative, got {days}")
        if days == 0:
            return self.next_business_moment(start)
        local = as_utc(start, "start").astimezone(self.zone)
        day = local.date()
        for _ in range(days):
            day = self.next_business_day(day + timedelta(days=1))
        return resolve_local(day, local.time(), self.zone)

    def next_business_moment(self, at: datetime) -> datetime:
        """`at` when it falls on a business day; else the same local time on the next one."""
        at = as_utc(at)
        local = at.astimezone(self.zone)
        if self.is_business_day(local.date()):
            return at
        day = self.next_business_day(local.date() + timedelta(days=1))
        return resolve_local(day, local.time(), self.zone)

    # -- quiet hours ---------------------------------------------------------------------------

    def in_quiet_hours(self, at: datetime, zone: ZoneInfo | None = None) -> bool:
        """Whether `at`'s local wall time (in `zone`, default the calendar's) is within
        [start, end) of the quiet hours."""
        if self._quiet is None:
            return False
        start, end = self._quiet
        clock = as_utc(at).astimezone(zone or self.zone).time()
        if start < end:
            return start <= clock < end
        return clock >= start or clock < end

    def out_of_quiet_hours(self, at: datetime, zone: ZoneInfo | None = None) -> datetime:
        """`at`, or, when it falls inside the quiet hours, the instant they end (local time in
        `zone`: a message's recipient's time zone; default the calendar's)."""
        at = as_utc(at)
        zone = zone or self.zone
        if self._quiet is None or not self.in_quiet_hours(at, zone):
            return at
        start, end = self._quiet
        local = at.astimezone(zone)
        day = local.date()
        if start > end and local.time() >= start:
            day += timedelta(days=1)  # late evening: the quiet hours end tomorrow morning
        # On a fall-back night the end time can happen twice; `at` may already be past the first
        # one (in the repeated hour), and the wait must never end before `at`.
        for fold in (0, 1):
            candidate = resolve_local(day, end, zone, fold=fold)
            if candidate > at:
                return candidate
        return at  # unreachable in practice: the end is always ahead of a quiet moment

    def settle(self, at: datetime, *, business_days: bool = False) -> datetime:
        """`at` moved out of the quiet hours and, when `business_days`, onto a business day.

        Quiet hours go first, so that Friday 21:00 becomes Saturday 08:00 and then Monday 08:00
        (not Monday 21:00, then Tuesday 08:00).
        """
        at = as_utc(at)
        if self._quiet is None and not business_days:
            return at
        for _ in range(8):
            moved = self.out_of_quiet_hours(at)
            if business_days:
                moved = self.out_of_quiet_hours(self.next_business_moment(moved))
            if moved == at:
                break
            at = moved
        return at
