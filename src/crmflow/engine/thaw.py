"""What a resume does to an enrollment of a flow that was paused or frozen: pure.

`catch_up` applies the flow's catch-up policy to the time that passed while the flow was paused
(run late, shift delays, skip missed daily times); `resume_recheck` first looks at what a frozen
flow did not hear (the record's changes during the freeze, told as one) the way a running flow
would have, then catches up whatever still waits. `crmflow.services.thaw` calls them for every
record inside a flow that leaves a frozen status; `crmflow.engine.transition` re-exports both.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from crmflow.engine.budget import DEFAULT_LIMITS, EvaluationLimits
from crmflow.engine.definition import AtTimeTiming, CatchUpPolicy, DateTiming, FlowDefinition
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    EnrollmentState,
    EnrollmentStatus,
    RecordChanged,
    RecordSnapshot,
    WaitKind,
)
from crmflow.engine.step_loop import Call, Outcome, timed_by_record
from crmflow.engine.timing import shift, step_due_at

__all__ = ["catch_up", "resume_recheck"]


def catch_up(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    *,
    paused_at: datetime,
    resumed_at: datetime,
    zone: ZoneInfo,
    policy: CatchUpPolicy | None = None,
) -> EnrollmentState:
    """The state as the catch-up policy leaves it when the flow resumes after a pause.

    run_late: unchanged (what fell due runs at once); shift_delays: a delay's due time and the
    deadline move by the pause, but a step waiting for a date of the record keeps that date (a
    reminder "1 day before" an event must not move past the event: if its time passed during
    the pause it runs at once); skip_missed: a daily time that passed during the pause waits for
    its next occurrence after the resume (other steps run late). `policy`: the one the resume
    applies (the flow's current version, which may be newer than `flow`); absent, `flow`'s.
    """
    if state.is_over or state.due_at is None:
        return state
    mode = (policy or flow.catch_up).mode
    step = flow.step(state.step_key) if state.step_key else None
    kind = state.waiting.kind if state.waiting else WaitKind.TIMER
    if mode == "shift_delays":
        by = resumed_at - paused_at
        deadline = shift(state.deadline_at, by) if state.deadline_at is not None else None
        dated = kind is WaitKind.TIMER and step is not None and isinstance(step.timing, DateTiming)
        shifted = state.due_at if dated else shift(state.due_at, by)
        return state.model_copy(update={"due_at": shifted, "deadline_at": deadline})
    if (
        mode == "skip_missed"
        and state.due_at < resumed_at
        and kind is WaitKind.TIMER
        and step is not None
        and isinstance(step.timing, AtTimeTiming)
    ):
        due = step_due_at(
            step.timing,
            previous_end=resumed_at,
            record=record.values,
            flow_zone=zone,
            calendar=flow.calendar,
        )
        return state.model_copy(update={"due_at": due.at})
    return state


def resume_recheck(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    *,
    change: RecordChanged | None,
    paused_at: datetime,
    resumed_at: datetime,
    zone: ZoneInfo,
    policy: CatchUpPolicy | None = None,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome:
    """One enrollment of a flow frozen from `paused_at` to `resumed_at`, as the resume leaves it.

    A frozen flow hears nothing, so what happened to the record meanwhile is looked at now
    (`change`: its changes during the freeze told as one, None when it did not change), as a
    running flow would have: a deleted record leaves; a goal now met leaves; a wait step whose
    condition now holds or whose field changed, or a step timed by an event that came, goes on
    (the next steps run at `resumed_at`); a step waiting for its time has that time recomputed
    from its timing and the record as it is now (a date moved from 3 to 20 December moves "1 day
    before" from the 2nd to the 19th). Whatever still waits then goes through the catch-up
    `policy` (see `catch_up`), a recomputed time like any other, so no step runs before the
    record's current date says it is due.
    """
    if state.is_over:
        return Outcome(state=state, record=record)
    if change is not None:
        call = Call(
            flow,
            state,
            record,
            now=resumed_at,
            zone=zone,
            change=change,
            record_type=record_type,
            limits=limits,
        )
        step = flow.step(state.step_key) if state.step_key else None
        if change.change == "deleted":
            call.end(EnrollmentStatus.LEFT, "the record was deleted")
        elif step is not None and not call.goal_reached():
            kind = state.waiting.kind if state.waiting else WaitKind.TIMER
            if kind is not WaitKind.TIMER:
                call.on_change(step, kind, change)
            elif timed_by_record(step.timing):
                call.retime(step)
        outcome = call.outcome()
        if outcome.log or outcome.state.is_over or outcome.state.step_key != state.step_key:
            return outcome  # it moved on at the resume: its new times count from then
        state = outcome.state
    caught = catch_up(
        flow, state, record, paused_at=paused_at, resumed_at=resumed_at, zone=zone, policy=policy
    )
    return Outcome(state=caught, record=record)
