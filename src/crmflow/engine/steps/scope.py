"""What conditions and templates see while a step runs, and how they are evaluated at run time.

The names are exactly those the validator allows (see docs/flows.md): `record`, `change`, `flow`,
`now`, `today` for CEL and templates, plus `step`, `vars` and the bare variable names for
templates. A failure to evaluate never escapes as an arbitrary exception: it becomes an
`EvaluationError` whose message a user can act on, and the caller decides what it means (an
action fails, a condition counts as false).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jinja2.exceptions import TemplateError

from crmflow.engine.budget import DEFAULT_LIMITS, Budget, EvaluationLimits
from crmflow.engine.conditions import (
    CEL_VARIABLES,
    NESTED_COMPREHENSION,
    ConditionShape,
    compile_condition,
    condition_reads,
    condition_shape,
    text_comparison,
)
from crmflow.engine.recordtypes import format_datetime
from crmflow.engine.runtime import RecordChanged, RecordSnapshot
from crmflow.engine.templates import (
    TEMPLATE_VARIABLES,
    is_template,
    render_template,
    simple_render,
    template_names,
)
from crmflow.errors import BudgetExceededError, EvaluationError, LimitExceededError

if TYPE_CHECKING:
    from crmflow.engine.definition.flow import FlowDefinition

__all__ = ["BudgetExceededError", "EvaluationError", "Scope", "StepVariables"]

# `step` as templates see it, or a function that computes it when a template reads it.
StepVariables = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None

_NO_CHANGE: dict[str, Any] = {
    "kind": "",
    "fields": [],
    "before": {},
    "after": {},
    "by": None,
    "at": None,
}


@dataclass(slots=True)  # one per record a batch moves: slots are quicker to make and read
class Scope:
    """One evaluation context; `record` is replaced as the actions of a step change it."""

    flow: FlowDefinition
    record: RecordSnapshot
    now: datetime
    zone: ZoneInfo
    change: RecordChanged | None = None
    limits: EvaluationLimits = DEFAULT_LIMITS
    # While an action runs, the instant its time budget ends: its templates and conditions
    # share one wall-clock budget (each still has its own size and loop budgets).
    _deadline: float | None = field(default=None, init=False, repr=False)

    @property
    def today(self) -> str:
        return self.now.astimezone(self.zone).date().isoformat()

    def _variable(self, name: str) -> Any:
        if name == "record":
            return self.record.variables()
        if name == "change":
            return self.change.variables() if self.change is not None else dict(_NO_CHANGE)
        if name == "flow":
            return {
                "key": self.flow.key,
                "name": self.flow.name,
                "owner": self.flow.owner,
                "controller": self.flow.controller,
            }
        if name == "today":
            return self.today
        # CEL compares timestamps, so `now` stays an instant (UTC) there.
        return self.now.astimezone(UTC)

    def _common(self) -> dict[str, Any]:
        return {name: self._variable(name) for name in ("record", "change", "flow", "today")}

    def cel_variables(
        self, names: frozenset[str] = CEL_VARIABLES, *, record_fields: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """The CEL variables among `names` (default: all of them); with `record_fields`, the
        record holds only those of them it has (what a condition reading them field by field
        needs: `condition_reads`)."""
        out = {
            name: self._variable(name)
            for name in CEL_VARIABLES
            if name in names and name != "record"
        }
        if "record" in names:
            out["record"] = (
                self.record.variables()
                if record_fields is None
                else self.record.variables(only=record_fields)
            )
        return out

    def template_variables(
        self,
        step: StepVariables = None,
        variables: Mapping[str, str] | None = None,
        names: Collection[str] = TEMPLATE_VARIABLES,
    ) -> dict[str, Any]:
        """What a template sees; only the `names` it reads are built (a template that reads
        `record` alone should not pay for the rest)."""
        # Bare variable names come first so that they can never shadow the documented names.
        out: dict[str, Any] = dict(variables or {})
        for name in ("record", "change", "flow", "today"):
            if name in names:
                out[name] = self._variable(name)
        if "now" in names:
            out["now"] = self.now.astimezone(self.zone)
        if "step" in names:
            out["step"] = dict((step() if callable(step) else step) or {})
        if "vars" in names:
            out["vars"] = dict(variables or {})
        return out

    # -- evaluation -------------------------------------------------------------------------

    @contextmanager
    def action_budget(self) -> Iterator[None]:
        """One action's evaluations share the action's time budget."""
        outer = self.start_action()
        try:
            yield
        finally:
            self._deadline = outer

    def start_action(self) -> float | None:
        """Start one action's time budget (its evaluations share it); the budget it replaces,
        to be put back with `end_action` (`action_budget` without a generator: the action step
        runs thousands of actions per batch)."""
        outer = self._deadline
        self._deadline = time.monotonic() + self.limits.time_limit_ms / 1000
        return outer

    def end_action(self, outer: float | None) -> None:
        self._deadline = outer

    def _budget(self, what: str) -> Budget:
        return Budget(self.limits, what=what, deadline=self._deadline)

    def evaluate(self, expression: str) -> Any:
        try:
            program = compile_condition(expression)
            # `record.status == 'client'` on a field that holds text: compared here, the same
            # answer as the library's without converting the variables for it.
            comparison = text_comparison(expression)
            if comparison is not None:
                answer = comparison.value(self.record.values)
                if answer is not None:
                    return answer
            shape = condition_shape(expression)
            if shape.nested:
                raise BudgetExceededError("nesting", NESTED_COMPREHENSION)
            reads = condition_reads(expression)
            variables = self.cel_variables(reads.names, record_fields=reads.record_fields)
            if not shape.bounded_by_its_text and self._costly(expression, shape, variables):
                return self._evaluate_elsewhere(expression, variables)
            return program.execute(variables)
        except BudgetExceededError:
            raise
        except LimitExceededError as exc:
            raise BudgetExceededError(exc.limit, str(exc)) from None
        except KeyError as exc:
            raise EvaluationError(
                f"{expression!r} uses {exc.args[0]!r}, which the record has no value for"
            ) from None
        except Exception as exc:  # the CEL library raises several types; all mean the same here
            detail = str(exc).split(". ", 1)[0].strip()
            raise EvaluationError(f"{expression!r} could not be evaluated: {detail}") from None

    def _evaluate_elsewhere(self, expression: str, variables: dict[str, Any]) -> Any:
        """The library cannot be stopped once it runs: what might run long or build large
        values goes to the caller's `CelRunner`, which can stop it (the services' runs it in a
        child process); with none, it is refused rather than run unbounded here."""
        runner = self.limits.cel_runner
        if runner is None:
            raise BudgetExceededError(
                "work",
                "this condition may do too much work to run here; no sandbox that can stop it "
                "was given (test fewer items, or test them with `in`)",
            )
        budget = self._budget("the condition")
        budget.check_time()
        try:
            return runner.evaluate(
                expression,
                variables,
                time_limit_ms=budget.remaining_ms(),
                memory_mb=self.limits.cel_memory_mb,
            )
        except LimitExceededError as exc:
            raise BudgetExceededError(exc.limit, self._over_message(exc)) from None

    def _over_message(self, exc: LimitExceededError) -> str:
        """What the user reads when the runner stopped a condition: the action's budget (the
        runner was given what was left of it) and how to stay within it."""
        if exc.limit == "time":
            return (
                f"the condition went over its time budget of {self.limits.time_limit_ms:,} ms "
                "(a comprehension over a long list: test fewer items, or test them with `in`)"
            )
        if exc.limit == "memory":
            return (
                f"the condition went over its memory budget of {self.limits.cel_memory_mb:,} MB "
                "(it builds values that are too large: join or map fewer items)"
            )
        return str(exc)

    def _costly(self, expression: str, shape: ConditionShape, variables: Mapping[str, Any]) -> bool:
        """Whether the expression may do more work than is safe in this process: about
        (1 + pluses) x characters per pass, and for comprehensions a pass per item (the
        library's `map` is also quadratic in the list's length)."""
        cap = self.limits.cel_in_process_work
        items, chars = _measure(variables, cap)
        items += shape.literal_items
        chars += len(expression)
        per_pass = (1 + shape.pluses) * chars
        if shape.comprehensions:
            return shape.comprehensions * items * (items + per_pass) > cap
        return per_pass > cap

    def holds(self, expression: str) -> bool:
        """Whether a CEL condition is true; a non-boolean result is an EvaluationError."""
        result = self.evaluate(expression)
        if not isinstance(result, bool):
            raise EvaluationError(
                f"{expression!r} gave {result!r}, not true or false (a condition must be boolean)"
            )
        return result

    def locales(self) -> tuple[str | None, ...]:
        """Where a template's `| date`, `| number`... look for their locale, in order: the
        record's `locale` field, its `language` field, the flow's `locale` (then `en`)."""
        values = self.record.values
        return (values.get("locale"), values.get("language"), self.flow.locale)

    def render(
        self, text: str, *, step: StepVariables = None, variables: Mapping[str, str] | None = None
    ) -> str:
        if not is_template(text):
            return text
        # Text around record fields that hold text: joined without Jinja, the same output.
        simple = simple_render(
            text, self.record.values, limits=self.limits, deadline=self._deadline
        )
        if simple is not None:
            return simple
        try:
            names = template_names(text)
            return render_template(
                text,
                self.template_variables(step, variables, names),
                budget=self._budget("the template"),
                locales=self.locales(),
                zone=self.zone,
            )
        except LimitExceededError as exc:
            raise BudgetExceededError(exc.limit, str(exc)) from None
        except (TemplateError, ValueError, TypeError, ArithmeticError) as exc:
            raise EvaluationError(f"the template {_short(text)!r} failed: {exc}") from None

    def value(self, raw: Any, *, step: StepVariables = None) -> Any:
        """A field value from a flow: a literal, a template string, or `{cel: "..."}`."""
        if isinstance(raw, str):  # first: most values are text, and Mapping's check is slow
            return self.render(raw, step=step)
        if isinstance(raw, Mapping) and set(raw) == {"cel"} and isinstance(raw["cel"], str):
            result = self.evaluate(raw["cel"])
            # Records keep date-times as UTC ISO text; CEL hands back aware datetimes.
            return format_datetime(result) if isinstance(result, datetime) else result
        return raw


def _measure(value: Any, cap: int) -> tuple[int, int]:
    """How many list and map items, and how many characters, `value` holds (counting stops
    once either is past `cap`: the answer is then only "too many")."""
    items = chars = 0
    stack = [value]
    while stack and items <= cap and chars <= cap:
        current = stack.pop()
        if isinstance(current, (str, bytes)):
            chars += len(current)
        elif isinstance(current, Mapping):
            items += len(current)
            stack.extend(current.values())
        elif isinstance(current, (list, tuple, set, frozenset)):
            items += len(current)
            stack.extend(current)
    return items, chars


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
