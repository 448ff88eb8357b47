"""An approval: the responsible person is asked (a task with the step's buttons) and the record
waits until a decision names one of the buttons; it then goes to that button's `goto` (absent:
onward). Who may decide, reminders and email links belong to the services, not the engine."""

from __future__ import annotations

from crmflow.engine.commands import CreateTask
from crmflow.engine.definition import ApprovalStep
from crmflow.engine.runtime import ButtonChoice, DecisionMade, StepStatus, WaitKind
from crmflow.engine.steps.base import Go, Hold, StepResult, StepRun
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["check", "decide", "start"]


def start(step: ApprovalStep, run: StepRun) -> StepResult:
    step_vars = run.step_vars(step)
    buttons = tuple(
        ButtonChoice(key=b.key, label=b.label, comment_required=b.comment_required)
        for b in step.buttons
    )
    labels = " / ".join(b.label for b in step.buttons)
    deadline_at = run.deadline(step)
    notes = ""
    try:
        title = run.scope.render(step.message, step=step_vars) if step.message else ""
    except EvaluationError as exc:
        title, notes = "", f"; the message could not be rendered: {exc}"
    title = title or f"Decide: {step.name or step.key}"
    asked_of: str | None = None
    try:
        assignee = resolve(step.responsibility, run.flow, run.scope.record)
    except EvaluationError as exc:
        # Still hold the record: an administrator can decide for it through the API.
        notes += f"; nobody could be asked ({exc})"
    else:
        asked_of = f"group:{assignee.ref}" if assignee.kind == "group" else str(assignee.ref)
        run.commands.append(
            CreateTask(
                enrollment_id=run.enrollment_id,
                step_key=step.key,
                step_run=run.run_number,
                title=title,
                description=step.name,
                assignee=assignee,
                due_at=deadline_at,
                buttons=tuple((b.key, b.label) for b in step.buttons),
            )
        )
        notes = f" asked of {assignee}" + notes
    description = f"waiting for a decision ({labels})"
    run.log(step, StepStatus.WAITING, description + notes)
    return Hold(
        WaitKind.APPROVAL,
        None,
        description,
        buttons=buttons,
        asked_of=asked_of,
        deadline_at=deadline_at,
    )


def check(step: ApprovalStep, decision: DecisionMade) -> str | None:
    """Why `decision` cannot be taken at `step`, or None when it can."""
    button = next((b for b in step.buttons if b.key == decision.button), None)
    if button is None:
        known = ", ".join(f"{b.key} ({b.label})" for b in step.buttons)
        return f"step {step.key!r} has no button {decision.button!r}; its buttons are {known}"
    if button.comment_required and not decision.comment.strip():
        return f"the button {button.label!r} of step {step.key!r} needs a comment"
    return None


def decide(step: ApprovalStep, run: StepRun, decision: DecisionMade) -> StepResult:
    button = next(b for b in step.buttons if b.key == decision.button)
    target = button.goto or step.next
    where = f"going to {target!r}" if target else "going on"
    comment = f" ({decision.comment.strip()})" if decision.comment.strip() else ""
    run.log(step, StepStatus.DONE, f"{decision.by} pressed {button.label}{comment}: {where}")
    return Go(button.goto)
