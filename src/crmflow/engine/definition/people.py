"""Who is responsible for a step or a task, and the deadline by which it must be done."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.common import Definition

__all__ = [
    "Deadline",
    "FieldResponsibility",
    "FlowOwnerResponsibility",
    "GroupResponsibility",
    "RecordOwnerResponsibility",
    "Responsibility",
    "UserResponsibility",
]


class FlowOwnerResponsibility(Definition):
    type: Literal["flow_owner"]


class RecordOwnerResponsibility(Definition):
    type: Literal["record_owner"]


class UserResponsibility(Definition):
    type: Literal["user"]
    user: str


class GroupResponsibility(Definition):
    """Anyone in the group may take the task; it shows in each member's task list."""

    type: Literal["group"]
    group: str


class FieldResponsibility(Definition):
    """The user held in a user field of the record (e.g. the requester's `manager`)."""

    type: Literal["field"]
    field: str


Responsibility = Annotated[
    FlowOwnerResponsibility
    | RecordOwnerResponsibility
    | UserResponsibility
    | GroupResponsibility
    | FieldResponsibility,
    Field(discriminator="type"),
]


class Deadline(Definition):
    """Days allowed from the step's start; a late step emails the flow's controller."""

    days: Annotated[int, Field(ge=1, le=3650)]
    business_days: bool = False
    remind_every_days: Annotated[int, Field(ge=1, le=365)] | None = None
    notify_controller: bool = True
