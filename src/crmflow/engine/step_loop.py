"""One call of the transition: an enrollment's working state and the loop that runs its steps.

`crmflow.engine.transition` (the public API: enter, advance, move_to, ...) and
`crmflow.engine.thaw` (a frozen flow's resume) each build one `Call` for the enrollment they move,
let it run steps while they are due, and take its `outcome()`. This is the engine's inner loop:
the worker makes one call per enrollment per batch, so the working state is kept as a frozen
state plus pending changes, folded in once (see `Call.state`), and the due times that do not
depend on the record are worked out once per flow definition (see `Call.due`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from crmflow.engine.budget import DEFAULT_LIMITS, EvaluationLimits
from crmflow.engine.calendars import BusinessCalendar
from crmflow.engine.commands import Command, OutboxMessage
from crmflow.engine.definition import (
    ActionStep,
    ApprovalStep,
    AtTimeTiming,
    DateTiming,
    EventTiming,
    FlowDefinition,
    Step,
    WaitStep,
)
from crmflow.engine.localtime import format_local
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    DecisionMade,
    EnrollmentState,
    EnrollmentStatus,
    Event,
    RecordChanged,
    RecordSnapshot,
    StepRunLog,
    StepStatus,
    TaskDone,
    TimerFired,
    Waiting,
    WaitKind,
)
from crmflow.engine.steps import action, approval, decision, end, merge, wait
from crmflow.engine.steps.base import End, Go, Hold, StepResult, StepRun
from crmflow.engine.steps.scope import EvaluationError, Scope
from crmflow.engine.timing import DueTime, step_due_at

__all__ = ["MAX_STEPS_PER_CALL", "Call", "Outcome", "timed_by_record"]

MAX_STEPS_PER_CALL = 1000
_MEMO_SIZE = 1024  # due times kept per flow definition (see `Call.due`)
_CONTINUED = "ran in the next batch: the run of steps before it went over its time budget"

# What becoming the current step changes, besides `step_key` and `step_since` (see `move`).
_ON_A_STEP: dict[str, Any] = {
    "status": EnrollmentStatus.ACTIVE,
    "due_at": None,
    "waiting": None,
    "current_run": None,
    "deadline_at": None,
}

_STARTERS: dict[str, Any] = {
    "action": action.start,
    "decision": decision.start,
    "wait": wait.start,
    "approval": approval.start,
    "merge": merge.start,
    "end": end.start,
}


# Not frozen, as `RecordSnapshot` (crmflow.engine.runtime): one or more per record of a batch.
@dataclass(slots=True)
class Outcome:
    """What one call decided. `record` is the record as the commands leave it (the store applies
    the same changes through `UpdateRecord` / `SetStatus`)."""

    state: EnrollmentState
    record: RecordSnapshot
    commands: tuple[Command, ...] = ()
    log: tuple[StepRunLog, ...] = ()
    not_due: bool = False  # a timer fired before `state.due_at`: nothing happened
    refused: str | None = None  # a decision that cannot be taken: nothing happened

    @property
    def next_due(self) -> datetime | None:
        """When the worker should call again without an event (None: only an event wakes it)."""
        return None if self.state.is_over else self.state.due_at


class Call:
    """One call of the transition: the working state, changed as steps run."""

    def __init__(
        self,
        flow: FlowDefinition,
        state: EnrollmentState,
        record: RecordSnapshot,
        *,
        now: datetime,
        zone: ZoneInfo,
        change: RecordChanged | None,
        record_type: RecordType | None,
        limits: EvaluationLimits = DEFAULT_LIMITS,
    ) -> None:
        self.flow = flow
        self.goal = flow.goal  # read at every step that starts: kept here, a plain attribute
        self.now = now
        self._state = state
        # Changes not yet folded into `_state`: a step makes several small changes in a row, and
        # copying the (frozen) state for each one was a fifth of the engine's time.
        self._pending: dict[str, Any] = {}
        self.run = StepRun(
            flow=flow,
            scope=Scope(flow=flow, record=record, now=now, zone=zone, change=change, limits=limits),
            enrollment_id=state.enrollment_id,
            calendar=_calendar(flow, zone),
            record_type=record_type,
            run_number=state.current_run or state.step_runs,
        )
        # Counted across calls while a run of steps is cut by the time budget (see `move`).
        self.steps_taken = state.steps_in_a_row
        self.continued = state.steps_in_a_row > 0  # the last call was cut: this one goes on
        if self.continued:
            self.update(steps_in_a_row=0)
        self.steps_started = 0  # steps started in this call: the first always runs
        self.call_time_limit_ms = limits.call_time_limit_ms
        self.deadline = (
            None
            if limits.call_time_limit_ms is None
            else time.monotonic() + limits.call_time_limit_ms / 1000
        )
        self.path: list[str] = []

    @property
    def state(self) -> EnrollmentState:
        """The working state with every change so far (one copy for all pending changes)."""
        if self._pending:
            self._state = self._state.evolve(self._pending)
            self._pending = {}
        return self._state

    def _get(self, name: str) -> Any:
        """One field of the working state, without folding the pending changes in."""
        return self._pending[name] if name in self._pending else getattr(self._state, name)

    def update(self, **changes: Any) -> None:
        self._pending.update(changes)

    def outcome(self) -> Outcome:
        commands = self.run.commands
        emails = (
            sum(1 for c in commands if isinstance(c, OutboxMessage) and c.channel == "email")
            if commands
            else 0
        )
        if emails:
            self.update(emails_sent=self.state.emails_sent + emails)
        return Outcome(
            state=self.state,
            record=self.run.scope.record,
            commands=tuple(self.run.commands),
            log=tuple(self.run.logs),
        )

    # -- ending ---------------------------------------------------------------------------

    def end(self, status: EnrollmentStatus, reason: str) -> None:
        key = self._get("step_key")
        step = self.flow.step(key) if key else None
        if step is not None:
            self.run.log(step, StepStatus.ENDED, f"{status}: {reason}")
        self.update(
            status=status,
            finished_at=self.now,
            end_reason=reason,
            due_at=None,
            waiting=None,
            current_run=None,
        )

    def goal_reached(self) -> bool:
        goal = self.goal
        if not goal:
            return False
        try:
            reached = self.run.scope.holds(goal)
        except EvaluationError:
            return False  # a goal that cannot be evaluated is not reached
        if reached:
            self.end(EnrollmentStatus.LEFT, f"reached the goal ({goal})")
        return reached

    # -- moving through steps ---------------------------------------------------------------

    def onward(self, step: Step, result: StepResult) -> Go | None:
        """Carry out a step's result: hold or end (None), or where to go next (a resolved Go)."""
        if isinstance(result, End):
            self.end(result.status, result.reason)
            return None
        if isinstance(result, Hold):
            self.update(
                status=EnrollmentStatus.WAITING,
                due_at=result.due_at,
                waiting=Waiting(
                    kind=result.kind,
                    description=result.description,
                    buttons=result.buttons,
                    asked_of=result.asked_of,
                ),
                current_run=self.run.run_number,
                deadline_at=result.deadline_at,
            )
            return None
        return Go(result.target or step.next or self.run.following(step))

    def move(self, key: str | None) -> None:
        """Make `key` the current step (its timing counts from now), run it when it is due, and
        so on while steps are due. A loop rather than recursion: long chains are legitimate."""
        while True:
            if key is None:
                self.end(EnrollmentStatus.FINISHED, "went through the last step")
                return
            self.steps_taken += 1
            self.path.append(key)
            if self.steps_taken > MAX_STEPS_PER_CALL:
                loop = " -> ".join(self.path[-6:])
                self.end(
                    EnrollmentStatus.CANCELLED,
                    f"more than {MAX_STEPS_PER_CALL} steps ran in a row without waiting; "
                    f"the flow loops ({loop})",
                )
                return
            step = self.flow.step(key)
            if step is None:
                self.end(EnrollmentStatus.CANCELLED, f"the flow has no step {key!r}")
                return
            pending = self._pending
            pending.update(_ON_A_STEP)  # the step is current, and nothing is scheduled yet
            pending["step_key"] = key
            pending["step_since"] = self.now
            if not step.active:
                self.new_run()
                self.run.log(step, StepStatus.SKIPPED, "the step is inactive")
                key = step.next or self.run.following(step)
                continue
            if not self.schedule(step):
                return
            if self.out_of_time():
                self.continue_next_batch()
                return
            onward = self.start(step)
            if onward is None:
                return
            key = onward.target

    def out_of_time(self) -> bool:
        """Whether this call's time budget has passed (the first step of a call always runs, so
        that every call moves the record on)."""
        return (
            self.steps_started > 0
            and self.deadline is not None
            and time.monotonic() > self.deadline
        )

    def continue_next_batch(self) -> None:
        """Leave the current step, due now and not started, for the next batch: its timer call
        runs it (see `on_timer`)."""
        self.run.note = ""  # said again, if it still holds, when the step runs
        self.update(
            status=EnrollmentStatus.ACTIVE,
            due_at=self.now,
            waiting=Waiting(
                kind=WaitKind.TIMER,
                description=(
                    "continues in the next batch: this run of steps went over its time budget "
                    f"of {self.call_time_limit_ms or 0:,} ms"
                ),
            ),
            steps_in_a_row=self.steps_taken,
        )

    def go(self, onward: Go | None) -> None:
        if onward is not None:
            self.move(onward.target)

    def schedule(self, step: Step) -> bool:
        """Set when `step` is due from its timing; True when it should start now."""
        if step.timing is None and self.flow.calendar is None:
            return True  # immediately, and no calendar to move it: the common case, kept cheap
        due = self.due(step, self._get("step_since") or self.now)
        if due.waits_for_event:
            timing = cast(EventTiming, step.timing)
            if timing.condition and self._holds(timing.condition):
                return True
            self.update(
                status=EnrollmentStatus.WAITING,
                due_at=due.at,
                waiting=_waiting(WaitKind.EVENT, due.reason),
            )
            return False
        if due.at is not None and due.at <= self.now:
            if due.passed is not None:
                self.run.note = (
                    f"due {format_local(due.passed, self.run.scope.zone)}, already past when "
                    "the record reached this step: ran at once"
                )
            return True
        self.update(
            status=EnrollmentStatus.ACTIVE,
            due_at=due.at,
            waiting=_waiting(WaitKind.TIMER, due.reason),
        )
        return False

    def due(self, step: Step, since: datetime) -> DueTime:
        """When `step` is due, its timing counted from `since`.

        A time that does not depend on the record is the same for every record that reaches
        the step at the same instant (a batch moves hundreds at one `now`): it is worked out
        once and kept with the definition."""
        zone = self.run.scope.zone
        if timed_by_record(step.timing):
            return step_due_at(
                step.timing,
                previous_end=since,
                record=self.run.scope.record.values,
                flow_zone=zone,
                calendar=self.flow.calendar,
            )
        memo, key = self.flow.memo, ("due", step.key, since, zone.key)
        found: DueTime | None = memo.get(key)
        if found is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            found = memo[key] = step_due_at(
                step.timing,
                previous_end=since,
                record={},
                flow_zone=zone,
                calendar=self.flow.calendar,
            )
        return found

    def new_run(self) -> None:
        pending = self._pending
        runs = pending.get("step_runs", self._state.step_runs) + 1
        pending["step_runs"] = self.run.run_number = runs

    def start(self, step: Step) -> Go | None:
        """Run `step` now (it is due); where to go next, or None when the record stays or ends."""
        self.steps_started += 1
        if self.goal and self.goal_reached():  # most flows have no goal: no call for them
            return None
        self.new_run()
        pending = self._pending
        pending["due_at"] = pending["waiting"] = None
        if step.condition:
            try:
                holds, why = self.run.scope.holds(step.condition), ""
            except EvaluationError as exc:
                holds, why = False, f" ({exc})"
            if not holds:
                self.run.log(step, StepStatus.SKIPPED, f"condition false: {step.condition}{why}")
                return Go(step.next or self.run.following(step))
        return self.onward(step, _STARTERS[step.type](step, self.run))

    def decision_refusal(self, step: ApprovalStep) -> str | None:
        """Why a decision at approval `step` is refused now, or None: its buttons count only
        while the step's condition holds, and the record may have changed since it waited."""
        if not step.condition:
            return None
        try:
            holds, why = self.run.scope.holds(step.condition), ""
        except EvaluationError as exc:
            holds, why = False, f" ({exc})"
        if holds:
            return None
        return (
            f"the buttons of step {step.key!r} count only while its condition holds, and "
            f"`{step.condition}` is false for this record now{why}"
        )

    def _holds(self, expression: str) -> bool:
        try:
            return self.run.scope.holds(expression)
        except EvaluationError:
            return False

    # -- events -----------------------------------------------------------------------------

    def handle(self, step: Step, event: Event) -> None:
        kind = self.state.waiting.kind if self.state.waiting else WaitKind.TIMER
        if isinstance(event, DecisionMade):
            waiting = self.state.waiting
            result = approval.decide(cast(ApprovalStep, step), self.run, event, waiting)
            if isinstance(result, approval.Counted):
                self.update(waiting=result.waiting)  # a vote: the quorum is not reached yet
            else:
                self.go(self.onward(step, result))
        elif isinstance(event, TaskDone):
            self.go(self.onward(step, action.task_done(cast(ActionStep, step), self.run, event)))
        elif isinstance(event, TimerFired):
            self.on_timer(step, kind)
        else:
            self.on_change(step, kind, event)

    def on_timer(self, step: Step, kind: WaitKind) -> None:
        if kind is WaitKind.CONDITION:
            self.go(self.onward(step, wait.on_timeout(cast(WaitStep, step), self.run)))
        elif kind is WaitKind.EVENT and isinstance(step.timing, EventTiming):
            if step.timing.on_timeout:
                self.new_run()
                target = step.timing.on_timeout
                self.run.log(step, StepStatus.SKIPPED, f"no event in time: going to {target!r}")
                self.move(target)
            else:
                self.go(self.start(step))
        else:
            if kind is WaitKind.TIMER and timed_by_record(step.timing) and not self.schedule(step):
                # The record's date moved later since the due time was set (a change not heard
                # yet, or made while the flow was paused): the step waits for its new time.
                return
            if self.continued:
                self.run.note = "; ".join(filter(None, [self.run.note, _CONTINUED]))
            self.go(self.start(step))

    def retime(self, step: Step) -> None:
        """Set the due time of `step`, waiting for its time, from its timing and the record as
        it is now; it does not run here, even when that time has passed."""
        due = self.due(step, self._get("step_since") or self.now)
        self.update(due_at=due.at, waiting=_waiting(WaitKind.TIMER, due.reason))

    def on_change(self, step: Step, kind: WaitKind, change: RecordChanged) -> None:
        if kind is WaitKind.CONDITION:
            result = wait.on_change(cast(WaitStep, step), self.run, change)
            if result is not None:
                self.go(self.onward(step, result))
        elif kind is WaitKind.EVENT and isinstance(step.timing, EventTiming):
            timing = step.timing
            if (timing.condition and self._holds(timing.condition)) or any(
                name in change.fields for name in timing.fields
            ):
                self.go(self.start(step))
        elif kind is WaitKind.TIMER and self.schedule(step):
            # The step's date moved (or appeared) and it is now due: it runs.
            self.go(self.start(step))


@lru_cache(maxsize=_MEMO_SIZE)
def _waiting(kind: WaitKind, description: str) -> Waiting:
    """What a step due at a time (or at an event) waits for. A Waiting is frozen, so one value
    serves every record a batch holds at the same step with the same words (hundreds), instead
    of a pydantic model built, validated and freed for each."""
    return Waiting(kind=kind, description=description)


def _calendar(flow: FlowDefinition, zone: ZoneInfo) -> BusinessCalendar:
    """The flow's calendar in `zone`, made once per definition and zone (it never changes, and
    every record of a batch asks for it)."""
    memo, key = flow.memo, ("calendar", zone)
    found: BusinessCalendar | None = memo.get(key)
    if found is None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        found = memo[key] = BusinessCalendar(flow.calendar, zone)
    return found


def timed_by_record(timing: object) -> bool:
    """Whether a step's time depends on the record: a date field, or a zone the record holds."""
    # `type(...) is`, not isinstance: the timing models' class checks go through ABCMeta, a
    # fifth of a microsecond each, and every step with a timing asks this.
    return type(timing) is DateTiming or (
        type(timing) is AtTimeTiming and timing.zone_field is not None
    )
