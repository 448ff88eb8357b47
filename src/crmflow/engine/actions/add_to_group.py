"""add_to_group: the record joins a named list of records (a mailing list, say)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.actions.remove_from_group import RemoveFromGroupAction
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "AddToGroupAction", "check_group_name"]


class AddToGroupAction(ActionBase):
    """Adds the record to a named group of records (a list, e.g. a mailing list)."""

    type: Literal["add_to_group"]
    group: str


def check_group_name(
    checker: ActionChecker,
    path: str,
    action: AddToGroupAction | RemoveFromGroupAction,
    step: ActionStep,
) -> None:
    """The list is named (whether it exists is known only when the step runs: lists are data,
    created and deleted while flows run). remove_from_group checks the same."""
    if not action.group.strip():
        checker.add(f"{path}.group", "the group name is empty")


def run(action: AddToGroupAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import AddToGroup  # noqa: PLC0415 - runtime only

    command = AddToGroup(
        **ctx.ids(index, action.key), group=ctx.render(action.group, field="group")
    )
    return ActionResult((command,), command.describe())


KIND = Kind(AddToGroupAction, check_group_name, run)
