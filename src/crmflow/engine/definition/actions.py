"""What a step does: one model per action `type` (messages are in `messaging`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.common import Duration
from crmflow.engine.definition.messaging import (
    NotifyAction,
    SendEmailAction,
    SendSmsAction,
    WebhookAction,
)
from crmflow.engine.definition.people import Responsibility

__all__ = [
    "Action",
    "AddToGroupAction",
    "AssignOwnerAction",
    "CreateRecordAction",
    "CreateTaskAction",
    "EndFlowAction",
    "HistoryAction",
    "RemoveFromGroupAction",
    "RunSqlAction",
    "SetStatusAction",
    "StartFlowAction",
    "UpdateRecordAction",
]

# A value written to a field: a literal, a template string ("{{ ... }}"), or `{cel: "expr"}`.
FieldValues = dict[str, Any]


class UpdateRecordAction(ActionBase):
    type: Literal["update_record"]
    values: FieldValues = Field(min_length=1)


class SetStatusAction(ActionBase):
    type: Literal["set_status"]
    status: str


class CreateTaskAction(ActionBase):
    """A task in someone's task list; `assignee` defaults to the step's responsibility."""

    type: Literal["create_task"]
    title: str
    description: str = ""
    assignee: Responsibility | None = None
    due_days: Annotated[int, Field(ge=0, le=3650)] | None = None


class CreateRecordAction(ActionBase):
    """A related record; `link_field` on the new record points back at this one.

    `invitation: ics` sends an .ics invitation for an appointment (an event).
    """

    type: Literal["create_record"]
    record_type: str
    values: FieldValues = Field(default_factory=dict)
    link_field: str | None = None
    invitation: Literal["ics"] | None = None


class AddToGroupAction(ActionBase):
    """Adds the record to a named group of records (a list, e.g. a mailing list)."""

    type: Literal["add_to_group"]
    group: str


class RemoveFromGroupAction(ActionBase):
    type: Literal["remove_from_group"]
    group: str


class AssignOwnerAction(ActionBase):
    """A lead distributor: picks the record's new owner among `users` and the `group`'s members."""

    type: Literal["assign_owner"]
    strategy: Literal["round_robin", "weighted", "least_loaded"] = "round_robin"
    users: list[str] = Field(default_factory=list)
    group: str | None = None
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)


class StartFlowAction(ActionBase):
    """Starts a follow-up flow when this step ends, or `delay` after (seed 004).

    `record_field` names a reference field: the follow-up then runs on the referenced record.
    """

    type: Literal["start_flow"]
    flow: str
    delay: Duration | None = None
    record_field: str | None = None


class HistoryAction(ActionBase):
    type: Literal["history"]
    message: str


class EndFlowAction(ActionBase):
    type: Literal["end_flow"]
    reason: str = ""


class RunSqlAction(ActionBase):
    """SQL with named bound parameters (`:name`) only; needs the server's allow-SQL setting."""

    type: Literal["run_sql"]
    sql: Annotated[str, Field(min_length=1, max_length=20_000)]
    params: FieldValues = Field(default_factory=dict)
    timeout_seconds: Annotated[float, Field(gt=0, le=60, strict=False)] = 5.0


Action = Annotated[
    UpdateRecordAction
    | SetStatusAction
    | CreateTaskAction
    | NotifyAction
    | SendEmailAction
    | SendSmsAction
    | WebhookAction
    | CreateRecordAction
    | AddToGroupAction
    | RemoveFromGroupAction
    | AssignOwnerAction
    | StartFlowAction
    | HistoryAction
    | EndFlowAction
    | RunSqlAction,
    Field(discriminator="type"),
]
