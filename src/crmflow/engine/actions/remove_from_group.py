"""remove_from_group: the record leaves a named list of records."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.actions.add_to_group import check_group_name
from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import Kind
from crmflow.engine.definition.action_base import ActionBase

__all__ = ["KIND", "RemoveFromGroupAction"]


class RemoveFromGroupAction(ActionBase):
    type: Literal["remove_from_group"]
    group: str


def run(action: RemoveFromGroupAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import RemoveFromGroup  # noqa: PLC0415 - runtime only

    command = RemoveFromGroup(
        **ctx.ids(index, action.key), group=ctx.render(action.group, field="group")
    )
    return ActionResult((command,), command.describe())


KIND = Kind(RemoveFromGroupAction, check_group_name, run)
