"""What an action runner receives and returns.

Only the types of the runtime half (scope, commands, clock) are imported here: the validator
loads every kind module for its checks, and `flows validate` need not load the runtime (see
kind.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crmflow.engine.recordtypes import RecordType
from crmflow.engine.templates import is_template
from crmflow.errors import BudgetExceededError, EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.calendars import BusinessCalendar
    from crmflow.engine.commands import Command
    from crmflow.engine.definition import Step
    from crmflow.engine.steps.scope import Scope

__all__ = ["ActionContext", "ActionResult"]


@dataclass(slots=True)  # one per record a batch moves: slots are quicker to make and read
class ActionContext:
    """The step run an action belongs to; `scope.record` is the record after earlier actions."""

    scope: Scope
    step: Step
    describe_step: Callable[[Step], Mapping[str, Any]]  # a step for templates (`step_vars`)
    enrollment_id: int
    step_run: int
    calendar: BusinessCalendar
    record_type: RecordType | None = None
    # The position of the action running now in its step's `actions` (see `where`).
    action_index: int | None = None
    _step_vars: Mapping[str, Any] | None = field(default=None, init=False, repr=False)

    def step_vars(self) -> Mapping[str, Any]:
        """`step` as templates see it, worked out once and only when a template reads it (it
        resolves who is responsible and computes the deadline)."""
        if self._step_vars is None:
            self._step_vars = self.describe_step(self.step)
        return self._step_vars

    @property
    def now(self) -> datetime:
        return self.scope.now

    @property
    def where(self) -> str:
        """The action running now, as a path in the flow (`steps.welcome.actions[0]`): an
        evaluation over its budget says where it was. Made only then, not for every action."""
        if self.action_index is None:
            return ""
        return f"steps.{self.step.key}.actions[{self.action_index}]"

    def ids(self, index: int, key: str | None) -> dict[str, Any]:
        """The fields every command of this action carries."""
        return {
            "enrollment_id": self.enrollment_id,
            "step_key": self.step.key,
            "step_run": self.step_run,
            "action_index": index,
            "action_key": key,
        }

    def render(
        self, text: str, variables: Mapping[str, str] | None = None, *, field: str = ""
    ) -> str:
        """`text` rendered; `field` names it in the action (`body`, `to[0]`) for the message of
        an evaluation over its budget."""
        try:
            return self.scope.render(text, step=self.step_vars, variables=variables)
        except BudgetExceededError as exc:
            raise exc.at(self._path(field)) from None

    def value(self, raw: Any, *, field: str = "") -> Any:
        """A literal, a template or `{cel: ...}` of the action, computed."""
        try:
            return self.scope.value(raw, step=self.step_vars)
        except BudgetExceededError as exc:
            raise exc.at(self._path(field)) from None

    def _path(self, field: str) -> str:
        return f"{self.where}.{field}" if self.where and field else self.where or field

    def values(self, raw: Mapping[str, Any], *, field: str = "values") -> dict[str, Any]:
        """Field values computed and, when the record type is known, checked and converted."""
        out: dict[str, Any] = {}
        for name, given in raw.items():
            try:
                value = self.scope.value(given, step=self.step_vars)
            except BudgetExceededError as exc:  # as `value` says where, the path made only now
                raise exc.at(self._path(f"{field}.{name}")) from None
            out[name] = self.stored(
                name, value, from_text=isinstance(given, str) and is_template(given)
            )
        return out

    def stored(self, name: str, value: Any, *, from_text: bool = False) -> Any:
        """`value` in the form the record keeps for field `name` (EvaluationError when it can't)."""
        if self.record_type is None:
            return value
        fdef = self.record_type.field(name)
        if fdef is None:
            raise EvaluationError(f"the {self.record_type.key} record type has no field {name!r}")
        if value is None or (from_text and isinstance(value, str) and not value.strip()):
            if fdef.required:
                raise EvaluationError(f"{name} is required and may not be emptied")
            return None
        try:
            convert = self.record_type.converter(fdef, zone=self.scope.zone, from_text=from_text)
            return convert(value)
        except ValueError as exc:
            raise EvaluationError(f"{name}: {exc}") from None

    def days_later(self, days: int, *, business_days: bool = False) -> datetime:
        from crmflow.engine.steps.clock import after  # noqa: PLC0415 - runtime only

        return after(
            days,
            "days",
            self.now,
            business_days=business_days,
            record=self.scope.record.values,
            zone=self.scope.zone,
            calendar=self.scope.flow.calendar,
        )


# Not frozen, as `RecordSnapshot` (crmflow.engine.runtime): one or more per action run.
@dataclass(slots=True)
class ActionResult:
    commands: tuple[Command, ...]
    detail: str
    record_updates: Mapping[str, Any] = field(default_factory=dict)
    end_reason: str | None = None  # end_flow: the flow ends after this step's actions
