"""The `Action` union a step's `actions` list holds: one member per action `type`.

Each model lives in its kind's module, `crmflow.engine.actions.<type>`, beside the kind's checks
and runner (one module per kind). The union is written out (rather than built from
`crmflow.engine.actions.registry`) so that mypy sees each member and `crmflow schema` keeps its
order; tests/unit/test_action_kinds.py checks that it and the registry list the same kinds.
Adding a kind: see "Adding an action kind" in README.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from crmflow.engine.actions.add_to_group import AddToGroupAction
from crmflow.engine.actions.assign_owner import AssignOwnerAction
from crmflow.engine.actions.create_record import CreateRecordAction
from crmflow.engine.actions.create_task import CreateTaskAction
from crmflow.engine.actions.end_flow import EndFlowAction
from crmflow.engine.actions.history import HistoryAction
from crmflow.engine.actions.notify import NotifyAction
from crmflow.engine.actions.remove_from_group import RemoveFromGroupAction
from crmflow.engine.actions.run_sql import RunSqlAction
from crmflow.engine.actions.send_email import SendEmailAction
from crmflow.engine.actions.send_sms import SendSmsAction
from crmflow.engine.actions.set_status import SetStatusAction
from crmflow.engine.actions.start_flow import StartFlowAction
from crmflow.engine.actions.update_record import UpdateRecordAction
from crmflow.engine.actions.webhook import WebhookAction

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
