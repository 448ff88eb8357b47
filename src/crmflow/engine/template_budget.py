"""A Jinja2 sandbox that keeps every render within its budget (see crmflow.engine.budget).

Jinja's sandbox stops a template from reaching Python's internals, not from using all the
memory or time there is. This environment adds what is missing, at the places Jinja lets us in:
- operators (`'a' * N`, `[x] * N`, `2 ** N`, `s + s`, `'%09999999d' % 1`) are checked before
  they compute (`intercepted_binops` / `call_binop`);
- calls (`'a'.ljust(N)`, `s.replace(...)`, `sep.join(...)`, `'{:>N}'.format(...)`, macros) are
  checked before and their results after (`call`), and count as iterations;
- `range` is replaced by one with a smaller cap, every `{% for %}` iterates through the budget
  (a code generator wraps the iterable), and filters are wrapped the same way;
- text joined inside the template (`~`, `{% set %}...{% endset %}` blocks, macro bodies) is
  measured before it is joined.
Each check also looks at the clock, so that a render stops at its time limit.

`check_constant_budgets` finds at save time what is known to go over: the same checks applied to
the constants of the template (`{{ 'a' * 10**9 }}`, `range(10**9)`, nested constant ranges).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeGuard

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg

from crmflow.engine.budget import (
    Budget,
    EvaluationLimits,
    activate,
    check_binop,
    check_format,
    check_size,
    current_budget,
    deactivate,
)
from crmflow.errors import LimitExceededError

__all__ = ["BudgetedEnvironment", "check_constant_budgets"]

_BINOPS: Mapping[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "+": operator.add,
    "%": operator.mod,
}


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _len(value: Any) -> int | None:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return None


def _check_result(value: Any, what: str, limits: EvaluationLimits) -> Any:
    size = _len(value)
    if size is not None and size > limits.max_value_size:
        check_size(size, what, limits)
    return value


# -- calls -------------------------------------------------------------------------------------

_PADDING = frozenset({"ljust", "rjust", "center", "zfill"})
_GROWING_CONTAINERS = (list, dict, set)


def check_method_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call of a str method that would make a string over the size budget."""
    method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(method, "__name__", "")
    limits = current_budget().limits
    first = args[0] if args else None
    if name in _PADDING:
        width = first if first is not None else kwargs.get("width")
        if _int(width):
            check_size(width, f".{name}({width})", limits, "use a smaller width")
    elif name == "expandtabs":
        size = first if first is not None else kwargs.get("tabsize", 8)
        if _int(size):
            check_size(owner.count("\t") * size + len(owner), ".expandtabs()", limits)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1, limits)
    elif name == "join" and isinstance(first, (list, tuple)):
        _check_join(owner, first, limits)
    elif name in ("format", "format_map"):
        check_format(owner, kwargs or (first if name == "format_map" else args), limits)


def _check_replace(text: str, old: Any, new: Any, count: Any, limits: EvaluationLimits) -> None:
    if not (isinstance(old, str) and isinstance(new, str)) or len(new) <= len(old):
        return
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if _int(count) and count >= 0:
        occurrences = min(occurrences, count)
    size = len(text) + occurrences * (len(new) - len(old))
    check_size(size, "replace()", limits, "replace less, or with shorter text")


def _check_join(
    separator: str, items: list[Any] | tuple[Any, ...], limits: EvaluationLimits
) -> None:
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        size += len(item) if isinstance(item, str) else 0
        if size > limits.max_value_size:
            check_size(size, "join()", limits, "join fewer or shorter items")


# -- filters -----------------------------------------------------------------------------------


def check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a filter whose result would be over the size budget (`|center(N)`, `|indent(N)`,
    `|batch(N, 'x')`, `|replace`, `|join`, `|format`), before it runs."""
    limits = current_budget().limits
    first = args[0] if args else None
    if name == "center":
        width = first if first is not None else kwargs.get("width", 80)
        if _int(width):
            check_size(width, f"|center({width})", limits, "use a smaller width")
    elif name == "indent":
        width = first if first is not None else kwargs.get("width", 4)
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        text_len = len(value) if isinstance(value, str) else 0
        if _int(width):
            check_size(text_len + lines * width, f"|indent({width})", limits, "indent less")
        elif isinstance(width, str):
            check_size(text_len + lines * len(width), "|indent", limits, "indent less")
    elif name in ("batch", "slice"):
        count = first if first is not None else kwargs.get("linecount", kwargs.get("slices"))
        if _int(count):
            check_size(count, f"|{name}({count})", limits, "use a smaller count")
    elif name == "replace" and isinstance(value, str) and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_replace(value, args[0], args[1], -1 if count is None else count, limits)
    elif name == "join" and isinstance(value, (list, tuple)):
        separator = first if isinstance(first, str) else kwargs.get("d", "")
        if isinstance(separator, str):
            _check_join(separator, value, limits)
    elif name == "format" and isinstance(value, str):
        check_format(value, kwargs or args, limits)


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes_context = _PassArg.from_obj(func) is not None

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        given = args[1:] if passes_context else args
        if given:
            check_filter(name, given[0], tuple(given[1:]), kwargs)
        return _check_result(func(*args, **kwargs), f"|{name}", budget.limits)

    return wrapper


# -- the environment ---------------------------------------------------------------------------


def _budgeted_range(*args: int) -> range:
    budget = current_budget()
    numbers = range(*args)
    budget.check_range(len(numbers))
    return numbers


def _measured_join(parts: Iterable[Any], what: str) -> str:
    items = parts if isinstance(parts, list) else list(parts)
    limits = current_budget().limits
    size = 0
    for item in items:
        size += len(item)
        if size > limits.max_value_size:
            check_size(size, what, limits, "make it produce less text")
    return "".join(items)


def _budgeted_concat(parts: Iterable[Any]) -> str:
    """Join a buffer (a `{% set %}` block, a macro body) after measuring it."""
    return _measured_join(parts, "a block of the template ({% set %}, a macro)")


def _budgeted_str_join(parts: Iterable[Any]) -> str:
    """`a ~ b`: measured before it is joined."""
    return _measured_join([str(part) for part in parts], "joining text with ~")


class _BudgetedCodeGenerator(CodeGenerator):
    """Every `{% for %}` iterates through the budget: `for x in environment.budget_iter(...)`."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:  # noqa: N802 - Jinja's name
        if not node.recursive:
            node = nodes.For(
                node.target,
                nodes.Call(nodes.EnvironmentAttribute("budget_iter"), [node.iter], [], None, None),
                node.body,
                node.else_,
                node.test,
                node.recursive,
                lineno=node.lineno,
            )
            node.set_environment(self.environment)
        super().visit_For(node, frame)


class _BudgetedTemplate(Template):
    @classmethod
    def from_code(
        cls,
        environment: Any,
        code: Any,
        globals: Any,
        uptodate: Callable[[], bool] | None = None,
    ) -> Any:
        namespace = {"environment": environment, "__file__": code.co_filename}
        exec(code, namespace)  # the code Jinja itself generated, as Template.from_code does
        # The generated module imported these from jinja2.runtime; its functions look them up
        # in this namespace when they run, so the measured versions take their place.
        namespace["str_join"] = _budgeted_str_join
        namespace["markup_join"] = _budgeted_str_join
        template = cls._from_namespace(environment, namespace, globals)
        template._uptodate = uptodate
        return template


class BudgetedEnvironment(SandboxedEnvironment):
    """A sandbox whose every render stays within the current budget (see the module text)."""

    code_generator_class = _BudgetedCodeGenerator
    template_class = _BudgetedTemplate
    intercepted_binops = frozenset(_BINOPS)
    # Buffers (`{% set %}` blocks, macro bodies) are joined with `environment.concat`.
    concat = staticmethod(_budgeted_concat)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = _budgeted_range
        self.filters = {name: _budgeted_filter(name, func) for name, func in self.filters.items()}

    def add_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        """Add (or replace) filters, each within the budget as the built-in ones are."""
        self.filters.update({name: _budgeted_filter(name, func) for name, func in filters.items()})

    def budget_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        return current_budget().iterate(iterable)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        check_binop(operator, left, right, budget.limits)
        return _BINOPS[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = current_budget()
        budget.tick()
        if isinstance(__obj, LoopContext) and args:
            # A recursive loop's inner turns go through the budget as the outer ones do.
            args = (budget.iterate(args[0]), *args[1:])
        check_method_call(__obj, args, kwargs)
        result = SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, _GROWING_CONTAINERS):
            _check_result(owner, f".{getattr(__obj, '__name__', 'call')}()", budget.limits)
        return _check_result(result, "a call", budget.limits)


# -- at save time ------------------------------------------------------------------------------


# Private control flow of `_constant` below, caught by its callers here: not in errors.py.
class _NotConstantError(Exception):
    pass


_BINOP_NODES: Mapping[type[nodes.BinExpr], str] = {
    nodes.Mul: "*",
    nodes.Pow: "**",
    nodes.Add: "+",
    nodes.Mod: "%",
}
_SAFE_BINOPS: Mapping[type[nodes.BinExpr], Callable[[Any, Any], Any]] = {
    nodes.Sub: operator.sub,
    nodes.Div: operator.truediv,
    nodes.FloorDiv: operator.floordiv,
}


def check_constant_budgets(
    tree: nodes.Template, limits: EvaluationLimits
) -> list[LimitExceededError]:
    """What the template's constants already put over a budget, one refusal per place."""

    found: list[LimitExceededError] = []
    token = activate(Budget(limits))
    try:
        for node in tree.find_all((nodes.BinExpr, nodes.Call, nodes.Filter, nodes.Concat)):
            try:
                _constant(node)
            except LimitExceededError as exc:
                if all(str(exc) != str(other) for other in found):
                    found.append(exc)
            except Exception:  # not a constant, or an error the render will report
                continue
        _check_nested_ranges(tree, 1, limits, found)
    finally:
        deactivate(token)
    return found


def _constant(node: nodes.Node) -> Any:
    """The value of a constant expression, computed under the budget (which refuses first)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return [_constant(item) for item in node.items]
    if isinstance(node, nodes.Neg):
        return -_constant(node.node)
    if isinstance(node, nodes.BinExpr):
        left, right = _constant(node.left), _constant(node.right)
        binop = _BINOP_NODES.get(type(node))
        if binop is not None:
            limits = current_budget().limits
            check_binop(binop, left, right, limits)
            return _BINOPS[binop](left, right)
        safe = _SAFE_BINOPS.get(type(node))
        if safe is None:
            raise _NotConstantError
        return safe(left, right)
    if isinstance(node, nodes.Concat):
        return _budgeted_str_join([_constant(item) for item in node.nodes])
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
        if node.node.name == "range" and not node.kwargs:
            return _budgeted_range(*[_constant(arg) for arg in node.args])
        raise _NotConstantError
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        # A method of a constant text (`'a'.ljust(10**9)`): checked, never called here.
        owner = _constant(node.node.node)
        method = getattr(owner, node.node.attr, None) if isinstance(owner, str) else None
        if method is not None and not node.dyn_args and not node.dyn_kwargs:
            args = tuple(_constant(arg) for arg in node.args)
            check_method_call(method, args, _constant_kwargs(node))
        raise _NotConstantError
    if isinstance(node, nodes.Filter) and node.node is not None:
        args = tuple(_constant(arg) for arg in node.args)
        kwargs = _constant_kwargs(node)
        try:
            value = _constant(node.node)
        except _NotConstantError:
            value = None  # a width alone (`|center(10**9)`) is enough to refuse
        check_filter(node.name, value, args, kwargs)
        raise _NotConstantError  # filters are not computed at save time
    raise _NotConstantError


def _constant_kwargs(node: nodes.Call | nodes.Filter) -> dict[str, Any]:
    return {kw.key: _constant(kw.value) for kw in node.kwargs if isinstance(kw, nodes.Keyword)}


def _check_nested_ranges(
    node: nodes.Node, multiplier: int, limits: EvaluationLimits, found: list[LimitExceededError]
) -> None:
    """Loops over constant ranges inside each other: their product of turns is known."""
    for child in node.iter_child_nodes():
        inner = multiplier
        if isinstance(child, nodes.For):
            size = _constant_range_size(child.iter)
            if size is not None:
                inner = multiplier * size
                if inner > limits.max_iterations:
                    message = (
                        f"these loops inside each other would turn {inner:,} times, over the "
                        f"loop budget of {limits.max_iterations:,} iterations (loop over fewer "
                        "items or nest less)"
                    )
                    if all(str(other) != message for other in found):
                        found.append(LimitExceededError("iterations", message))
                    continue
        _check_nested_ranges(child, inner, limits, found)


def _constant_range_size(node: nodes.Node) -> int | None:
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)):
        return None
    if node.node.name != "range" or node.kwargs:
        return None
    try:
        return len(range(*[_constant(arg) for arg in node.args]))
    except Exception:  # not constant, or refused on its own (reported once, elsewhere)
        return None
