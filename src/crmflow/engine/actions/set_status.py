"""set_status: a new value for the record's `status` field."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.commands import SetStatus
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "SetStatusAction"]


class SetStatusAction(ActionBase):
    type: Literal["set_status"]
    status: str


def check(checker: ActionChecker, path: str, action: SetStatusAction, step: ActionStep) -> None:
    if checker.check_status_field(path) is not None:
        checker.check_status_value(f"{path}.status", action.status)


def run(action: SetStatusAction, index: int, ctx: ActionContext) -> ActionResult:
    status = ctx.stored("status", ctx.render(action.status, field="status"))
    command = _set_status()(**ctx.ids(index, action.key), status=str(status))
    return ActionResult((command,), command.describe(), record_updates={"status": status})


@cache
def _set_status() -> type[SetStatus]:
    """The command's class, imported at the first run, not with the module (see kind.py)."""
    from crmflow.engine.commands import SetStatus  # noqa: PLC0415 - runtime only

    return SetStatus


KIND = Kind(SetStatusAction, check, run)
