"""When a step starts, relative to the end of the previous step, a daily time or a record date."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.common import Definition, Duration, DurationUnit, TimeOfDay

__all__ = [
    "AfterTiming",
    "AtTimeTiming",
    "DateTiming",
    "EventTiming",
    "ImmediateTiming",
    "Timing",
]


class ImmediateTiming(Definition):
    type: Literal["immediately"]


class AfterTiming(Definition):
    """`amount` `unit` after the previous step ended (business days skip days off)."""

    type: Literal["after"]
    amount: Annotated[int, Field(ge=0, le=100_000)]
    unit: DurationUnit = "days"
    business_days: bool = False


class AtTimeTiming(Definition):
    """The next `time` (HH:MM) in the flow's zone, or in the IANA zone held by `zone_field`."""

    type: Literal["at_time"]
    time: TimeOfDay
    zone_field: str | None = None
    business_days: bool = False


class DateTiming(Definition):
    """`days` before or after the date or datetime in `field`; recomputed when the field changes."""

    type: Literal["date"]
    field: str
    days: Annotated[int, Field(ge=0, le=3650)] = 0
    direction: Literal["before", "after"] = "after"
    time: TimeOfDay | None = None


class EventTiming(Definition):
    """The step starts when `condition` becomes true or one of `fields` changes, or at `timeout`.

    At the timeout the flow goes to `on_timeout` (a step key) or, when absent, starts the step.
    """

    type: Literal["event"]
    condition: str | None = None
    fields: list[str] = Field(default_factory=list)
    timeout: Duration
    on_timeout: str | None = None


Timing = Annotated[
    ImmediateTiming | AfterTiming | AtTimeTiming | DateTiming | EventTiming,
    Field(discriminator="type"),
]
