"""An action step: its active actions run in order, each against the record as the ones
before it left it (an update_record then a history entry sees the new value).

A step with a create_task that has `wait: true` holds the record (WaitKind.TASK) until the tasks
its run made are done: the services then give it a TaskDone, and it goes on as it would have at
once without the wait."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext
from crmflow.engine.actions.create_task import CreateTaskAction
from crmflow.engine.actions.registry import run_action
from crmflow.engine.commands import CreateTask
from crmflow.engine.definition import ActionStep
from crmflow.engine.runtime import (
    ActionLog,
    ActionStatus,
    EnrollmentStatus,
    StepStatus,
    TaskDone,
    WaitKind,
)
from crmflow.engine.steps.base import End, Go, Hold, StepResult, StepRun
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["start", "task_done"]

# An action's outcome, looked up once here rather than on the enum for every action run.
_DONE, _FAILED, _SKIPPED = ActionStatus.DONE, ActionStatus.FAILED, ActionStatus.SKIPPED
_ONWARD = Go()  # the step's `next`, else the following step (one value for all, never changed)


def start(step: ActionStep, run: StepRun) -> StepResult:
    scope = run.scope
    # Made for each step, not kept on `run` for the next: it refers to `run` (`describe_step`),
    # and the cycle would keep every record's call alive until the collector's next pass.
    ctx = ActionContext(
        scope=scope,
        step=step,
        describe_step=run.step_vars,
        enrollment_id=run.enrollment_id,
        step_run=run.run_number,
        calendar=run.calendar,
        record_type=run.record_type,
    )
    logs: list[ActionLog] = []
    failed = 0
    end_reason: str | None = None
    awaited: list[CreateTask] = []  # the tasks of a create_task with `wait: true`
    for index, action in step.run_order:
        if not action.active:
            logs.append(
                ActionLog(index, action.key, action.type, _SKIPPED, "the action is inactive")
            )
            continue
        ctx.action_index = index
        outer = scope.start_action()
        try:
            result = run_action(action, index, ctx)
        except EvaluationError as exc:
            logs.append(ActionLog(index, action.key, action.type, _FAILED, str(exc)))
            failed += 1
            continue
        finally:
            scope.end_action(outer)
        run.commands.extend(result.commands)
        # `type(...) is`: an isinstance check against a pydantic model's class goes through
        # ABCMeta (a fifth of a microsecond, for every action run).
        if type(action) is CreateTaskAction and action.wait:
            awaited += [c for c in result.commands if isinstance(c, CreateTask)]
        if result.record_updates:
            scope.record = scope.record.with_values(result.record_updates, at=run.now)
        if result.end_reason is not None and end_reason is None:
            end_reason = result.end_reason
        logs.append(ActionLog(index, action.key, action.type, _DONE, result.detail))
    if end_reason is None and awaited:
        hold = _hold(awaited)
        reason = hold.description + (f"; {failed} of {len(logs)} actions failed" if failed else "")
        run.log(step, StepStatus.WAITING, reason, tuple(logs))
        return hold
    if failed:
        reason = f"{failed} of {len(logs)} actions failed"
        run.log(step, StepStatus.FAILED, reason, tuple(logs))
    else:
        run.log(step, StepStatus.DONE, "" if logs else "no actions", tuple(logs))
    if end_reason is not None:
        return End(EnrollmentStatus.FINISHED, end_reason)
    return _ONWARD


def _who(task: CreateTask) -> str:
    return f"group:{task.assignee.ref}" if task.assignee.kind == "group" else str(task.assignee.ref)


def _hold(awaited: list[CreateTask]) -> Hold:
    """The record held until the tasks `awaited` are done."""
    if len(awaited) == 1:
        task = awaited[0]
        description = f"waiting for the task {task.title!r} to be done"
        return Hold(WaitKind.TASK, None, description, asked_of=_who(task))
    description = f"waiting for {len(awaited)} tasks to be done"
    return Hold(WaitKind.TASK, None, description)


def task_done(step: ActionStep, run: StepRun, event: TaskDone) -> StepResult:
    """The tasks `step` waited for are done: it goes on (its `next`, else the following step)."""
    what = f"task {event.task!r}" if event.task else "the tasks"
    run.log(step, StepStatus.DONE, f"{what} done by {event.by}")
    return Go()
