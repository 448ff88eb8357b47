"""The step transition function: (flow, enrollment state, record, now, event) -> outcome.

Pure: no I/O, and no clock but `time.monotonic()` for the time budgets (`now` is an argument).
The worker calls `advance` for every enrollment that is due or woken by an event and writes the
outcome (new state, commands, step-run log) in one transaction; `simulate` calls the same
function in virtual time. This module is that public API; the loop that runs a record's due
steps within one call is `crmflow.engine.step_loop`, and what a resume does to a paused or frozen
flow's records is `crmflow.engine.thaw` (`catch_up` and `resume_recheck`, re-exported here).

The rules, each one a promise to the people who run flows:

- A step never runs before it is due: a timer that fires early changes nothing (`not_due`).
- Steps run in order, or along `next`, branches, buttons and timeouts. Successive steps that are
  due run within one call until something waits, with at most `MAX_STEPS_PER_CALL` of them in a
  row: a flow that loops forever through `goto`s is cancelled, and the reason says so.
- One call runs for a bounded time (`EvaluationLimits.call_time_limit_ms`: the caller holds a
  write transaction meanwhile). Once it has passed, the next due step does not start: the record
  stays on it, due at `now`, and the next batch runs it (once: nothing of it ran yet).
- An inactive step, or one whose condition is false, is skipped, and the log says which.
- A record that meets the flow's goal leaves wherever it is.
- Waits, event timings and approvals hold the record until their event, decision or timeout.
- A step's timing is recomputed when the record changes (a date moved), never to run early.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from crmflow.engine.budget import DEFAULT_LIMITS, EvaluationLimits
from crmflow.engine.definition import ApprovalStep, EventTiming, FlowDefinition
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    DecisionMade,
    EnrollmentState,
    EnrollmentStatus,
    Event,
    RecordChanged,
    RecordSnapshot,
    TaskDone,
    TimerFired,
    WaitKind,
)
from crmflow.engine.step_loop import MAX_STEPS_PER_CALL, Call, Outcome, timed_by_record
from crmflow.engine.steps import approval
from crmflow.engine.thaw import catch_up, resume_recheck

__all__ = [
    "MAX_STEPS_PER_CALL",
    "Outcome",
    "advance",
    "cancel",
    "catch_up",
    "check_decision",
    "check_task_done",
    "decision_condition_refusal",
    "enter",
    "hears_changes",
    "move_to",
    "restart",
    "resume_recheck",
    "sequence_progress",
]

_TIMER = TimerFired()  # a value: one for every timer call


def hears_changes(flow: FlowDefinition) -> bool:
    """Whether a change of its record (other than its deletion, which ends it in any flow) can
    move a record inside `flow`: the flow has a goal, a wait step, or a step timed by an event or
    by the record (see `step_loop.Call.on_change`: a delay or a daily time in the flow's zone
    gives the same time again, and an approval waits for its button whatever the record does)."""
    if flow.goal:
        return True
    return any(
        step.type == "wait" or isinstance(step.timing, EventTiming) or timed_by_record(step.timing)
        for step in flow.steps
    )


def enter(
    flow: FlowDefinition,
    *,
    enrollment_id: int,
    flow_version: int,
    record: RecordSnapshot,
    now: datetime,
    zone: ZoneInfo,
    change: RecordChanged | None = None,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """A record enters the flow at `now`: its first steps run if they are due at once.

    Whether it may enter (triggers, entry condition, re-entry policy) is decided before.
    `limits` are the budgets of each template and condition (the settings' time limit).
    """
    state = EnrollmentState.entering(
        enrollment_id=enrollment_id,
        flow_key=flow.key,
        flow_version=flow_version,
        record_id=record.id,
        entered_at=now,
    )
    call = Call(
        flow,
        state,
        record,
        now=now,
        zone=zone,
        change=change,
        record_type=record_type,
        limits=limits,
    )
    if not call.goal_reached():
        call.move(flow.ordered_steps()[0].key)
    return call.outcome()


def check_decision(flow: FlowDefinition, state: EnrollmentState, event: DecisionMade) -> str | None:
    """Why a decision cannot be taken now (a message for the person), or None when it can."""
    if state.is_over:
        return f"the record is no longer in the flow ({state.status.value}: {state.end_reason})"
    if state.waiting is None or state.waiting.kind is not WaitKind.APPROVAL:
        return f"the record is not waiting for a decision (it is at step {state.step_key!r})"
    if event.step_key != state.step_key:
        return (
            f"the record is not at step {event.step_key!r}; "
            f"it waits for a decision at step {state.step_key!r}"
        )
    step = flow.step(event.step_key)
    if not isinstance(step, ApprovalStep):
        return f"step {event.step_key!r} is not an approval step in this version of the flow"
    return approval.check(step, event, state.waiting)


def decision_condition_refusal(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    *,
    now: datetime,
    zone: ZoneInfo,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> str | None:
    """Why the buttons of the approval step the record waits at do not count now (its
    condition is false for `record`), or None: what `advance` refuses a decision for, asked
    beforehand, so that a page shows the reason instead of the buttons."""
    step = flow.step(state.step_key) if state.step_key else None
    if not isinstance(step, ApprovalStep) or not step.condition:
        return None
    call = Call(
        flow, state, record, now=now, zone=zone, change=None, record_type=record_type, limits=limits
    )
    return call.decision_refusal(step)


def check_task_done(state: EnrollmentState, event: TaskDone) -> str | None:
    """Why the record cannot go on for `event` (it does not wait for tasks at that step), or
    None when it can."""
    if state.is_over:
        return f"the record is no longer in the flow ({state.status.value}: {state.end_reason})"
    waiting = state.waiting
    if waiting is None or waiting.kind is not WaitKind.TASK or state.step_key != event.step_key:
        return f"the record does not wait for tasks at step {event.step_key!r}"
    return None


def advance(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    *,
    now: datetime,
    zone: ZoneInfo,
    event: Event | None = None,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """Move the enrollment on at `now` in answer to `event` (None: a timer).

    `record` is the record as it is now (after the change, for a RecordChanged). `zone` is the
    flow's time zone. With `record_type`, values written by actions are checked and converted
    the way the store keeps them, and a value that does not fit fails its action.
    """
    event = event or _TIMER
    if isinstance(event, DecisionMade | TaskDone):
        problem = (
            check_decision(flow, state, event)
            if isinstance(event, DecisionMade)
            else check_task_done(state, event)
        )
        if problem is not None:
            return Outcome(state=state, record=record, refused=problem)
    if state.is_over:
        return Outcome(state=state, record=record)
    if isinstance(event, TimerFired) and (state.due_at is None or now < state.due_at):
        return Outcome(state=state, record=record, not_due=True)
    change = event if isinstance(event, RecordChanged) else None
    call = Call(
        flow,
        state,
        record,
        now=now,
        zone=zone,
        change=change,
        record_type=record_type,
        limits=limits,
    )
    step = flow.step(state.step_key) if state.step_key else None
    if isinstance(event, DecisionMade) and isinstance(step, ApprovalStep):
        refusal = call.decision_refusal(step)
        if refusal is not None:
            return Outcome(state=state, record=record, refused=refusal)
    if step is None:
        call.end(
            EnrollmentStatus.CANCELLED,
            f"step {state.step_key!r} is not in version {state.flow_version} of the flow",
        )
    elif isinstance(event, RecordChanged) and event.change == "deleted":
        call.end(EnrollmentStatus.LEFT, "the record was deleted")
    elif not call.goal_reached():
        call.handle(step, event)
    return call.outcome()


def move_to(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    step_key: str,
    *,
    now: datetime,
    zone: ZoneInfo,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """Put the record at `step_key` as if the previous step had just ended (a new version's
    step chosen by a person, or a restart); it runs at once when it is due."""
    state = state.model_copy(
        update={
            "status": EnrollmentStatus.ACTIVE,
            "finished_at": None,
            "end_reason": "",
            "steps_in_a_row": 0,  # a person's move starts a new run of steps
        }
    )
    call = Call(
        flow, state, record, now=now, zone=zone, change=None, record_type=record_type, limits=limits
    )
    call.move(step_key)
    return call.outcome()


def restart(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    *,
    now: datetime,
    zone: ZoneInfo,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """Start the record again from the first step (seed 003); the email count starts over."""
    state = state.model_copy(update={"emails_sent": 0})
    first = flow.ordered_steps()[0].key
    return move_to(
        flow, state, record, first, now=now, zone=zone, record_type=record_type, limits=limits
    )


def cancel(state: EnrollmentState, *, now: datetime, reason: str) -> EnrollmentState:
    """The enrollment stopped by a person or by crmflow (loop guard, archive), with the reason."""
    if state.is_over:
        return state
    return state.model_copy(
        update={
            "status": EnrollmentStatus.CANCELLED,
            "finished_at": now,
            "end_reason": reason,
            "due_at": None,
            "waiting": None,
            "current_run": None,
        }
    )


def sequence_progress(flow: FlowDefinition, state: EnrollmentState) -> tuple[int, int]:
    """(emails sent, emails in the flow): "2/5" for an email sequence (seed 003).

    The total counts the active email actions of active steps, one per action.
    """
    total = sum(
        1
        for step in flow.steps
        if step.active and step.type == "action"
        for act in step.actions
        if act.active and act.type == "send_email"
    )
    return state.emails_sent, total
