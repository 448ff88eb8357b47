"""A decision: the first branch whose `if` holds wins; else `else`; else the step's `next` or
the following step (docs/flows.md). With nowhere to go, the record leaves, and the log says why.

A branch whose condition cannot be evaluated (a missing field, a type error) counts as false and
the log says so, so one broken branch does not stop the record.
"""

from __future__ import annotations

from crmflow.engine.definition import DecisionStep
from crmflow.engine.runtime import EnrollmentStatus, StepStatus
from crmflow.engine.steps.base import End, Go, StepResult, StepRun
from crmflow.engine.steps.scope import BudgetExceededError, EvaluationError

__all__ = ["start"]


def start(step: DecisionStep, run: StepRun) -> StepResult:
    notes: list[str] = []
    for number, branch in enumerate(step.branches, start=1):
        try:
            taken = run.scope.holds(branch.if_)
        except BudgetExceededError as exc:
            where = f"steps.{step.key}.branches[{number - 1}].if"
            notes.append(f"branch {number} counted as false: {exc.at(where)}")
            continue
        except EvaluationError as exc:
            notes.append(f"branch {number} counted as false: {exc}")
            continue
        if taken:
            reason = f"branch {number} holds ({branch.if_}): going to {branch.goto!r}"
            run.log(step, StepStatus.DONE, _with(reason, notes))
            return Go(branch.goto)
    if step.else_ is not None:
        run.log(
            step, StepStatus.DONE, _with(f"no branch holds: else, going to {step.else_!r}", notes)
        )
        return Go(step.else_)
    onward = step.next or run.following(step)
    if onward is not None:
        run.log(step, StepStatus.DONE, _with(f"no branch holds: going on to {onward!r}", notes))
        return Go(onward)
    reason = _with(f"no branch of decision {step.key!r} holds and it has no else", notes)
    run.log(step, StepStatus.DONE, reason)
    return End(EnrollmentStatus.LEFT, reason)


def _with(reason: str, notes: list[str]) -> str:
    return reason + "".join(f"; {note}" for note in notes) if notes else reason
