"""notify: an in-app notification to users, groups and the step's responsible person."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase
from crmflow.errors import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "NotifyAction"]


class NotifyAction(ActionBase):
    """An in-app notification to users and groups (and the step's responsible person)."""

    type: Literal["notify"]
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    responsible: bool = False
    message: str


def check(checker: ActionChecker, path: str, action: NotifyAction, step: ActionStep) -> None:
    checker.check_text(f"{path}.message", action.message)
    for index, user in enumerate(action.users):
        checker.check_user(f"{path}.users[{index}]", user)
        checker.check_member(f"{path}.users[{index}]", user)
    for index, group in enumerate(action.groups):
        checker.check_group(f"{path}.groups[{index}]", group)
        checker.check_group_members(f"{path}.groups[{index}]", group)
    if not (action.users or action.groups or action.responsible):
        checker.add(path, "notify has nobody to tell", "give users, groups or responsible")


def run(action: NotifyAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import Notify  # noqa: PLC0415 - runtime only
    from crmflow.engine.steps.people import resolve_each  # noqa: PLC0415 - runtime only

    users: list[str | int] = list(action.users)
    groups = list(action.groups)
    if action.responsible:
        turn = (ctx.step.key, (ctx.enrollment_id, ctx.step_run))
        for who in resolve_each(
            ctx.step.responsibility, ctx.scope.flow, ctx.scope.record, turn=turn
        ):
            target = groups if who.kind == "group" else users
            if who.ref not in target:
                target.append(who.ref)  # type: ignore[arg-type]
    if not users and not groups:
        raise EvaluationError("nobody to notify: no users, groups or responsible person")
    command = Notify(
        **ctx.ids(index, action.key),
        users=tuple(users),
        groups=tuple(str(g) for g in groups),
        message=ctx.render(action.message, field="message"),
    )
    return ActionResult((command,), command.describe())


KIND = Kind(NotifyAction, check, run)
