"""Durations counted the way step timings count them (calendar days, business days, DST-safe)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.definition.calendar import Calendar
from crmflow.engine.definition.common import Duration
from crmflow.engine.definition.timing import AfterTiming
from crmflow.engine.timing import step_due_at

__all__ = ["after", "after_duration"]


def after(
    amount: int,
    unit: str,
    start: datetime,
    *,
    business_days: bool = False,
    record: Mapping[str, Any],
    zone: ZoneInfo,
    calendar: Calendar | None,
) -> datetime:
    """`amount` `unit` after `start`, by the same rules as an `after` timing (see `timing`).

    Wait timeouts, follow-up delays and task due dates use it, so that "3 business days" means
    the same thing everywhere in a flow.
    """
    timing = AfterTiming.model_validate(
        {"type": "after", "amount": amount, "unit": unit, "business_days": business_days}
    )
    due = step_due_at(
        timing, previous_end=start, record=record, flow_zone=zone, calendar=calendar
    ).at
    assert due is not None  # an `after` timing always has an instant
    return due


def after_duration(
    duration: Duration,
    start: datetime,
    *,
    record: Mapping[str, Any],
    zone: ZoneInfo,
    calendar: Calendar | None,
) -> datetime:
    return after(
        duration.amount,
        duration.unit,
        start,
        business_days=duration.business_days,
        record=record,
        zone=zone,
        calendar=calendar,
    )
