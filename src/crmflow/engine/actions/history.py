"""history: a line in the record's history."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.commands import WriteHistory
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "HistoryAction"]


class HistoryAction(ActionBase):
    type: Literal["history"]
    message: str


def check(checker: ActionChecker, path: str, action: HistoryAction, step: ActionStep) -> None:
    checker.check_text(f"{path}.message", action.message)


def run(action: HistoryAction, index: int, ctx: ActionContext) -> ActionResult:
    command = _write_history()(
        **ctx.ids(index, action.key), message=ctx.render(action.message, field="message")
    )
    return ActionResult((command,), command.describe())


@cache
def _write_history() -> type[WriteHistory]:
    """The command's class, imported at the first run, not with the module (see kind.py)."""
    from crmflow.engine.commands import WriteHistory  # noqa: PLC0415 - runtime only

    return WriteHistory


KIND = Kind(HistoryAction, check, run)
