"""The budget of one evaluation (a template render, a CEL condition): sizes, loops and time.

A flow is written by a person and runs inside the worker's batch: a template such as
`{{ 'a' * 10**9 }}` or two nested loops over `range(99999)` would otherwise eat the machine and
hold everything else up. Every evaluation therefore carries an `EvaluationLimits`, passed in by
the caller (the worker takes it from the settings; the engine only has defaults), and a `Budget`
that counts what the evaluation has used so far and refuses, *before* allocating, what would go
over. The only clock read is `time.monotonic()` for the time budget: it changes no result, only
whether an evaluation is allowed to go on.

A CEL expression whose work is not bounded by its text cannot be stopped once the library runs
it, so it is handed to a `CelRunner` that the caller injects through the limits (the services
pass one that runs it in a child process: crmflow.celsandbox). The engine starts no process of
its own: without a runner, such an expression is refused.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeGuard

from crmflow.errors import CelEvaluationError, LimitExceededError

__all__ = [
    "DEFAULT_LIMITS",
    "Budget",
    "CelEvaluationError",
    "CelRunner",
    "EvaluationLimits",
    "check_binop",
    "check_size",
    "current_budget",
    "int_bits_of_power",
]


class CelRunner(Protocol):
    """Evaluates a CEL expression where it can be stopped, within a time and a memory limit.

    Raises LimitExceededError with limit "time" or "memory" when it goes over (the engine words
    the message the user reads), and CelEvaluationError when the expression itself fails.
    """

    def evaluate(
        self, expression: str, variables: dict[str, Any], *, time_limit_ms: int, memory_mb: int
    ) -> Any: ...


@dataclass(frozen=True)
class EvaluationLimits:
    """What one template render or condition evaluation may use.

    `max_value_size` caps every string or list an operator, filter or method makes (characters
    or items); `max_output_chars` the rendered text; `max_range` one `range(...)`;
    `max_iterations` all loop turns and calls of one render together; `max_int_bits` the size of
    a number (`2 ** 10**9` would take minutes to compute); `time_limit_ms` the wall clock of one
    action (all the templates and conditions it evaluates).

    `call_time_limit_ms` bounds one call of the transition (one record's run of steps, inside
    the caller's write transaction): once it has passed, the next step waits for the next batch
    instead of running (None: never cut, as a simulation wants).
    """

    max_output_chars: int = 500_000
    max_value_size: int = 500_000
    max_range: int = 10_000
    max_iterations: int = 100_000
    max_int_bits: int = 65_536
    time_limit_ms: int = 1_000
    call_time_limit_ms: int | None = 2_000
    # CEL: an expression whose estimated work is above this goes to `cel_runner` (a separate
    # process, killed at the time limit or when it uses more than `cel_memory_mb`); without a
    # runner it is refused.
    cel_in_process_work: int = 2_000_000
    cel_memory_mb: int = 256
    cel_runner: CelRunner | None = None


DEFAULT_LIMITS = EvaluationLimits()


def _n(value: int) -> str:
    return f"{value:,}"


class Budget:
    """What one evaluation has used; each check raises LimitExceededError naming its limit."""

    __slots__ = ("deadline", "iterations", "limits", "what")

    def __init__(
        self,
        limits: EvaluationLimits = DEFAULT_LIMITS,
        *,
        what: str = "the template",
        deadline: float | None = None,
    ) -> None:
        self.limits = limits
        self.what = what
        self.iterations = 0
        # `deadline` (time.monotonic()) is the action's, when several evaluations share it.
        self.deadline = (
            deadline if deadline is not None else time.monotonic() + limits.time_limit_ms / 1000
        )

    def remaining_ms(self) -> int:
        return max(1, int((self.deadline - time.monotonic()) * 1000))

    def exceeded(self, limit: str, message: str) -> NoReturn:
        raise LimitExceededError(limit, message)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            self.exceeded(
                "time",
                f"{self.what} went over its time budget of {_n(self.limits.time_limit_ms)} ms "
                "(make it do less work: smaller loops, fewer filters over long lists)",
            )

    def tick(self) -> None:
        """One loop turn or call."""
        self.iterations += 1
        if self.iterations > self.limits.max_iterations:
            self.exceeded(
                "iterations",
                f"{self.what} went over its loop budget of {_n(self.limits.max_iterations)} "
                "iterations (loops and calls together; loop over fewer items or nest less)",
            )
        self.check_time()

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.tick()
            yield item

    def check_range(self, size: int) -> None:
        if size > self.limits.max_range:
            self.exceeded(
                "range",
                f"range() of {_n(size)} items is over the range budget of "
                f"{_n(self.limits.max_range)} (use a smaller range)",
            )

    def check_output(self, size: int) -> None:
        if size > self.limits.max_output_chars:
            self.exceeded(
                "output",
                f"{self.what} went over its output budget of "
                f"{_n(self.limits.max_output_chars)} characters (make the text shorter)",
            )


_current: ContextVar[Budget | None] = ContextVar("crmflow_evaluation_budget", default=None)


def current_budget() -> Budget:
    """The budget of the evaluation running in this thread (a fresh default one outside any)."""
    budget = _current.get()
    return budget if budget is not None else Budget()


def activate(budget: Budget) -> Any:
    """Make `budget` the current one; returns the token `deactivate` takes."""
    return _current.set(budget)


def deactivate(token: Any) -> None:
    _current.reset(token)


def _size_message(what: str, size: int, limits: EvaluationLimits, how: str) -> str:
    return (
        f"{what} would make a value of {_n(size)} characters or items, over the size budget "
        f"of {_n(limits.max_value_size)} ({how})"
    )


def check_size(size: int, what: str, limits: EvaluationLimits, how: str = "") -> None:
    """Refuse a string or list of `size` before it is made."""
    if size > limits.max_value_size:
        raise LimitExceededError(
            "size", _size_message(what, size, limits, how or "make it smaller")
        )


def int_bits_of_power(base: int, exponent: int) -> int:
    """About how many bits `base ** exponent` takes (without computing it)."""
    if exponent <= 0 or base in (0, 1, -1):
        return 1
    return math.ceil(exponent * math.log2(abs(base))) + 1


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_binop(operator: str, left: Any, right: Any, limits: EvaluationLimits) -> None:
    """Refuse an operation whose result would be over a budget, before computing it."""
    if operator == "*":
        if _is_sequence(left) and _int(right):
            check_size(len(left) * right, f"{_short(left)} * {right}", limits)
        elif _int(left) and _is_sequence(right):
            check_size(len(right) * left, f"{left} * {_short(right)}", limits)
        elif _int(left) and _int(right):
            _check_bits(left.bit_length() + right.bit_length(), f"{left} * {right}", limits)
    elif operator == "**":
        if _int(left) and _int(right):
            _check_bits(int_bits_of_power(left, right), f"{left} ** {right}", limits)
    elif operator == "+":
        if _is_sequence(left) and _is_sequence(right):
            check_size(len(left) + len(right), "joining two values with +", limits)
    elif operator == "%" and isinstance(left, str):
        check_format(left, right, limits)


def _check_bits(bits: int, what: str, limits: EvaluationLimits) -> None:
    if bits > limits.max_int_bits:
        raise LimitExceededError(
            "number",
            f"{_short_text(what)} would make a number of about {_n(bits)} bits, over the number "
            f"budget of {_n(limits.max_int_bits)} bits (use smaller numbers)",
        )


def check_format(template: str, arguments: Any, limits: EvaluationLimits) -> None:
    """A format string cannot ask for a field wider than the size budget (`'%0999999999d'`,
    `'{:>999999999}'`, or a width taken from an argument with `*` or a nested `{}`)."""
    widths = [w or "" for m in _PERCENT_SPEC.finditer(template) for w in m.groups()]
    widths += [w for spec in _BRACE_SPEC.findall(template) for w in _DIGITS.findall(spec)]
    for width in widths:
        if width == "*" or width.startswith("{"):
            _check_argument_widths(arguments, limits)
        elif width and (len(width) > 9 or int(width) > limits.max_value_size):
            check_size(
                10 ** len(width) - 1 if len(width) > 9 else int(width),
                "a format width",
                limits,
                "use a smaller width",
            )


# `%-08.3f`, `%(name)*d`: the width and the precision.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
# The spec after `:` in `{name:>20}`; a nested `{}` takes the width from an argument.
_BRACE_SPEC = re.compile(r"\{[^{}:]*:((?:[^{}]|\{[^{}]*\})*)\}")
_DIGITS = re.compile(r"\{[^{}]*\}|\d+")


def _check_argument_widths(arguments: Any, limits: EvaluationLimits) -> None:
    values: Iterable[Any]
    if isinstance(arguments, Mapping):
        values = arguments.values()
    elif isinstance(arguments, (tuple, list)):
        values = arguments
    else:
        values = (arguments,)
    for value in values:
        if _int(value) and value > limits.max_value_size:
            check_size(value, "a format width", limits, "use a smaller width")


def _short(value: Any) -> str:
    if isinstance(value, Sized) and not isinstance(value, (str, bytes)):
        return f"a list of {_n(len(value))} items"
    return _short_text(repr(value))


def _short_text(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
