"""Who is responsible for a step or a task, and the deadline by which it must be done."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from crmflow.engine.definition.common import Definition

__all__ = [
    "Deadline",
    "Escalation",
    "FieldResponsibility",
    "FlowOwnerResponsibility",
    "GroupResponsibility",
    "ManagerOfResponsibility",
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
    """`mode: any` (the default): one task, in each member's task list, for anyone of them to
    take; `round_robin`: one active member in turn (per flow and step); `all`: each active
    member gets a task of their own (an approval step asks the group, as with `any`)."""

    type: Literal["group"]
    group: str
    mode: Literal["any", "round_robin", "all"] = "any"


class FieldResponsibility(Definition):
    """The user held in a user field of the record (`requester`), or of a related record
    through a reference field (`company.account_manager`)."""

    type: Literal["field"]
    field: str


class ManagerOfResponsibility(Definition):
    """The manager of the user held in `field` (of the record or, dotted, of a related record):
    `{type: manager_of, field: requester}` asks the requester's manager."""

    type: Literal["manager_of"]
    field: str


Responsibility = Annotated[
    FlowOwnerResponsibility
    | RecordOwnerResponsibility
    | UserResponsibility
    | GroupResponsibility
    | FieldResponsibility
    | ManagerOfResponsibility,
    Field(discriminator="type"),
]


class Escalation(Definition):
    """What happens `after_days` calendar days past a deadline, once: the step's task goes `to`
    another person (a responsibility, or a username), or an approval is decided by pressing
    its button `decide` automatically."""

    after_days: Annotated[int, Field(ge=0, le=3650)]
    to: Responsibility | None = None
    decide: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _username(cls, value: object) -> object:
        # `to: bogdan` is short for `to: {type: user, user: bogdan}`.
        return {"type": "user", "user": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_way(self) -> Escalation:
        if (self.to is None) == (self.decide is None):
            raise ValueError(
                "an escalation either reassigns (`to: USER` or a responsibility) or decides "
                "(`decide: BUTTON`, approvals): give exactly one of them"
            )
        return self


class Deadline(Definition):
    """Days allowed from the step's start; a late step emails the flow's controller."""

    days: Annotated[int, Field(ge=1, le=3650)]
    business_days: bool = False
    remind_every_days: Annotated[int, Field(ge=1, le=365)] | None = None
    notify_controller: bool = True
    escalate: Escalation | None = None
