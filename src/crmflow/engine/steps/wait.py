"""A wait step: holds the record until `until` holds or one of `fields` changes; at the timeout
it goes to `on_timeout` (absent: onward like any step). A condition that already holds when the
step starts lets the record through at once."""

from __future__ import annotations

from crmflow.engine.definition import WaitStep
from crmflow.engine.runtime import RecordChanged, StepStatus, WaitKind
from crmflow.engine.steps.base import Go, Hold, StepResult, StepRun
from crmflow.engine.steps.clock import after_duration
from crmflow.engine.steps.scope import EvaluationError

__all__ = ["on_change", "on_timeout", "start"]


def _holds(step: WaitStep, run: StepRun) -> tuple[bool, str]:
    if step.until is None:
        return False, ""
    try:
        return run.scope.holds(step.until), ""
    except EvaluationError as exc:
        return False, f" ({exc}: counted as false)"


def _span(step: WaitStep) -> str:
    amount, unit = step.timeout.amount, step.timeout.unit
    noun = unit[:-1] if amount == 1 else unit
    return f"{amount} {'business ' if step.timeout.business_days else ''}{noun}"


def start(step: WaitStep, run: StepRun) -> StepResult:
    holds, note = _holds(step, run)
    if holds:
        run.log(step, StepStatus.DONE, f"{step.until} already holds")
        return Go()
    timeout_at = after_duration(
        step.timeout,
        run.now,
        record=run.scope.record.values,
        zone=run.scope.zone,
        calendar=run.flow.calendar,
    )
    what = []
    if step.until:
        what.append(f"until {step.until}")
    if step.fields:
        what.append(f"a change of {', '.join(step.fields)}")
    then = f"then {step.on_timeout!r}" if step.on_timeout else "then onward"
    description = (
        f"waiting {' or '.join(what) or 'for the timeout'}, at most {_span(step)} ({then})"
    )
    run.log(step, StepStatus.WAITING, description + note)
    return Hold(WaitKind.CONDITION, timeout_at, description, deadline_at=run.deadline(step))


def on_change(step: WaitStep, run: StepRun, change: RecordChanged) -> StepResult | None:
    """Where the record goes after `change`, or None when it keeps waiting."""
    holds, _ = _holds(step, run)
    if holds:
        run.log(step, StepStatus.DONE, f"{step.until} now holds")
        return Go()
    changed = [name for name in step.fields if name in change.fields]
    if changed:
        run.log(step, StepStatus.DONE, f"{', '.join(changed)} changed")
        return Go()
    return None


def on_timeout(step: WaitStep, run: StepRun) -> StepResult:
    where = f"going to {step.on_timeout!r}" if step.on_timeout else "going on"
    run.log(step, StepStatus.DONE, f"nothing happened within {_span(step)}: {where}")
    return Go(step.on_timeout)
