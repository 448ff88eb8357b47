"""Step timings, date triggers, schedules and catch-up helpers, on frozen inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.definition.calendar import Calendar, QuietHours
from crmflow.engine.definition.common import Duration, DurationUnit
from crmflow.engine.definition.timing import (
    AfterTiming,
    AtTimeTiming,
    DateTiming,
    EventTiming,
    ImmediateTiming,
    Timing,
)
from crmflow.engine.definition.triggers import DateReachedTrigger, ScheduleTrigger
from crmflow.engine.timing import (
    DueTime,
    date_trigger_due,
    missed_daily_runs,
    next_daily_at,
    schedule_due,
    shift,
    step_due_at,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
END = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday 11:00 in Paris
FR_NIGHTS = Calendar(holidays="FR", quiet_hours=QuietHours(start="20:00", end="08:00"))


def paris(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=PARIS)


def due(
    timing: Timing | None,
    record: dict[str, Any] | None = None,
    *,
    end: datetime = END,
    calendar: Calendar | None = None,
) -> DueTime:
    return step_due_at(
        timing, previous_end=end, record=record or {}, flow_zone=PARIS, calendar=calendar
    )


class TestNextDailyAt:
    def test_later_today_or_tomorrow(self) -> None:
        assert next_daily_at("14:30", END, PARIS) == paris(2026, 11, 23, 14, 30)
        assert next_daily_at("09:00", END, PARIS) == paris(2026, 11, 24, 9, 0)

    def test_strictly_after(self) -> None:
        at_nine = paris(2026, 11, 23, 9, 0)
        assert next_daily_at("09:00", at_nine, PARIS) == paris(2026, 11, 24, 9, 0)
        assert next_daily_at("09:00", at_nine - timedelta(microseconds=1), PARIS) == at_nine

    def test_returns_utc_and_refuses_bad_input(self) -> None:
        assert next_daily_at("14:30", END, PARIS).tzinfo is UTC
        with pytest.raises(ValueError, match="HH:MM"):
            next_daily_at("9h", END, PARIS)
        with pytest.raises(ValueError, match="aware"):
            next_daily_at("09:00", datetime(2026, 11, 23, 8), PARIS)


class TestStepDueAt:
    def test_immediately(self) -> None:
        assert due(None) == DueTime(END, "immediately")
        assert due(ImmediateTiming(type="immediately")).at == END

    def test_immediately_waits_for_the_end_of_quiet_hours(self) -> None:
        result = due(None, end=paris(2026, 11, 23, 22, 0), calendar=FR_NIGHTS)
        assert result.at == paris(2026, 11, 24, 8, 0)
        assert "quiet hours 20:00-08:00" in result.reason

    @pytest.mark.parametrize(
        ("amount", "unit", "expected"),
        [
            (30, "minutes", END + timedelta(minutes=30)),
            (2, "hours", END + timedelta(hours=2)),
            (3, "days", END + timedelta(days=3)),
            (0, "days", END),
        ],
    )
    def test_after(self, amount: int, unit: DurationUnit, expected: datetime) -> None:
        result = due(AfterTiming(type="after", amount=amount, unit=unit))
        assert result.at == expected
        assert "after the previous step" in result.reason

    def test_after_business_days_skips_christmas_and_the_weekend(self) -> None:
        timing = AfterTiming(type="after", amount=1, unit="days", business_days=True)
        result = due(timing, end=paris(2026, 12, 24, 10), calendar=FR_NIGHTS)
        assert result.at == paris(2026, 12, 28, 10)
        assert result.reason.startswith("1 business day after")

    def test_after_hours_landing_on_a_day_off_moves_to_the_next_business_day(self) -> None:
        timing = AfterTiming(type="after", amount=2, unit="hours", business_days=True)
        result = due(timing, end=paris(2026, 11, 27, 23, 0), calendar=FR_NIGHTS)
        # Saturday 01:00 is quiet -> Saturday 08:00, a day off -> Monday 08:00.
        assert result.at == paris(2026, 11, 30, 8, 0)
        assert "day off" in result.reason

    def test_business_days_are_ignored_without_asking(self) -> None:
        timing = AfterTiming(type="after", amount=1, unit="days")
        assert due(timing, end=paris(2026, 12, 24, 10), calendar=FR_NIGHTS).at == paris(
            2026, 12, 25, 10
        )

    def test_at_time_in_the_flow_zone(self) -> None:
        result = due(AtTimeTiming(type="at_time", time="09:00"))
        assert result.at == paris(2026, 11, 24, 9, 0)
        assert result.reason == "next 09:00 Europe/Paris"

    def test_at_time_in_the_record_zone(self) -> None:
        timing = AtTimeTiming(type="at_time", time="09:00", zone_field="tz")
        result = due(timing, {"tz": "America/New_York"})
        assert result.at == datetime(2026, 11, 23, 9, 0, tzinfo=NEW_YORK)

    @pytest.mark.parametrize("value", [None, "", "Mars/Olympus", "../etc/passwd", 42, "Europe"])
    def test_at_time_with_a_bad_record_zone_uses_the_flow_zone(self, value: object) -> None:
        timing = AtTimeTiming(type="at_time", time="09:00", zone_field="tz")
        result = due(timing, {"tz": value})
        assert result.at == paris(2026, 11, 24, 9, 0)
        assert "not a time zone" in result.reason
        assert "flow's zone" in result.reason

    def test_at_time_on_business_days(self) -> None:
        timing = AtTimeTiming(type="at_time", time="09:00", business_days=True)
        friday_noon = paris(2026, 12, 24, 12, 0)
        assert due(timing, end=friday_noon, calendar=FR_NIGHTS).at == paris(2026, 12, 28, 9)

    def test_date_days_before_an_event_start(self) -> None:
        timing = DateTiming(type="date", field="start", days=7, direction="before")
        result = due(timing, {"start": "2026-12-10"})
        assert result.at == paris(2026, 12, 3, 0, 0)
        assert result.reason == "7 days before start (2026-12-10): 2026-12-03 00:00 Europe/Paris"

    def test_date_at_a_time(self) -> None:
        timing = DateTiming(type="date", field="start", days=1, direction="after", time="09:30")
        assert due(timing, {"start": "2026-12-10"}).at == paris(2026, 12, 11, 9, 30)

    def test_datetime_field_keeps_its_own_time_or_takes_the_given_one(self) -> None:
        record = {"start": "2026-12-10T17:45:00Z"}  # 18:45 in Paris
        before = DateTiming(type="date", field="start", days=2, direction="before")
        assert due(before, record).at == paris(2026, 12, 8, 18, 45)
        at_nine = DateTiming(type="date", field="start", days=2, direction="before", time="09:00")
        assert due(at_nine, record).at == paris(2026, 12, 8, 9, 0)

    @pytest.mark.parametrize("record", [{}, {"start": None}, {"start": ""}, {"start": "  "}])
    def test_a_missing_date_cannot_be_scheduled(self, record: dict[str, Any]) -> None:
        result = due(DateTiming(type="date", field="start"), record)
        assert result.at is None
        assert "no start" in result.reason

    def test_a_value_that_is_not_a_date_cannot_be_scheduled(self) -> None:
        result = due(DateTiming(type="date", field="start"), {"start": "next tuesday"})
        assert result.at is None
        assert "not a usable date" in result.reason

    def test_a_date_at_the_edge_of_the_calendar_cannot_be_scheduled(self) -> None:
        timing = DateTiming(type="date", field="start", days=7, direction="before")
        assert due(timing, {"start": "0001-01-02"}).at is None
        assert reached("0001-01-02", END, days=7, direction="before") is None

    def test_a_date_already_past_is_due_at_once_never_before_the_previous_step(self) -> None:
        timing = DateTiming(type="date", field="start", days=7, direction="before")
        result = due(timing, {"start": "2026-11-25"})
        assert result.at == END
        assert "already past" in result.reason

    def test_a_date_landing_in_quiet_hours_waits(self) -> None:
        timing = DateTiming(type="date", field="start", days=1, direction="before", time="21:00")
        result = due(timing, {"start": "2026-12-10"}, calendar=FR_NIGHTS)
        assert result.at == paris(2026, 12, 10, 8, 0)

    def test_event_gives_the_timeout(self) -> None:
        timing = EventTiming(type="event", fields=["status"], timeout=Duration(amount=2))
        result = due(timing)
        assert result == DueTime(
            END + timedelta(days=2), "waiting for an event, at most 2 days", waits_for_event=True
        )

    def test_event_timeout_in_business_days(self) -> None:
        timeout = Duration(amount=1, unit="days", business_days=True)
        timing = EventTiming(type="event", condition="true", timeout=timeout)
        result = due(timing, end=paris(2026, 12, 24, 10), calendar=FR_NIGHTS)
        assert result.at == paris(2026, 12, 28, 10)
        assert result.waits_for_event

    def test_naive_previous_end_is_refused(self) -> None:
        with pytest.raises(ValueError, match="previous_end"):
            due(None, end=datetime(2026, 11, 23, 10))


def reached(value: str, now: datetime, **kwargs: Any) -> datetime | None:
    trigger = DateReachedTrigger(type="date_reached", field="d", **kwargs)
    return date_trigger_due(trigger, value, now=now, zone=PARIS)


class TestDateTrigger:
    def test_days_before_a_future_date(self) -> None:
        assert reached("2026-12-10", END, days=7, direction="before") == paris(2026, 12, 3)
        assert reached("2026-12-10", END, days=7, direction="before", time="09:15") == paris(
            2026, 12, 3, 9, 15
        )

    def test_past_and_not_recurring_is_none(self) -> None:
        assert reached("2026-11-20", END) is None
        assert reached("2026-11-20", END, days=1, direction="after") is None

    def test_reached_exactly_now_counts(self) -> None:
        now = paris(2026, 11, 24, 0, 0)
        assert reached("2026-11-24", now) == now

    def test_a_datetime_value_keeps_its_time(self) -> None:
        assert reached("2026-12-10T17:45:00Z", END, days=1) == paris(2026, 12, 11, 18, 45)

    @pytest.mark.parametrize("value", ["", " ", "someday"])
    def test_empty_or_unreadable_values_give_none(self, value: str) -> None:
        assert reached(value, END) is None
        assert reached(value, END, ignore_year=True) is None

    def test_birthday_later_this_year(self) -> None:
        assert reached("1980-12-24", END, ignore_year=True) == paris(2026, 12, 24)

    def test_birthday_already_past_this_year_is_next_year(self) -> None:
        assert reached("1980-03-15", END, ignore_year=True, time="09:00") == paris(
            2027, 3, 15, 9, 0
        )

    def test_days_before_a_birthday_early_in_january_falls_in_december(self) -> None:
        assert reached("1980-01-02", END, ignore_year=True, days=5, direction="before") == paris(
            2026, 12, 28
        )

    def test_29_february_falls_on_28_february_in_common_years(self) -> None:
        assert reached("2000-02-29", END, ignore_year=True) == paris(2027, 2, 28)
        after_2027 = paris(2027, 3, 1)
        assert reached("2000-02-29", after_2027, ignore_year=True) == paris(2028, 2, 29)
        assert reached("2000-02-29", END, ignore_year=True, days=1) == paris(2027, 3, 1)

    def test_anniversaries_never_come_before_the_date_itself(self) -> None:
        assert reached("2028-06-01", END, ignore_year=True) == paris(2028, 6, 1)


class TestSchedules:
    def test_every_day(self) -> None:
        trigger = ScheduleTrigger(type="schedule", time="07:00", query="q")
        assert schedule_due(trigger, after=END, zone=PARIS) == paris(2026, 11, 24, 7)

    def test_only_on_some_weekdays(self) -> None:
        trigger = ScheduleTrigger(type="schedule", time="07:00", query="q", weekdays=["mon"])
        assert schedule_due(trigger, after=END, zone=PARIS) == paris(2026, 11, 30, 7)
        monday_early = paris(2026, 11, 23, 6)
        assert schedule_due(trigger, after=monday_early, zone=PARIS) == paris(2026, 11, 23, 7)


class TestCatchUp:
    def test_missed_daily_runs_count_the_half_open_interval(self) -> None:
        start = paris(2026, 11, 23, 9, 0)
        assert missed_daily_runs("09:00", start, start, PARIS) == 0
        assert missed_daily_runs("09:00", start, start + timedelta(days=1), PARIS) == 1
        assert missed_daily_runs("09:00", start, start + timedelta(days=3, hours=-1), PARIS) == 2
        assert missed_daily_runs("09:00", start, start + timedelta(days=365), PARIS) == 365

    def test_shift(self) -> None:
        moved = shift(paris(2026, 11, 23, 9), timedelta(days=2, hours=3))
        assert moved == paris(2026, 11, 25, 12)
        assert moved.tzinfo is UTC
