"""What makes a record enter a flow: one model per trigger `type`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from crmflow.engine.definition.common import Definition, Key, TimeOfDay, Weekday

__all__ = [
    "DateReachedTrigger",
    "FieldChangedTrigger",
    "FollowUpTrigger",
    "ManualTrigger",
    "RecordCreatedTrigger",
    "RecordDeletedTrigger",
    "RecordUpdatedTrigger",
    "ScheduleTrigger",
    "StartListTrigger",
    "StatusChangedTrigger",
    "Trigger",
    "WebhookTrigger",
]


class RecordCreatedTrigger(Definition):
    type: Literal["record_created"]


class RecordUpdatedTrigger(Definition):
    """Any update, or only updates touching one of `fields` when given."""

    type: Literal["record_updated"]
    fields: list[str] = Field(default_factory=list)


class RecordDeletedTrigger(Definition):
    type: Literal["record_deleted"]


class FieldChangedTrigger(Definition):
    """`field` changed; `from` / `to` narrow it to one old / new value (absent = any)."""

    type: Literal["field_changed"]
    field: str
    from_: Any = Field(default=None, alias="from")
    to: Any = None


class StatusChangedTrigger(Definition):
    """The record's `status` field changed (the record type must have one)."""

    type: Literal["status_changed"]
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class DateReachedTrigger(Definition):
    """Fires `days` before or after the date in `field` (a birthday with `ignore_year`)."""

    type: Literal["date_reached"]
    field: str
    days: Annotated[int, Field(ge=0, le=3650)] = 0
    direction: Literal["before", "after"] = "after"
    time: TimeOfDay | None = None
    ignore_year: bool = False


class ScheduleTrigger(Definition):
    """Every day at `time` (only on `weekdays` when given), the records of a saved query enter."""

    type: Literal["schedule"]
    time: TimeOfDay
    query: str
    weekdays: list[Weekday] = Field(default_factory=list)


class StartListTrigger(Definition):
    """On start, the records of a saved query enter once; the start confirms their number."""

    type: Literal["start_list"]
    query: str


class ManualTrigger(Definition):
    """A person (web page) or a program (API) starts the flow for one record."""

    type: Literal["manual"]


class FollowUpTrigger(Definition):
    """Another flow's `start_flow` action starts this one; `from_flows` limits which may."""

    type: Literal["follow_up"]
    from_flows: list[str] = Field(default_factory=list)


class WebhookTrigger(Definition):
    """An inbound call to /hooks/<key> starts the flow for the record it names."""

    type: Literal["webhook"]
    key: Key
    secret: str | None = None


Trigger = Annotated[
    RecordCreatedTrigger
    | RecordUpdatedTrigger
    | RecordDeletedTrigger
    | FieldChangedTrigger
    | StatusChangedTrigger
    | DateReachedTrigger
    | ScheduleTrigger
    | StartListTrigger
    | ManualTrigger
    | FollowUpTrigger
    | WebhookTrigger,
    Field(discriminator="type"),
]
