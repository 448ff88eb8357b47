"""What a step-kind module receives (the run in progress) and returns (where the record goes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmflow.engine.calendars import BusinessCalendar
from crmflow.engine.commands import Command
from crmflow.engine.definition import FlowDefinition, Step
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    ActionLog,
    ButtonChoice,
    EnrollmentStatus,
    StepRunLog,
    StepStatus,
    WaitKind,
)
from crmflow.engine.steps.clock import after
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError, Scope

__all__ = ["End", "Go", "Hold", "StepResult", "StepRun"]


# Results, never changed once made, but not frozen, as `RecordSnapshot` (crmflow.engine.runtime):
# one per step run; `unsafe_hash` keeps them hashable as they were.
@dataclass(slots=True, unsafe_hash=True)
class Go:
    """Continue to `target`; None: the step's `next`, else the following step in order."""

    target: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Hold:
    """Keep the record at this step until an event, a decision, or `due_at` (a timeout)."""

    kind: WaitKind
    due_at: datetime | None
    description: str
    buttons: tuple[ButtonChoice, ...] = ()
    asked_of: str | None = None
    deadline_at: datetime | None = None


@dataclass(slots=True, unsafe_hash=True)
class End:
    status: EnrollmentStatus
    reason: str


StepResult = Go | Hold | End


@dataclass(slots=True)  # one per record a batch moves: slots are quicker to make and read
class StepRun:
    """One call of the transition: the flow, what conditions see, and what has been produced."""

    flow: FlowDefinition
    scope: Scope
    enrollment_id: int
    calendar: BusinessCalendar
    record_type: RecordType | None
    run_number: int = 0
    commands: list[Command] = field(default_factory=list)
    logs: list[StepRunLog] = field(default_factory=list)
    # Said first in the next step-run log: why the step ran when it did (a date already past).
    note: str = ""

    @property
    def now(self) -> datetime:
        return self.scope.now

    def log(
        self,
        step: Step,
        status: StepStatus,
        reason: str = "",
        actions: tuple[ActionLog, ...] = (),
    ) -> None:
        if self.note:
            reason = f"{self.note}; {reason}" if reason else self.note
            self.note = ""
        self.logs.append(
            StepRunLog(
                self.enrollment_id,
                step.key,
                self.run_number,
                step.type,
                self.scope.now,
                status,
                reason,
                actions,
            )
        )

    def following(self, step: Step) -> str | None:
        """The step after `step` in run order, or None after the last one."""
        return self.flow.step_after(step.key)

    def deadline(self, step: Step) -> datetime | None:
        if step.deadline is None:
            return None
        return after(
            step.deadline.days,
            "days",
            self.now,
            business_days=step.deadline.business_days,
            record=self.scope.record.values,
            zone=self.scope.zone,
            calendar=self.flow.calendar,
        )

    def step_vars(self, step: Step) -> dict[str, Any]:
        """`step` as templates see it: key, name, responsible, deadline."""
        try:
            turn = (step.key, (self.enrollment_id, self.run_number))
            who = resolve(step.responsibility, self.flow, self.scope.record, turn=turn)
            responsible = str(who.ref)
        except EvaluationError:
            responsible = ""
        deadline = self.deadline(step)
        return {
            "key": step.key,
            "name": step.name or step.key,
            "responsible": responsible,
            "deadline": deadline.astimezone(self.scope.zone).date().isoformat() if deadline else "",
        }
