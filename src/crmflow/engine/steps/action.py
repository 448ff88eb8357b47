"""An action step: its active actions run in order, each against the record as the ones
before it left it (an update_record then a history entry sees the new value)."""

from __future__ import annotations

from crmflow.engine.actions.base import ActionContext
from crmflow.engine.actions.registry import run_action
from crmflow.engine.definition import ActionStep
from crmflow.engine.runtime import ActionLog, ActionStatus, EnrollmentStatus, StepStatus
from crmflow.engine.steps.base import End, Go, StepResult, StepRun
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["start"]


def start(step: ActionStep, run: StepRun) -> StepResult:
    ctx = ActionContext(
        scope=run.scope,
        step=step,
        describe_step=lambda: run.step_vars(step),
        enrollment_id=run.enrollment_id,
        step_run=run.run_number,
        calendar=run.calendar,
        record_type=run.record_type,
    )
    logs: list[ActionLog] = []
    end_reason: str | None = None
    for index, action in step.run_order:
        if not action.active:
            logs.append(
                _log(index, action.key, action.type, ActionStatus.SKIPPED, "the action is inactive")
            )
            continue
        ctx.where = f"steps.{step.key}.actions[{index}]"
        try:
            with run.scope.action_budget():
                result = run_action(action, index, ctx)
        except EvaluationError as exc:
            logs.append(_log(index, action.key, action.type, ActionStatus.FAILED, str(exc)))
            continue
        run.commands.extend(result.commands)
        if result.record_updates:
            run.scope.record = run.scope.record.with_values(result.record_updates, at=run.now)
        if result.end_reason is not None and end_reason is None:
            end_reason = result.end_reason
        logs.append(_log(index, action.key, action.type, ActionStatus.DONE, result.detail))
    failed = [entry for entry in logs if entry.status is ActionStatus.FAILED]
    if failed:
        reason = f"{len(failed)} of {len(logs)} actions failed"
        run.log(step, StepStatus.FAILED, reason, tuple(logs))
    else:
        run.log(step, StepStatus.DONE, "" if logs else "no actions", tuple(logs))
    if end_reason is not None:
        return End(EnrollmentStatus.FINISHED, end_reason)
    return Go()


def _log(index: int, key: str | None, kind: str, status: ActionStatus, detail: str) -> ActionLog:
    return ActionLog(index=index, key=key, type=kind, status=status, detail=detail)
