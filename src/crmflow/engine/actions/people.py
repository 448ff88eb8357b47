"""Actions for people: a task in someone's list, an in-app notification."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.commands import CreateTask, Notify
from crmflow.engine.definition import CreateTaskAction, NotifyAction
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["create_task", "notify"]


def create_task(action: CreateTaskAction, index: int, ctx: ActionContext) -> ActionResult:
    # The documented default: the action's assignee, else the step's responsibility, else the
    # flow's owner (what `resolve(None, ...)` gives).
    who = action.assignee or ctx.step.responsibility
    assignee = resolve(who, ctx.scope.flow, ctx.scope.record)
    due_at = None
    if action.due_days is not None:
        due_at = ctx.days_later(action.due_days)
    elif ctx.step.deadline is not None:
        # Without its own due date a task is due when its step is (the step's deadline).
        deadline = ctx.step.deadline
        due_at = ctx.days_later(deadline.days, business_days=deadline.business_days)
    command = CreateTask(
        **ctx.ids(index, action.key),
        title=ctx.render(action.title, field="title"),
        description=ctx.render(action.description, field="description"),
        assignee=assignee,
        due_at=due_at,
    )
    return ActionResult((command,), command.describe())


def notify(action: NotifyAction, index: int, ctx: ActionContext) -> ActionResult:
    users: list[str | int] = list(action.users)
    groups = list(action.groups)
    if action.responsible:
        who = resolve(ctx.step.responsibility, ctx.scope.flow, ctx.scope.record)
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
