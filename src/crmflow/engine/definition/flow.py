"""The flow document as a whole: identity, lifecycle settings, triggers, policies and steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from crmflow.engine.definition.calendar import Calendar
from crmflow.engine.definition.common import Definition, Key
from crmflow.engine.definition.delivery_policy import OnFailure
from crmflow.engine.definition.steps import Step
from crmflow.engine.definition.triggers import Trigger

__all__ = [
    "SCHEMA_VERSION",
    "CatchUpPolicy",
    "FlowDefinition",
    "FlowStatus",
    "ReentryPolicy",
    "Visibility",
]

SCHEMA_VERSION = 1


class FlowStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    DRAINING = "draining"
    ARCHIVED = "archived"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class ReentryPolicy(Definition):
    """Whether a record may enter the flow again.

    never: once per record, ever; after_finishing: again once it has left; always: any number of
    times at once; once_per_days: at most once every `days` days.
    """

    mode: Literal["never", "after_finishing", "always", "once_per_days"] = "after_finishing"
    days: Annotated[int, Field(ge=1, le=3650)] | None = None


class CatchUpPolicy(Definition):
    """What happens to time that passed while the flow was paused.

    run_late: what fell due runs at once on resume; skip_missed: missed daily runs are skipped and
    the rest waits for its next time; shift_delays: every pending delay, timeout and deadline
    moves by the pause (a step timed by a date of the record keeps that date).
    """

    mode: Literal["run_late", "skip_missed", "shift_delays"] = "run_late"


Datetime = Annotated[datetime, Field(strict=False)]


def _default_action_type(steps: Any) -> Any:
    # `type: action` is the default, so hand-written flows can leave it out.
    if not isinstance(steps, list):
        return steps
    return [
        {"type": "action", **item} if isinstance(item, dict) and "type" not in item else item
        for item in steps
    ]


class FlowDefinition(Definition):
    schema_version: int
    key: Key
    name: Annotated[str, Field(min_length=1, max_length=200)]
    notes: str = ""
    record_type: str
    status: Annotated[FlowStatus, Field(strict=False)] = FlowStatus.DRAFT
    owner: str | None = None
    controller: str | None = None
    visibility: Annotated[Visibility, Field(strict=False)] = Visibility.PUBLIC
    members: list[str] = Field(default_factory=list)
    timezone: str | None = None
    locale: str | None = None  # dates and numbers in templates (fr_FR, de_DE, en_US...)
    start_at: Datetime | None = None
    archive_at: Datetime | None = None
    triggers: list[Trigger] = Field(default_factory=list)
    entry_condition: str | None = None
    goal: str | None = None
    reentry: ReentryPolicy = Field(default_factory=ReentryPolicy)
    catch_up: CatchUpPolicy = Field(default_factory=CatchUpPolicy)
    calendar: Calendar | None = None
    auto_archive_when_drained: bool = False
    # A run that ends normally leaves its open tasks (not its approvals') open, unless this is set.
    cancel_open_tasks_on_end: bool = False
    # What a message that fails for good does to its run, for the sending actions that do not
    # say (their `on_failure`): continue, stop or {goto: STEP} (docs/flows.md).
    on_delivery_failure: OnFailure = "continue"
    # Where a run started in test mode sends every message instead (engine.test_mode).
    test_recipients: list[Annotated[str, Field(min_length=1, max_length=320)]] = Field(
        default_factory=list
    )
    steps: list[Step] = Field(min_length=1)

    _steps_default_type = field_validator("steps", mode="before")(_default_action_type)

    def to_document(self) -> dict[str, Any]:
        """The document as JSON-able data, leaving out defaults; parsing it gives this flow back."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data["schema_version"] = self.schema_version
        data["steps"] = [
            {"type": step.type} | step.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            for step in self.steps
        ]
        return data

    def start_list_queries(self) -> list[str]:
        return [t.query for t in self.triggers if t.type == "start_list"]

    def schedule_queries(self) -> list[str]:
        return [t.query for t in self.triggers if t.type == "schedule"]

    def ordered_steps(self) -> list[Step]:
        """Steps in run order: by `order`, a step without one keeping its place in the list."""
        return list(self._run_order)

    def step(self, key: str) -> Step | None:
        return self._by_key.get(key)

    def step_after(self, key: str) -> str | None:
        """The key of the step after `key` in run order (None after the last one)."""
        return self._following.get(key)

    # A definition never changes once parsed (the model is frozen), and the engine asks these
    # for every step it runs: worked out once per definition.
    @cached_property
    def _run_order(self) -> tuple[Step, ...]:
        placed = sorted(
            enumerate(self.steps),
            key=lambda pair: (pair[1].order if pair[1].order is not None else pair[0], pair[0]),
        )
        return tuple(step for _, step in placed)

    @cached_property
    def _by_key(self) -> dict[str, Step]:
        found: dict[str, Step] = {}
        for s in self.steps:
            found.setdefault(s.key, s)  # the first of duplicates, as before (validation refuses)
        return found

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """What the engine works out from this definition and a few plain values alone, kept
        for the next record that asks the same (see `step_loop.Call.due`)."""
        return {}

    @cached_property
    def _following(self) -> dict[str, str | None]:
        order = self._run_order
        return {
            step.key: order[i + 1].key if i + 1 < len(order) else None
            for i, step in reversed(list(enumerate(order)))
        }
