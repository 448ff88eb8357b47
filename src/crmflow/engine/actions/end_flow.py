"""end_flow: the flow ends for the record once this step's actions have run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "EndFlowAction"]


class EndFlowAction(ActionBase):
    type: Literal["end_flow"]
    reason: str = ""


def check(checker: ActionChecker, path: str, action: EndFlowAction, step: ActionStep) -> None:
    checker.check_text(f"{path}.reason", action.reason)


def run(action: EndFlowAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import EndFlow  # noqa: PLC0415 - runtime only

    reason = (
        ctx.render(action.reason, field="reason")
        if action.reason
        else "ended by the step's end_flow action"
    )
    command = EndFlow(**ctx.ids(index, action.key), reason=reason)
    return ActionResult((command,), command.describe(), end_reason=reason)


KIND = Kind(EndFlowAction, check, run)
