"""Business days with national holidays, day-off rules, quiet hours spanning midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import product
from string import ascii_uppercase
from zoneinfo import ZoneInfo

import holidays
import pytest
from holidays.registry import COUNTRIES

from crmflow.engine.calendars import KNOWN_COUNTRIES, BusinessCalendar, calendar_problems
from crmflow.engine.definition.calendar import Calendar, QuietHours
from crmflow.errors import InvalidInputError

PARIS = ZoneInfo("Europe/Paris")
BUCHAREST = ZoneInfo("Europe/Bucharest")
ROME = ZoneInfo("Europe/Rome")


def paris(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=PARIS)


class TestBusinessDays:
    def test_without_a_calendar_business_days_are_monday_to_friday(self) -> None:
        bc = BusinessCalendar(None, PARIS)
        # 21-25 December 2026 is Monday to Friday; no holidays without a calendar.
        assert [d for d in range(20, 28) if bc.is_business_day(date(2026, 12, d))] == [
            21,
            22,
            23,
            24,
            25,
        ]
        # Thursday + 1 business day = Friday (Christmas is not a holiday without a calendar);
        # Friday + 1 = Monday.
        assert bc.add_business_days(paris(2026, 12, 24, 10), 1) == paris(2026, 12, 25, 10)
        assert bc.add_business_days(paris(2026, 12, 25, 10), 1) == paris(2026, 12, 28, 10)
        assert bc.quiet_hours is None

    @pytest.mark.parametrize(
        ("country", "zone", "holiday"),
        [
            ("FR", PARIS, date(2026, 12, 25)),
            ("FR", PARIS, date(2026, 5, 1)),
            ("FR", PARIS, date(2026, 7, 14)),
            ("RO", BUCHAREST, date(2026, 12, 1)),  # National Day
            ("RO", BUCHAREST, date(2026, 11, 30)),  # Saint Andrew
            ("IT", ROME, date(2026, 6, 2)),  # Republic Day
            ("IT", ROME, date(2026, 12, 8)),  # Immaculate Conception
        ],
    )
    def test_public_holidays_are_days_off(
        self, country: str, zone: ZoneInfo, holiday: date
    ) -> None:
        bc = BusinessCalendar(Calendar(holidays=country), zone)
        assert holiday.weekday() < 5
        assert bc.is_holiday(holiday)
        assert not bc.is_business_day(holiday)

    def test_christmas_in_france(self) -> None:
        bc = BusinessCalendar(Calendar(holidays="FR"), PARIS)
        # Thursday 24 December + 1 business day: Friday is Christmas, then the weekend.
        assert bc.add_business_days(paris(2026, 12, 24, 10), 1) == paris(2026, 12, 28, 10)
        assert bc.add_business_days(paris(2026, 12, 24, 10), 2) == paris(2026, 12, 29, 10)

    def test_labour_day_in_france(self) -> None:
        bc = BusinessCalendar(Calendar(holidays="FR"), PARIS)
        assert bc.add_business_days(paris(2026, 4, 30, 9), 1) == paris(2026, 5, 4, 9)

    def test_romania_end_of_november(self) -> None:
        bc = BusinessCalendar(Calendar(holidays="RO"), BUCHAREST)
        start = datetime(2026, 11, 27, 9, tzinfo=BUCHAREST)  # Friday
        assert bc.add_business_days(start, 1) == datetime(2026, 12, 2, 9, tzinfo=BUCHAREST)

    def test_italy_immaculate_conception(self) -> None:
        bc = BusinessCalendar(Calendar(holidays="IT"), ROME)
        start = datetime(2026, 12, 4, 9, tzinfo=ROME)  # Friday
        assert bc.add_business_days(start, 2) == datetime(2026, 12, 9, 9, tzinfo=ROME)

    def test_a_subdivision_adds_its_own_holidays(self) -> None:
        national = BusinessCalendar(Calendar(holidays="FR"), PARIS)
        moselle = BusinessCalendar(Calendar(holidays="FR", holiday_subdivision="57"), PARIS)
        assert national.is_business_day(date(2026, 4, 3))  # Good Friday
        assert not moselle.is_business_day(date(2026, 4, 3))

    def test_extra_holidays_and_custom_weekdays(self) -> None:
        cal = Calendar(
            business_days=["mon", "tue", "wed", "thu", "fri", "sat"],
            extra_holidays=[date(2026, 8, 14)],
        )
        bc = BusinessCalendar(cal, PARIS)
        assert bc.is_business_day(date(2026, 8, 15))  # a Saturday, no country given
        assert not bc.is_business_day(date(2026, 8, 14))
        assert not bc.is_business_day(date(2026, 8, 16))  # Sunday
        assert bc.add_business_days(paris(2026, 8, 13, 9), 1) == paris(2026, 8, 15, 9)

    def test_holidays_are_read_for_each_year(self) -> None:
        bc = BusinessCalendar(Calendar(holidays="FR"), PARIS)
        assert not bc.is_business_day(date(2027, 1, 1))
        assert bc.add_business_days(paris(2026, 12, 31, 9), 1) == paris(2027, 1, 4, 9)


class TestDaysOff:
    bc = BusinessCalendar(Calendar(holidays="FR"), PARIS)

    def test_zero_business_days_from_a_day_off_is_the_next_business_day(self) -> None:
        assert self.bc.add_business_days(paris(2026, 11, 21, 15), 0) == paris(2026, 11, 23, 15)

    def test_zero_business_days_from_a_business_day_changes_nothing(self) -> None:
        start = paris(2026, 11, 25, 15, 42, 7)
        assert self.bc.add_business_days(start, 0) == start

    def test_one_business_day_from_saturday_is_monday(self) -> None:
        assert self.bc.add_business_days(paris(2026, 11, 21, 15), 1) == paris(2026, 11, 23, 15)
        assert self.bc.add_business_days(paris(2026, 11, 20, 15), 1) == paris(2026, 11, 23, 15)

    def test_negative_days_are_refused(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            self.bc.add_business_days(paris(2026, 11, 20, 15), -1)

    def test_next_business_moment(self) -> None:
        assert self.bc.next_business_moment(paris(2026, 12, 25, 11)) == paris(2026, 12, 28, 11)
        tuesday = paris(2026, 12, 29, 11)
        assert self.bc.next_business_moment(tuesday) == tuesday
        assert self.bc.next_business_moment(tuesday).tzinfo is UTC

    def test_naive_datetimes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            self.bc.next_business_moment(datetime(2026, 12, 25, 11))


class TestQuietHours:
    night = BusinessCalendar(Calendar(quiet_hours=QuietHours(start="20:00", end="08:00")), PARIS)

    @pytest.mark.parametrize(
        ("at", "expected"),
        [
            (paris(2026, 11, 23, 23, 10), paris(2026, 11, 24, 8)),
            (paris(2026, 11, 23, 20, 0), paris(2026, 11, 24, 8)),  # the start is quiet
            (paris(2026, 11, 24, 0, 0), paris(2026, 11, 24, 8)),
            (paris(2026, 11, 24, 6, 0), paris(2026, 11, 24, 8)),
            (paris(2026, 11, 24, 7, 59, 59), paris(2026, 11, 24, 8)),
            (paris(2026, 11, 24, 8, 0), paris(2026, 11, 24, 8)),  # the end is not
            (paris(2026, 11, 24, 12, 0), paris(2026, 11, 24, 12)),
            (paris(2026, 11, 24, 19, 59), paris(2026, 11, 24, 19, 59)),
        ],
    )
    def test_spanning_midnight(self, at: datetime, expected: datetime) -> None:
        assert self.night.out_of_quiet_hours(at) == expected

    def test_within_one_day(self) -> None:
        lunch = BusinessCalendar(
            Calendar(quiet_hours=QuietHours(start="12:00", end="14:00")), PARIS
        )
        assert lunch.out_of_quiet_hours(paris(2026, 11, 24, 12, 30)) == paris(2026, 11, 24, 14)
        assert lunch.out_of_quiet_hours(paris(2026, 11, 24, 23)) == paris(2026, 11, 24, 23)

    def test_equal_start_and_end_mean_none(self) -> None:
        none = BusinessCalendar(Calendar(quiet_hours=QuietHours(start="08:00", end="08:00")), PARIS)
        assert none.quiet_hours is None
        assert none.out_of_quiet_hours(paris(2026, 11, 24, 3)) == paris(2026, 11, 24, 3)

    def test_quiet_hours_first_then_business_days(self) -> None:
        cal = Calendar(holidays="FR", quiet_hours=QuietHours(start="20:00", end="08:00"))
        bc = BusinessCalendar(cal, PARIS)
        friday_night = paris(2026, 11, 27, 21)
        assert bc.settle(friday_night, business_days=True) == paris(2026, 11, 30, 8)
        assert bc.settle(friday_night) == paris(2026, 11, 28, 8)


class TestProblems:
    def test_a_good_calendar_has_none(self) -> None:
        assert calendar_problems(Calendar(holidays="RO")) == []
        assert calendar_problems(Calendar(holidays="FR", holiday_subdivision="57")) == []

    def test_a_country_is_refused_exactly_when_the_holidays_package_refuses_it(self) -> None:
        # The check reads the package's list of names instead of computing a year of holidays
        # (which loads every country): the same answer, in the same words, for every code.
        for code in map("".join, product(ascii_uppercase, repeat=2)):
            try:
                holidays.country_holidays(code, years=2000)
                refusal = []
            except NotImplementedError as exc:
                refusal = [str(exc)]
            assert [p.message for p in calendar_problems(Calendar(holidays=code))] == refusal

    def test_the_countries_known_without_the_package_are_all_known_by_it(self) -> None:
        known = {code for names in COUNTRIES.values() for code in names}
        assert KNOWN_COUNTRIES.issubset(known)
        assert {"FR", "RO", "IT", "DE", "US", "UK"} <= KNOWN_COUNTRIES

    @pytest.mark.parametrize(
        ("calendar", "path"),
        [
            (Calendar(holidays="XX"), "calendar.holidays"),
            (Calendar(holidays="XX", holiday_subdivision="57"), "calendar.holidays"),
            (Calendar(holidays="FR", holiday_subdivision="ZZ"), "calendar.holiday_subdivision"),
            (Calendar(holiday_subdivision="57"), "calendar.holiday_subdivision"),
            (Calendar(business_days=[]), "calendar.business_days"),
        ],
    )
    def test_bad_calendars_are_reported_with_their_place(
        self, calendar: Calendar, path: str
    ) -> None:
        problems = calendar_problems(calendar)
        assert [p.path for p in problems] == [path]
        with pytest.raises(InvalidInputError, match="calendar"):
            BusinessCalendar(calendar, PARIS)
