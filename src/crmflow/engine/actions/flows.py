"""Actions on flows: start a follow-up flow, end this one."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.commands import EndFlow, StartFlow
from crmflow.engine.definition import EndFlowAction, StartFlowAction
from crmflow.engine.steps.clock import after_duration
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["end_flow", "start_flow"]


def start_flow(action: StartFlowAction, index: int, ctx: ActionContext) -> ActionResult:
    record = ctx.scope.record
    record_id = record.id
    if action.record_field is not None:
        target = record.values.get(action.record_field)
        if not isinstance(target, int) or isinstance(target, bool):
            raise EvaluationError(
                f"the record's {action.record_field!r} field does not name a record ({target!r})"
            )
        record_id = target
    at = ctx.now
    if action.delay is not None:
        at = after_duration(
            action.delay,
            ctx.now,
            record=record.values,
            zone=ctx.scope.zone,
            calendar=ctx.scope.flow.calendar,
        )
    command = StartFlow(**ctx.ids(index, action.key), flow=action.flow, record_id=record_id, at=at)
    return ActionResult((command,), command.describe())


def end_flow(action: EndFlowAction, index: int, ctx: ActionContext) -> ActionResult:
    reason = (
        ctx.render(action.reason, field="reason")
        if action.reason
        else "ended by the step's end_flow action"
    )
    command = EndFlow(**ctx.ids(index, action.key), reason=reason)
    return ActionResult((command,), command.describe(), end_reason=reason)
