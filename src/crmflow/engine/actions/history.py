"""history: a line in the record's history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "HistoryAction"]


class HistoryAction(ActionBase):
    type: Literal["history"]
    message: str


def check(checker: ActionChecker, path: str, action: HistoryAction, step: ActionStep) -> None:
    checker.check_text(f"{path}.message", action.message)


def run(action: HistoryAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import WriteHistory  # noqa: PLC0415 - runtime only

    command = WriteHistory(
        **ctx.ids(index, action.key), message=ctx.render(action.message, field="message")
    )
    return ActionResult((command,), command.describe())


KIND = Kind(HistoryAction, check, run)
