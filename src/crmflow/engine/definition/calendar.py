"""The flow's calendar: which days are business days, which are holidays, and the quiet hours."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field

from crmflow.engine.definition.common import Definition, TimeOfDay, Weekday

__all__ = ["Calendar", "QuietHours"]


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class QuietHours(Definition):
    """No step starts between `start` and `end` (local time): a step due then waits for `end`.

    `end` before `start` spans midnight (22:00 -> 07:00).
    """

    start: TimeOfDay
    end: TimeOfDay


class Calendar(Definition):
    business_days: list[Weekday] = Field(default_factory=_weekdays)
    # An ISO 3166 country code understood by the `holidays` package (e.g. FR, RO, IT).
    holidays: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    holiday_subdivision: str | None = None
    extra_holidays: list[Annotated[date, Field(strict=False)]] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
