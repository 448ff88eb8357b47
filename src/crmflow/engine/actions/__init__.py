"""Turning an action definition into commands: one runner per action `type`.

`run_action` never lets an evaluation problem escape: it comes back as an `EvaluationError`
for the step to record as a failed action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crmflow.engine.actions import flows, messaging, people, records
from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.definition import Action

__all__ = ["RUNNERS", "ActionContext", "ActionResult", "run_action"]

RUNNERS: dict[str, Callable[[Any, int, ActionContext], ActionResult]] = {
    "update_record": records.update_record,
    "set_status": records.set_status,
    "create_record": records.create_record,
    "add_to_group": records.add_to_group,
    "remove_from_group": records.remove_from_group,
    "assign_owner": records.assign_owner,
    "history": records.history,
    "run_sql": records.run_sql,
    "create_task": people.create_task,
    "notify": people.notify,
    "send_email": messaging.send_email,
    "send_sms": messaging.send_sms,
    "webhook": messaging.webhook,
    "start_flow": flows.start_flow,
    "end_flow": flows.end_flow,
}


def run_action(action: Action, index: int, ctx: ActionContext) -> ActionResult:
    """The commands of one action; raises EvaluationError when it cannot be carried out."""
    return RUNNERS[action.type](action, index, ctx)
