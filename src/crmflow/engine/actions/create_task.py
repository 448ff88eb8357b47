"""create_task: a task in a person's (or a group's) task list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.common import Definition
from crmflow.engine.definition.people import Responsibility
from crmflow.engine.recordtypes import FieldType
from crmflow.engine.timing import field_date_due

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "CreateTaskAction", "TaskDue"]

_DATES = frozenset({FieldType.DATE, FieldType.DATETIME})


class TaskDue(Definition):
    """Due `offset_days` days after (before, when negative) the date in the record's `field`;
    the due time moves when that date changes."""

    field: str
    offset_days: Annotated[int, Field(ge=-3650, le=3650)] = 0


class CreateTaskAction(ActionBase):
    """A task in someone's task list; `assignee` defaults to the step's responsibility."""

    type: Literal["create_task"]
    title: str
    description: str = ""
    assignee: Responsibility | None = None
    due_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    due: TaskDue | None = None  # from a date of the record, instead of `due_days`
    # The step holds until the tasks its run made are done (docs/people.md), instead of going
    # on at once.
    wait: bool = False


def check(checker: ActionChecker, path: str, action: CreateTaskAction, step: ActionStep) -> None:
    checker.check_text(f"{path}.title", action.title)
    checker.check_text(f"{path}.description", action.description)
    if action.assignee is not None:
        checker.check_responsibility(f"{path}.assignee", action.assignee)
    if action.due is not None:
        if action.due_days is not None:
            checker.add(
                f"{path}.due",
                "a task is due either `due_days` after it is made or from a date (`due`)",
                "keep one of due_days and due",
            )
        checker.check_field(f"{path}.due.field", action.due.field, _DATES)


def run(action: CreateTaskAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import CreateTask  # noqa: PLC0415 - runtime only
    from crmflow.engine.steps.people import resolve_each  # noqa: PLC0415 - runtime only

    # The documented default: the action's assignee, else the step's responsibility, else the
    # flow's owner (what `resolve_each(None, ...)` gives).
    who = action.assignee or ctx.step.responsibility
    turn = (ctx.step.key, (ctx.enrollment_id, ctx.step_run))
    # A group with `mode: all`: a task for each member.
    assignees = resolve_each(who, ctx.scope.flow, ctx.scope.record, turn=turn)
    due_at = None
    if action.due is not None:
        raw = ctx.scope.record.values.get(action.due.field)
        due_at = field_date_due(raw, action.due.offset_days, ctx.scope.zone)
    elif action.due_days is not None:
        due_at = ctx.days_later(action.due_days)
    elif ctx.step.deadline is not None:
        # Without its own due date a task is due when its step is (the step's deadline).
        deadline = ctx.step.deadline
        due_at = ctx.days_later(deadline.days, business_days=deadline.business_days)
    title = ctx.render(action.title, field="title")
    description = ctx.render(action.description, field="description")
    commands = tuple(
        CreateTask(
            **ctx.ids(index, action.key),
            title=title,
            description=description,
            assignee=assignee,
            due_at=due_at,
            due_field=action.due.field if action.due is not None else None,
            due_offset_days=action.due.offset_days if action.due is not None else 0,
        )
        for assignee in assignees
    )
    return ActionResult(commands, "; ".join(c.describe() for c in commands))


KIND = Kind(CreateTaskAction, check, run)
