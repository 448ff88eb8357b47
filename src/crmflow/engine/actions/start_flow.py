"""start_flow: a follow-up flow, started when this step ends (or a delay after), on this record
or on one its reference field names (seed 004)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.common import Duration
from crmflow.engine.recordtypes import FieldType
from crmflow.errors import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "StartFlowAction"]


class StartFlowAction(ActionBase):
    """Starts a follow-up flow when this step ends, or `delay` after (seed 004).

    `record_field` names a reference field: the follow-up then runs on the referenced record.
    """

    type: Literal["start_flow"]
    flow: str
    delay: Duration | None = None
    record_field: str | None = None


def check(checker: ActionChecker, path: str, action: StartFlowAction, step: ActionStep) -> None:
    target_type = checker.flow.record_type
    if action.record_field is not None:
        fdef = checker.check_field(
            f"{path}.record_field", action.record_field, {FieldType.REFERENCE}
        )
        target_type = fdef.reference_type or "" if fdef is not None else ""
    checker.check_flow_key(f"{path}.flow", action.flow, target_type or None)


def run(action: StartFlowAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import StartFlow  # noqa: PLC0415 - runtime only
    from crmflow.engine.steps.clock import after_duration  # noqa: PLC0415 - runtime only

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


KIND = Kind(StartFlowAction, check, run)
