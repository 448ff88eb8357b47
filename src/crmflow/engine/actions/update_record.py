"""update_record: new values for fields of the flow's record, each checked against its field."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase, FieldValues

if TYPE_CHECKING:
    from crmflow.engine.commands import UpdateRecord
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "UpdateRecordAction"]


class UpdateRecordAction(ActionBase):
    type: Literal["update_record"]
    values: FieldValues = Field(min_length=1)


def check(checker: ActionChecker, path: str, action: UpdateRecordAction, step: ActionStep) -> None:
    checker.check_values(f"{path}.values", action.values, checker.record_type)


def run(action: UpdateRecordAction, index: int, ctx: ActionContext) -> ActionResult:
    values = ctx.values(action.values)
    command = _update_record()(**ctx.ids(index, action.key), values=values)
    return ActionResult((command,), command.describe(), record_updates=values)


@cache
def _update_record() -> type[UpdateRecord]:
    """The command's class, imported at the first run, not with the module (see kind.py)."""
    from crmflow.engine.commands import UpdateRecord  # noqa: PLC0415 - runtime only

    return UpdateRecord


KIND = Kind(UpdateRecordAction, check, run)
