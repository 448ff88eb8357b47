"""An approval: the responsible person is asked (a task with the step's buttons, and an email with
a link per button when the step has `email_link`) and the record waits until a decision names one
of the buttons; it then goes to that button's `goto` (absent: onward).

With a `quorum`, a group member's press of the first button is a vote: the record waits until
enough members voted (`Counted`); any other button decides at once. Who may decide, and the
email's signed links, belong to the services, not the engine."""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.engine.commands import AskByEmail, CreateTask
from crmflow.engine.definition import ApprovalStep
from crmflow.engine.runtime import ButtonChoice, DecisionMade, StepStatus, Vote, Waiting, WaitKind
from crmflow.engine.steps.base import Go, Hold, StepResult, StepRun
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["Counted", "check", "decide", "needed_votes", "start"]


@dataclass(frozen=True)
class Counted:
    """A vote was counted and the quorum is not reached: the record keeps waiting, with this."""

    waiting: Waiting


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
        turn = (step.key, (run.enrollment_id, run.run_number))  # a round-robin group's member
        assignee = resolve(step.responsibility, run.flow, run.scope.record, turn=turn)
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
        if step.email_link:
            run.commands.append(
                AskByEmail(
                    enrollment_id=run.enrollment_id,
                    step_key=step.key,
                    step_run=run.run_number,
                    title=title,
                    assignee=assignee,
                    buttons=tuple((b.key, b.label) for b in step.buttons),
                    due_at=deadline_at,
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


def check(step: ApprovalStep, decision: DecisionMade, waiting: Waiting | None) -> str | None:
    """Why `decision` cannot be taken at `step`, or None when it can."""
    button = next((b for b in step.buttons if b.key == decision.button), None)
    if button is None:
        known = ", ".join(f"{b.key} ({b.label})" for b in step.buttons)
        return f"step {step.key!r} has no button {decision.button!r}; its buttons are {known}"
    if button.comment_required and not decision.comment.strip():
        return f"the button {button.label!r} of step {step.key!r} needs a comment"
    earlier = next((v for v in waiting.votes if v.by == decision.by), None) if waiting else None
    if earlier is not None:
        return (
            f"{decision.by} already voted {_label(step, earlier.button)} at step {step.key!r} "
            f"({_tally(step, waiting, decision)}); a vote counts once"
        )
    return None


def needed_votes(step: ApprovalStep, group_size: int) -> int:
    """How many members must press the first button: the step's quorum among `group_size`."""
    if step.quorum == "any":
        return 1
    if step.quorum == "all":
        return max(1, group_size)
    return max(1, min(step.quorum, group_size))


def _label(step: ApprovalStep, key: str) -> str:
    return next((b.label for b in step.buttons if b.key == key), key)


def _tally(step: ApprovalStep, waiting: Waiting | None, decision: DecisionMade) -> str:
    first = step.buttons[0]
    votes = sum(1 for v in waiting.votes if v.button == first.key) if waiting else 0
    needed = needed_votes(step, decision.group_size or 0)
    return f"{votes} of {needed} {first.label} votes needed"


def decide(
    step: ApprovalStep, run: StepRun, decision: DecisionMade, waiting: Waiting | None = None
) -> StepResult | Counted:
    button = next(b for b in step.buttons if b.key == decision.button)
    comment = f" ({decision.comment.strip()})" if decision.comment.strip() else ""
    pressed = f"{decision.by} pressed {button.label}{comment}"
    if decision.group_size is not None and step.quorum != "any" and button is step.buttons[0]:
        vote = Vote(by=decision.by, button=button.key, comment=decision.comment, at=run.now)
        votes = (*(waiting.votes if waiting else ()), vote)
        count = sum(1 for v in votes if v.button == button.key)
        needed = needed_votes(step, decision.group_size)
        if count < needed and waiting is not None:
            run.log(step, StepStatus.WAITING, f"{pressed}: {count} of {needed} votes")
            voters = ", ".join(v.by for v in votes if v.button == button.key)
            base = waiting.description.split(" — ")[0]
            description = f"{base} — {count} of {needed} {button.label} votes ({voters})"
            return Counted(waiting.model_copy(update={"votes": votes, "description": description}))
        pressed += f" ({count} of {needed} votes)"
    target = button.goto or step.next
    where = f"going to {target!r}" if target else "going on"
    run.log(step, StepStatus.DONE, f"{pressed}: {where}")
    return Go(button.goto)
