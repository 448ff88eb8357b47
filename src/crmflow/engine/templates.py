"""Jinja2 templates of a flow (email subjects and bodies, messages, field values), sandboxed.

A template may use these variables (see docs/flows.md):
  record  the record's fields, plus id, type, owner, created_at, updated_at
  flow    key, name, owner, controller
  step    key, name, responsible, deadline
  change  the change that woke the flow: kind, fields, before, after, by, at
  now     the current date and time in the flow's zone; today: the current date
  vars    the email action's `variables` (also usable by their bare names)
Unknown names are refused when the flow is saved, and `StrictUndefined` refuses them at run time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, filters, meta, nodes
from jinja2.exceptions import TemplateError
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment

from crmflow.engine.budget import (
    DEFAULT_LIMITS,
    Budget,
    EvaluationLimits,
    activate,
    deactivate,
)
from crmflow.engine.conditions import RECORD_META_FIELDS, did_you_mean
from crmflow.engine.template_budget import BudgetedEnvironment, check_constant_budgets
from crmflow.engine.template_filters import (
    FORMAT_FILTERS,
    check_currency,
    check_format,
    check_locale,
    empty_as_text,
    end_formatting,
    start_formatting,
)
from crmflow.errors import LimitExceededError, OutputTooLargeError

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_TEMPLATE_CHARS",
    "TEMPLATE_ATTRIBUTES",
    "TEMPLATE_VARIABLES",
    "OutputTooLargeError",
    "TemplateIssue",
    "check_template",
    "environment",
    "is_template",
    "parsed_tree",
    "render_template",
    "simple_render",
    "template_names",
]

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 500_000
TEMPLATE_VARIABLES = frozenset({"record", "flow", "step", "change", "now", "today", "vars"})
# Attributes each object offers; `record` is checked against the record type instead.
TEMPLATE_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "flow": frozenset({"key", "name", "owner", "controller"}),
    "step": frozenset({"key", "name", "responsible", "deadline"}),
    "change": frozenset({"kind", "fields", "before", "after", "by", "at"}),
}


@dataclass(frozen=True)
class TemplateIssue:
    message: str
    hint: str = ""


_ENVIRONMENT = BudgetedEnvironment(
    undefined=StrictUndefined, autoescape=False, finalize=empty_as_text
)
_ENVIRONMENT.add_filters(FORMAT_FILTERS)


def environment() -> SandboxedEnvironment:
    """The one sandboxed environment: templates cannot reach Python internals or undefined names."""
    return _ENVIRONMENT


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render_template(
    text: str,
    variables: Mapping[str, Any],
    *,
    max_chars: int | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
    budget: Budget | None = None,
    locales: tuple[str | None, ...] = (),
    zone: tzinfo | None = None,
) -> str:
    """Render `text` within `limits` (or the `budget` of the action it belongs to); the
    `| date`, `| number`... filters format in the first of `locales` that is known (see
    engine.template_filters) and date-times in `zone`.

    Raises TemplateError on an undefined name, ValueError when the template is too long, and
    LimitExceededError when the render goes over a budget (output, size, loops, time).
    """
    if len(text) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"the template is longer than {MAX_TEMPLATE_CHARS} characters")
    compiled = _compiled(text)
    template = compiled.template
    # The globals are merged into the variables once per template, not once per render: a
    # "shared" context takes the dictionary as it is (Jinja otherwise copies its globals, a chain
    # of mappings, twice per render: most of the time of a short template). Jinja keeps the
    # globals' names only for `{% import %}`, which a template without a loader cannot use.
    context = new_context(
        _ENVIRONMENT,
        template.name,
        template.blocks,
        {**compiled.globals, **variables},
        shared=True,
    )
    if budget is None:
        budget = Budget(limits)
    cap = budget.limits.max_output_chars if max_chars is None else max_chars
    size = 0
    parts: list[str] = []
    token = activate(budget)
    shown_as = start_formatting(locales, zone)
    try:
        # Streaming lets a runaway loop stop at the cap instead of filling memory first.
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > cap:
                raise OutputTooLargeError(
                    "output",
                    f"the template went over its output budget of {cap:,} characters "
                    "(make the text shorter)",
                )
            parts.append(chunk)
            # Every hook (loops, calls, operators, filters) looks at the clock already; plain
            # text between them only needs an occasional look.
            if not len(parts) & 31:
                budget.check_time()
    except RecursionError:
        raise LimitExceededError(
            "nesting",
            "the template calls itself too deeply (a macro or a recursive loop without an end)",
        ) from None
    finally:
        end_formatting(shown_as)
        deactivate(token)
    return "".join(parts)


def template_names(text: str) -> frozenset[str]:
    """The variables `text` reads (so that only those are built for it)."""
    return _compiled(text).names


@dataclass(frozen=True)
class _Compiled:
    template: Template
    names: frozenset[str]
    globals: Mapping[str, Any]


# Parsing and compiling a template to Python costs about a millisecond, rendering a compiled one
# a few microseconds: a worker renders the same few templates of a flow for every enrollment, so
# compiled templates are kept by source text. Bounded, so that a database with very many distinct
# templates cannot grow the worker's memory without limit; a compiled Template holds no per-render
# state, so sharing one between threads is safe.
_CACHE_SIZE = 4096


@lru_cache(maxsize=_CACHE_SIZE)
def _compiled(text: str) -> _Compiled:
    tree = _ENVIRONMENT.parse(text)
    template = _ENVIRONMENT.from_string(tree)
    names = frozenset(meta.find_undeclared_variables(tree))
    return _Compiled(template, names, dict(template.globals))


# -- simple templates ----------------------------------------------------------------------------
#
# Most templates of a flow are text around a few record fields (`Dear {{ record.first_name }}`,
# `{{ record.name | upper }}`), rendered for every record of every batch. Jinja's render of one
# costs tens of microseconds (a context, the budget's context variables, a generator); joining
# the text and the field values directly costs about one. `simple_render` does that for such a
# template when each field it reads holds text, and answers None for anything else (another
# value type, a missing field, a budget that might refuse), which the caller then renders with
# Jinja: the output is the same either way.

# Filters whose Jinja function is, for text, this str method (`soft_str(s).upper()`...).
_TEXT_FILTERS: dict[str, tuple[Callable[..., Any], Callable[[str], str]]] = {
    "upper": (filters.do_upper, str.upper),
    "lower": (filters.do_lower, str.lower),
    "trim": (filters.do_trim, str.strip),
}

# A part of a simple template: its text, or (record field, the filter's str method or None).
_Part = str | tuple[str, Callable[[str], str] | None]


@dataclass(frozen=True)
class _SimplePlan:
    parts: tuple[_Part, ...]
    filters: int  # filters applied: each is one turn of the render's loop budget


def _field_part(node: nodes.Node) -> tuple[str, Callable[[str], str] | None] | None:
    """`record.<field>` or `record.<field> | upper` (lower, trim) as a part; None otherwise."""
    method: Callable[[str], str] | None = None
    if isinstance(node, nodes.Filter):
        known = _TEXT_FILTERS.get(node.name)
        wrapped = getattr(_ENVIRONMENT.filters.get(node.name), "__wrapped__", None)
        if known is None or wrapped is not known[0] or node.node is None:
            return None
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        method, node = known[1], node.node
    if not (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "record"
        and node.ctx == "load"
    ):
        return None
    name = node.attr
    # A name a dict has as an attribute (`items`, `values`) is that attribute in Jinja, and the
    # fields every record has are not among its values.
    if name.startswith("_") or hasattr({}, name) or name in RECORD_META_FIELDS:
        return None
    return name, method


@lru_cache(maxsize=_CACHE_SIZE)
def _simple_plan(text: str) -> _SimplePlan | None:
    """How to render `text` without Jinja, or None when it is not text around record fields."""
    if len(text) > MAX_TEMPLATE_CHARS:
        return None
    try:
        tree = _ENVIRONMENT.parse(text)
    except TemplateError:
        return None
    parts: list[_Part] = []
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(empty_as_text(node.data))  # what Jinja's finalize makes of it
                continue
            part = _field_part(node)
            if part is None:
                return None
            parts.append(part)
    return _SimplePlan(tuple(parts), sum(1 for p in parts if type(p) is tuple and p[1]))


def simple_render(
    text: str,
    values: Mapping[str, Any],
    *,
    limits: EvaluationLimits = DEFAULT_LIMITS,
    deadline: float | None = None,
) -> str | None:
    """`text` rendered against a record's `values` as `render_template` would, when it is a
    simple template (text around record fields, optionally `| upper`, `| lower`, `| trim`) and
    every field it reads holds text; else None (render it with `render_template`).

    `deadline` (time.monotonic()) is the budget's: a filter looks at the clock in Jinja, so a
    template with one is left to Jinja once it has passed (it raises there)."""
    plan = _simple_plan(text)
    if plan is None:
        return None
    if plan.filters and (
        plan.filters > limits.max_iterations
        or (deadline is not None and time.monotonic() > deadline)
    ):
        return None
    out: list[str] = []
    for part in plan.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, method = part
        value = values.get(name)
        if type(value) is not str:
            return None  # missing, empty or not text: Jinja's rules (finalize, formatting...)
        if method is not None:
            value = method(value)
            if len(value) > limits.max_value_size:
                return None
        out.append(value)
    rendered = "".join(out)
    return rendered if len(rendered) <= limits.max_output_chars else None


@lru_cache(maxsize=256)
def parsed_tree(text: str) -> nodes.Template:
    """The template's syntax tree (raises TemplateSyntaxError), kept for the validator's other
    look at the same text (engine.template_empties); callers must not change it."""
    return _ENVIRONMENT.parse(text)


def check_template(
    text: str,
    *,
    record_fields: Collection[str] | None,
    extra_variables: Iterable[str] = (),
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> list[TemplateIssue]:
    """Every problem with a template: syntax, size, unknown variables and record fields, and
    what is known to go over a budget before it runs (`'a' * 10**9`, `range(10**9)`)."""
    if len(text) > MAX_TEMPLATE_CHARS:
        return [TemplateIssue(f"the template is longer than {MAX_TEMPLATE_CHARS} characters")]
    try:
        tree = parsed_tree(text)
    except TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
        return [
            TemplateIssue(
                f"the template does not parse: {exc.message}{where}",
                "Jinja2 looks like: Dear {{ record.first_name }}",
            )
        ]
    except TemplateError as exc:  # pragma: no cover - parse only raises syntax errors
        return [TemplateIssue(f"the template does not parse: {exc}")]
    extra = set(extra_variables)
    allowed = TEMPLATE_VARIABLES | extra | set(_ENVIRONMENT.globals)
    issues: list[TemplateIssue] = []
    local_names = _assigned_names(tree)
    for name_node in tree.find_all(nodes.Name):
        name = name_node.name
        if name_node.ctx != "load" or name in allowed or name in local_names:
            continue
        issue = TemplateIssue(
            f"unknown template variable {name!r}",
            did_you_mean(name, allowed) or f"known variables: {', '.join(sorted(allowed))}",
        )
        if issue not in issues:
            issues.append(issue)
    for root, attribute in _attributes(tree):
        if root in local_names:
            continue
        found = _check_attribute(root, attribute, record_fields, extra)
        if found is not None and found not in issues:
            issues.append(found)
    for found in _filter_issues(tree):
        if found not in issues:
            issues.append(found)
    for refusal in check_constant_budgets(tree, limits):
        issue = TemplateIssue(refusal.message, "a template must stay within its budgets")
        if issue not in issues:
            issues.append(issue)
    return issues


def _filter_issues(tree: nodes.Template) -> list[TemplateIssue]:
    """Filters and tests Jinja does not know, and the constant arguments of the formatting
    filters (`| date('long')`, `| currency('EUR')`, `locale='fr_FR'`) that cannot work."""
    issues: list[TemplateIssue] = []
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = _ENVIRONMENT.filters if isinstance(node, nodes.Filter) else _ENVIRONMENT.tests
        what = "filter" if isinstance(node, nodes.Filter) else "test"
        if node.name not in known:
            issues.append(
                TemplateIssue(
                    f"unknown template {what} {node.name!r}",
                    did_you_mean(node.name, known) or "see docs/flows.md, Templates",
                )
            )
            continue
        problem = _argument_problem(node) if isinstance(node, nodes.Filter) else None
        if problem is not None:
            issues.append(TemplateIssue(f"| {node.name}: {problem}", _FORMAT_HINT))
    return issues


_FORMAT_HINT = "e.g. | date('long'), | number, | currency('EUR'), locale='fr_FR'"
# The checks of each formatting filter's positional arguments, then of `locale=`.
_ARGUMENT_CHECKS = {
    "date": (check_format, check_locale),
    "datetime": (check_format, check_locale),
    "time": (check_format, check_locale),
    "number": (check_locale,),
    "currency": (check_currency, check_locale),
}


def _argument_problem(node: nodes.Filter) -> str | None:
    checks = _ARGUMENT_CHECKS.get(node.name)
    if checks is None:
        return None
    given = [(check, arg) for check, arg in zip(checks, node.args, strict=False)]
    given += [(check_locale, kw.value) for kw in node.kwargs if kw.key == "locale"]
    for check, arg in given:
        if isinstance(arg, nodes.Const):
            try:
                check(arg.value)
            except ValueError as exc:
                return str(exc)
    return None


def _assigned_names(tree: nodes.Template) -> set[str]:
    names: set[str] = set()
    for node in tree.find_all((nodes.For, nodes.Assign, nodes.Macro, nodes.AssignBlock)):
        target = getattr(node, "target", None)
        if target is not None:
            names |= {n.name for n in target.find_all(nodes.Name)}
            if isinstance(target, nodes.Name):
                names.add(target.name)
        if isinstance(node, nodes.Macro):
            names.add(node.name)
            names |= {arg.name for arg in node.args}
    if any(True for _ in tree.find_all(nodes.For)):
        names.add("loop")
    return names


def _attributes(tree: nodes.Template) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for getattr_node in tree.find_all(nodes.Getattr):
        if isinstance(getattr_node.node, nodes.Name):
            found.append((getattr_node.node.name, getattr_node.attr))
    for getitem in tree.find_all(nodes.Getitem):
        key = getitem.arg
        if (
            isinstance(getitem.node, nodes.Name)
            and isinstance(key, nodes.Const)
            and isinstance(key.value, str)
        ):
            found.append((getitem.node.name, key.value))
    return found


def _check_attribute(
    root: str, attribute: str, record_fields: Collection[str] | None, extra: Collection[str]
) -> TemplateIssue | None:
    if root == "record":
        if record_fields is None:
            return None
        allowed = set(record_fields) | RECORD_META_FIELDS
    elif root == "vars":
        allowed = set(extra)
    elif root in TEMPLATE_ATTRIBUTES:
        allowed = set(TEMPLATE_ATTRIBUTES[root])
    else:
        return None
    if attribute in allowed:
        return None
    what = "the record type has no field" if root == "record" else f"{root} has no attribute"
    return TemplateIssue(
        f"{what} {attribute!r} ({root}.{attribute})",
        did_you_mean(attribute, allowed) or f"known: {', '.join(sorted(allowed)) or 'none'}",
    )
