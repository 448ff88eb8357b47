"""The exception tree drawn in `crmflow.errors`' docstring is the real one: it names every
exception class the module defines, each under its own base class, with its HTTP status; and
no other module of crmflow defines an exception class (but private control flow that never
leaves its module)."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import crmflow
from crmflow import errors
from crmflow.engine import budget, templates
from crmflow.engine.steps import scope
from crmflow.services import flows, imports, lifecycle

# `    Name(BuiltinBase)    400  ...`: the built-in base on a root line, `-` for no HTTP status.
_LINE = re.compile(
    r"^(?P<indent> +)(?P<name>[A-Z]\w*Error)(?:\((?P<builtin>\w+)\))?\s+(?P<status>\d{3}|-)(?:\s|$)"
)

# The exception classes allowed outside errors.py, each with why: private control flow, raised
# and caught inside its own module, never seen by a caller.
_PRIVATE_CONTROL_FLOW = {
    "_RefusedError": "services/imports.py: rolls back an all-or-nothing import",
    "_NotConstantError": "engine/template_budget.py: a template part not folded at save time",
    "_NumberTooLongError": "engine/source: a JSON number too long to read, caught where raised",
    "_NotBuiltError": "services/condition_builder.py: a CEL the filter builder cannot show",
}


def _drawn() -> list[tuple[int, str, int | None, str | None]]:
    """(depth, class name, status or None, built-in base drawn) of each line of the drawing."""
    lines = [_LINE.match(line) for line in (errors.__doc__ or "").splitlines()]
    found = [m for m in lines if m is not None]
    base = min(len(m["indent"]) for m in found)
    return [
        (
            (len(m["indent"]) - base) // 4,
            m["name"],
            None if m["status"] == "-" else int(m["status"]),
            m["builtin"],
        )
        for m in found
    ]


def _defined() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }


def test_the_drawing_names_every_exception_class_of_the_module_once() -> None:
    names = [name for _, name, _, _ in _drawn()]
    assert sorted(names) == sorted(_defined())
    assert len(names) == len(set(names))


def test_each_class_is_drawn_under_its_base_class_with_its_status() -> None:
    defined = _defined()
    parents: list[str] = []  # the chain of classes above the current line
    for depth, name, status, builtin in _drawn():
        parents = parents[:depth]
        cls = defined[name]
        base = cls.__base__
        assert base is not None
        if parents:
            assert base is defined[parents[-1]], name
            assert builtin is None, name
        else:
            # A root: its base is a built-in exception, drawn in parentheses.
            assert base.__name__ == builtin and getattr(builtins, builtin) is base, name
        assert getattr(cls, "status_code", None) == status, name
        parents.append(name)


def test_the_errors_raised_by_services_are_the_ones_the_services_export() -> None:
    # The services keep their names for these (callers catch `flows.ConfirmationRequiredError`).

    assert flows.ConfirmationRequiredError is errors.ConfirmationRequiredError
    assert lifecycle.MovesRequiredError is errors.MovesRequiredError
    assert imports.ImportInterruptedError is errors.ImportInterruptedError


def test_the_engine_modules_still_export_the_errors_they_raise() -> None:
    assert scope.EvaluationError is errors.EvaluationError
    assert scope.BudgetExceededError is errors.BudgetExceededError
    assert budget.CelEvaluationError is errors.CelEvaluationError
    assert templates.OutputTooLargeError is errors.OutputTooLargeError


def _exception_classes_outside_errors() -> dict[str, str]:
    """Class name -> module (relative to the package) of every class defined in crmflow outside
    errors.py whose base is an exception: a built-in one, one of crmflow's (by name, to a fixed
    point), or a library's (its name ends in Error, Exception or Exit)."""
    package = Path(crmflow.__file__).parent
    bases: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = [
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                ]
                bases.setdefault(node.name, []).extend(names)
                if module != "errors.py":
                    where[node.name] = module

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return True
        if name not in bases:
            return name.endswith(("Error", "Exception", "Exit"))
        return name not in seen and any(is_exception(b, seen | {name}) for b in bases[name])

    return {name: module for name, module in where.items() if is_exception(name)}


def test_no_module_but_errors_defines_an_exception_class_except_private_control_flow() -> None:
    found = _exception_classes_outside_errors()

    assert {n: m for n, m in found.items() if n not in _PRIVATE_CONTROL_FLOW} == {}
    # The allowed ones still exist, and are private to their module.
    assert set(_PRIVATE_CONTROL_FLOW) <= set(found)
    assert all(name.startswith("_") for name in _PRIVATE_CONTROL_FLOW)
