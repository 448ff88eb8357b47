"""Runtime state of the engine, separate from the flow definitions it runs.

An enrollment is one record going through one version of one flow. Its state says where the
record is (the current step, and when that step became current), what it waits for (a time, an
event, a condition, a person's decision) and how it ended. The store persists it as columns (the
fields the worker filters on: status, due_at, step_key) plus the JSON of `model_dump(mode="json")`;
`EnrollmentState.model_validate(data)` reads it back.

Events are what wakes an enrollment: a timer firing, a change of the record, a person's decision.
The step-run log says what each step run and each of its actions did, in words a user can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from crmflow.engine.directory import Directory

__all__ = [
    "STATE_SCHEMA_VERSION",
    "ActionLog",
    "ActionStatus",
    "ButtonChoice",
    "DecisionMade",
    "EnrollmentState",
    "EnrollmentStatus",
    "Event",
    "RecordChanged",
    "RecordSnapshot",
    "StepRunLog",
    "StepStatus",
    "TaskDone",
    "TimerFired",
    "Vote",
    "WaitKind",
    "Waiting",
]

STATE_SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"  # moving, or due to move at `due_at`
    WAITING = "waiting"  # held for an event, a condition or a decision
    FINISHED = "finished"  # reached the end (an end step, the last step, or end_flow)
    LEFT = "left"  # left before the end: goal reached, no branch applied, record deleted
    CANCELLED = "cancelled"  # stopped by crmflow or a person: loop guard, missing step, by hand
    # An enrollment row's status only, never a state's: a start the loop guard tripped on, held
    # until its turn comes, when it is cancelled with the record's enrollments in the flow.
    HELD = "held"

    @property
    def is_over(self) -> bool:
        return self in _OVER


_OVER = frozenset({EnrollmentStatus.FINISHED, EnrollmentStatus.LEFT, EnrollmentStatus.CANCELLED})


class WaitKind(StrEnum):
    TIMER = "timer"  # the current step starts at `due_at` (None: a date the record lacks)
    EVENT = "event"  # the step starts when its event timing fires, or at the timeout
    CONDITION = "condition"  # a wait step runs until `until` holds / `fields` change, or timeout
    APPROVAL = "approval"  # an approval step waits for a person to press one of its buttons
    TASK = "task"  # an action step waits for its tasks to be done (create_task `wait: true`)


class ButtonChoice(_Frozen):
    key: str
    label: str
    comment_required: bool = False


class Vote(_Frozen):
    """A group member's press on an approval step with a quorum, kept until the step decides."""

    by: str
    button: str
    comment: str = ""
    at: datetime


class Waiting(_Frozen):
    """What the current step waits for; `description` is shown to users as is."""

    kind: WaitKind
    description: str = ""
    buttons: tuple[ButtonChoice, ...] = ()
    asked_of: str | None = None  # approvals: who decides (a username or `group:<name>`)
    votes: tuple[Vote, ...] = ()  # approvals with a quorum: the members' presses so far


class EnrollmentState(_Frozen):
    schema_version: int = STATE_SCHEMA_VERSION
    enrollment_id: int
    flow_key: str
    flow_version: int
    record_id: int
    status: EnrollmentStatus = EnrollmentStatus.ACTIVE
    step_key: str | None = None
    step_since: datetime | None = None  # when the current step became current
    due_at: datetime | None = None  # when it runs (or times out); None: nothing scheduled
    waiting: Waiting | None = None
    # Every step visited (run or skipped) takes the next run number; a run that waits (approval,
    # wait step) keeps its number in `current_run` until it completes.
    step_runs: int = 0
    current_run: int | None = None
    deadline_at: datetime | None = None  # the current step's deadline, when it has one
    emails_sent: int = 0
    # Steps run in a row without waiting, kept only while a run of steps cut by its time budget
    # waits for the next batch: a flow that loops for ever is still caught when each call ends
    # early (see `MAX_STEPS_PER_CALL`).
    steps_in_a_row: int = 0
    entered_at: datetime
    finished_at: datetime | None = None
    end_reason: str = ""

    @property
    def is_over(self) -> bool:
        return self.status.is_over

    def evolve(self, changes: Mapping[str, Any]) -> EnrollmentState:
        """This state with `changes` (fields, already of their types): `model_copy(update=...)`
        without pydantic's general copy, which costs twice as much. The engine folds a call's
        changes in once per record it moves."""
        new = EnrollmentState.__new__(EnrollmentState)
        _set(new, "__dict__", {**self.__dict__, **changes})
        _set(new, "__pydantic_fields_set__", self.__pydantic_fields_set__ | changes.keys())
        _set(new, "__pydantic_extra__", None)
        _set(new, "__pydantic_private__", None)
        return new

    @classmethod
    def entering(
        cls,
        *,
        enrollment_id: int,
        flow_key: str,
        flow_version: int,
        record_id: int,
        entered_at: datetime,
    ) -> EnrollmentState:
        """A record's state as it enters: what the constructor makes of these, without its
        validation (the engine's own values, of their types): a batch enters hundreds."""
        return _ENTERING.evolve(
            {
                "enrollment_id": enrollment_id,
                "flow_key": flow_key,
                "flow_version": flow_version,
                "record_id": record_id,
                "entered_at": entered_at,
            }
        )


_set = object.__setattr__  # how a frozen model's attributes are set (`EnrollmentState.evolve`)
# What `EnrollmentState.entering` sets the given fields of (every other field at its default).
_ENTERING = EnrollmentState(
    enrollment_id=0, flow_key="", flow_version=0, record_id=0, entered_at=datetime.min
)


# A value, never changed once made (`with_values` makes another), but not frozen: a batch builds
# several per record (one as read, one per action that changes it), and a frozen dataclass sets
# each field through `object.__setattr__`, several times the cost of building one.
@dataclass(slots=True)
class RecordSnapshot:
    """The record as the engine sees it: its field values plus the fields every record has.

    `values` should hold every field of the record type (None when empty): a condition on a
    field that is missing altogether fails to evaluate (and counts as false).
    """

    id: int
    type: str
    values: Mapping[str, Any]
    owner: str | int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Who the record's responsibilities may name (the batch's users, groups, managers, related
    # values): None when nobody loaded them (engine.directory).
    people: Directory | None = None

    def with_values(
        self, updates: Mapping[str, Any], *, at: datetime | None = None
    ) -> RecordSnapshot:
        # The constructor rather than dataclasses.replace: this runs for every action that
        # changes the record, and replace() costs several times more.
        return RecordSnapshot(
            self.id,
            self.type,
            {**self.values, **updates},
            self.owner,
            self.created_at,
            at or self.updated_at,
            self.people,
        )

    def variables(self, *, only: Iterable[str] | None = None) -> dict[str, Any]:
        """`record` as conditions and templates see it; with `only`, just those of its names it
        has (a condition that reads a few fields need not have the others converted)."""
        if only is not None:
            values = self.values
            out: dict[str, Any] = {}
            for name in only:
                if name in _META:
                    out[name] = getattr(self, name)
                elif name in values:
                    out[name] = values[name]
            return out
        return {
            **self.values,
            "id": self.id,
            "type": self.type,
            "owner": self.owner,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_META = frozenset({"id", "type", "owner", "created_at", "updated_at"})  # what `variables` adds


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimerFired:
    """The worker found the enrollment due (`advance` checks that it really is)."""

    kind: Literal["timer"] = "timer"


@dataclass(frozen=True)
class RecordChanged:
    """A change of the enrolled record; `advance` receives the record as it is after it."""

    change: Literal["created", "updated", "deleted"]
    fields: tuple[str, ...] = ()
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    by: str | None = None
    at: datetime | None = None
    kind: Literal["record_changed"] = "record_changed"

    def variables(self) -> dict[str, Any]:
        """`change` as conditions and templates see it."""
        return {
            "kind": self.change,
            "fields": list(self.fields),
            "before": dict(self.before),
            "after": dict(self.after),
            "by": self.by,
            "at": self.at,
        }


@dataclass(frozen=True)
class DecisionMade:
    """A person pressed `button` on approval step `step_key`."""

    step_key: str
    button: str
    by: str
    comment: str = ""
    # The active members of the group the step asks, when `by` is one of them: their press is a
    # vote the step's quorum counts. None: the press decides at once (the one person asked, or
    # an admin standing in for the group).
    group_size: int | None = None
    kind: Literal["decision"] = "decision"


@dataclass(frozen=True)
class TaskDone:
    """The tasks an action step waits for (create_task `wait: true`) are done; `by` did the
    last one (`task`: its title)."""

    step_key: str
    by: str
    task: str = ""
    kind: Literal["task_done"] = "task_done"


Event = TimerFired | RecordChanged | DecisionMade | TaskDone


# -- the step-run log ----------------------------------------------------------------------------


class ActionStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class StepStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    WAITING = "waiting"  # the step started and holds the record (approval, wait)
    FAILED = "failed"  # the step ran but at least one of its actions failed
    ENDED = "ended"  # the enrollment ended here (finished, left or cancelled: see the reason)


# The logs are plain slotted dataclasses rather than pydantic models: the engine builds one per
# step run and one per action run (a worker's batch, thousands), and nothing parses them. They
# are values, never changed once made (`dataclasses.replace` makes a new one), but not frozen:
# a frozen dataclass sets each field through `object.__setattr__`, three times the cost of
# building one (about 4 us of a step run's 60 on a loaded machine); `unsafe_hash` keeps them
# hashable as they were.
@dataclass(slots=True, unsafe_hash=True)
class ActionLog:
    index: int  # position in the step's `actions` list
    key: str | None
    type: str
    status: ActionStatus
    detail: str  # what it did ("email to a@b.org: Merci Claire !") or why not


@dataclass(slots=True, unsafe_hash=True)
class StepRunLog:
    enrollment_id: int
    step_key: str
    step_run: int
    step_type: str
    at: datetime
    status: StepStatus
    reason: str = ""
    actions: tuple[ActionLog, ...] = ()
