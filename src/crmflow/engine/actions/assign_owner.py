"""assign_owner: a lead distributor; the store picks the record's new owner among the
candidates (round robin, weighted or least loaded), with its own counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "AssignOwnerAction"]


class AssignOwnerAction(ActionBase):
    """A lead distributor: picks the record's new owner among `users` and the `group`'s members."""

    type: Literal["assign_owner"]
    strategy: Literal["round_robin", "weighted", "least_loaded"] = "round_robin"
    users: list[str] = Field(default_factory=list)
    group: str | None = None
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)


def check(checker: ActionChecker, path: str, action: AssignOwnerAction, step: ActionStep) -> None:
    for index, user in enumerate(action.users):
        checker.check_user(f"{path}.users[{index}]", user)
    if action.group is not None:
        checker.check_group(f"{path}.group", action.group)
    if not action.users and action.group is None:
        checker.add(path, "assign_owner needs users or a group to choose from")
    if action.strategy == "weighted":
        if not action.weights:
            checker.add(f"{path}.weights", "the weighted strategy needs weights", "alice: 2")
        for name in action.weights:
            if action.users and name not in action.users:
                checker.add(f"{path}.weights.{name}", f"{name!r} is not in users")
        for index, user in enumerate(action.users):
            if action.weights and user not in action.weights:
                checker.add(f"{path}.users[{index}]", f"{user!r} has no weight")
    elif action.weights:
        checker.add(f"{path}.weights", "weights only apply to strategy: weighted")


def run(action: AssignOwnerAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import AssignOwner  # noqa: PLC0415 - runtime only

    command = AssignOwner(
        **ctx.ids(index, action.key),
        strategy=action.strategy,
        users=tuple(action.users),
        group=action.group,
        weights=dict(action.weights),
    )
    return ActionResult((command,), command.describe())


KIND = Kind(AssignOwnerAction, check, run)
