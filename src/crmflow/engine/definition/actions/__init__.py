"""What a step does: one model per action `type`, each in a module named for its type, and the
`Action` union of them all that a step's `actions` list holds.

Each model lives here, in the definition package, and not beside its checks and runner in
`crmflow.engine.actions.<type>`, because the step models (and so the whole flow document) need
the union while the runners need the running engine, which itself reads the flow document: a
model beside its runner would make the definition import the engine that imports it.

The union is written out (rather than built from `crmflow.engine.actions.registry`) so that mypy
sees each member and `crmflow schema` keeps its order; tests/unit/test_action_kinds.py checks that
it and the registry list the same kinds. Adding a kind: see "Adding an action kind" in README.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from crmflow.engine.definition.actions.add_to_group import AddToGroupAction
from crmflow.engine.definition.actions.assign_owner import AssignOwnerAction
from crmflow.engine.definition.actions.create_record import CreateRecordAction
from crmflow.engine.definition.actions.create_task import CreateTaskAction
from crmflow.engine.definition.actions.end_flow import EndFlowAction
from crmflow.engine.definition.actions.history import HistoryAction
from crmflow.engine.definition.actions.notify import NotifyAction
from crmflow.engine.definition.actions.remove_from_group import RemoveFromGroupAction
from crmflow.engine.definition.actions.run_sql import RunSqlAction
from crmflow.engine.definition.actions.send_email import SendEmailAction
from crmflow.engine.definition.actions.send_sms import SendSmsAction
from crmflow.engine.definition.actions.set_status import SetStatusAction
from crmflow.engine.definition.actions.start_flow import StartFlowAction
from crmflow.engine.definition.actions.update_record import UpdateRecordAction
from crmflow.engine.definition.actions.webhook import WebhookAction

__all__ = [
    "Action",
    "AddToGroupAction",
    "AssignOwnerAction",
    "CreateRecordAction",
    "CreateTaskAction",
    "EndFlowAction",
    "HistoryAction",
    "NotifyAction",
    "RemoveFromGroupAction",
    "RunSqlAction",
    "SendEmailAction",
    "SendSmsAction",
    "SetStatusAction",
    "StartFlowAction",
    "UpdateRecordAction",
    "WebhookAction",
]

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
