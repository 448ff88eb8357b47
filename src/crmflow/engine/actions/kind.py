"""What an action kind is: the model of its `type`, its meaning checks and its runner.

Each kind is a module of its own, `crmflow.engine.actions.<type>`, which holds its model and
builds one `Kind` from it, its `check` and its `run`;
`crmflow.engine.actions.registry` lists them in one tuple, and both the validator and the step
runner find a kind there. What the service side does with the kind's commands is registered
apart, by command type (`crmflow.services.effects`).

The validator and the runner see every kind through `ActionKind`, which takes any action and is
not generic: a registry holds kinds of different models in one tuple. `Kind` is the typed
implementation each module builds: its check and run functions take their own model, and `Kind`
checks an action is one before it hands it to them.

The validator imports every kind module for its model and checks, so a kind module imports
what its runner needs to make its commands (`crmflow.engine.commands`, the step's people and
clock, the outbox message) inside the runner, marked `# noqa: PLC0415 - runtime only`:
`crmflow flows validate` then loads no runtime module (bench/bench_cli_start.py). An import
inside a function costs about a microsecond at each call: the kinds whose run is otherwise that
cheap (update_record, set_status, history: most flows run them for every record) take their
command's class from a `functools.cache`d loader instead, which imports it at the first run.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.recordtypes import FieldType, RecordType

if TYPE_CHECKING:
    from crmflow.engine.actions.base import ActionContext, ActionResult
    from crmflow.engine.definition import ActionStep, FlowDefinition, Responsibility
    from crmflow.engine.definition.context_checks import TemplateCheck

__all__ = ["ActionChecker", "ActionKind", "Kind", "KnownNames"]

ActionT = TypeVar("ActionT", bound=ActionBase)


class KnownNames(Protocol):
    """What the validator knows besides the flow (`definition.checks.CheckScope`)."""

    @property
    def record_types(self) -> Mapping[str, RecordType]: ...

    @property
    def allow_sql(self) -> bool: ...

    @property
    def email_templates(self) -> TemplateCheck | None: ...


class ActionChecker(Protocol):
    """What a kind's checks may use of the flow checker (`definition.checks.FlowChecker`): the
    flow, its record type, what the context knows, and the checks shared with steps and
    triggers. Each adds its problems to the one list the user sees."""

    @property
    def flow(self) -> FlowDefinition: ...

    @property
    def record_type(self) -> RecordType | None: ...

    @property
    def scope(self) -> KnownNames: ...

    def add(self, path: str, message: str, hint: str = "") -> None: ...

    def warn(self, path: str, message: str, hint: str = "") -> None: ...

    def check_text(self, path: str, text: str, extra: Iterable[str] = ()) -> None: ...

    def check_value(self, path: str, value: Any, fdef: Any) -> None: ...

    def check_values(
        self,
        path: str,
        values: Mapping[str, Any],
        target: RecordType | None,
        *,
        check_required: bool = False,
    ) -> None: ...

    def check_field(
        self, path: str, name: str, kinds: Collection[FieldType] | None = None
    ) -> Any: ...

    def check_default_field(self, path: str, name: str, kind: FieldType, option: str) -> None: ...

    def check_status_field(self, path: str) -> Any: ...

    def check_status_value(self, path: str, value: str) -> None: ...

    def check_user(self, path: str, name: str | None) -> None: ...

    def check_group(self, path: str, name: str) -> None: ...

    def check_member(self, path: str, name: str) -> None: ...

    def check_group_members(self, path: str, name: str) -> None: ...

    def check_responsibility(self, path: str, value: Responsibility) -> None: ...

    def check_flow_key(self, path: str, key: str, record_type: str | None) -> None: ...


class ActionKind(Protocol):
    """One action `type`: its model, what the validator checks of it, and how it runs."""

    @property
    def model(self) -> type[ActionBase]:
        """The pydantic model of the action (a member of `definition.Action`)."""
        ...

    @property
    def type(self) -> str:
        """The `type` an action of this kind is written with."""
        ...

    def check(
        self, checker: ActionChecker, path: str, action: ActionBase, step: ActionStep
    ) -> None:
        """Add the problems of `action`, at `path` in the flow, to `checker`."""
        ...

    def run(self, action: ActionBase, index: int, ctx: ActionContext) -> ActionResult:
        """The commands of `action` (the `index`th of its step); raises EvaluationError when it
        cannot be carried out."""
        ...


@dataclass(frozen=True)
class Kind(Generic[ActionT]):
    """An `ActionKind` made of a kind module's model and its typed check and run functions."""

    model: type[ActionT]
    checks: Callable[[ActionChecker, str, ActionT, ActionStep], None]
    runner: Callable[[ActionT, int, ActionContext], ActionResult]
    _type: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The one place the type is written is the model's `type: Literal[...]`.
        literal = self.model.model_fields["type"].annotation
        (name,) = typing.get_args(literal)
        object.__setattr__(self, "_type", str(name))

    @property
    def type(self) -> str:
        return self._type

    def check(
        self, checker: ActionChecker, path: str, action: ActionBase, step: ActionStep
    ) -> None:
        self.checks(checker, path, self._own(action), step)

    def run(self, action: ActionBase, index: int, ctx: ActionContext) -> ActionResult:
        return self.runner(self._own(action), index, ctx)

    def _own(self, action: ActionBase) -> ActionT:
        if not isinstance(action, self.model):
            raise TypeError(f"the {self._type} kind was given a {type(action).__name__}")
        return action
