"""The exception tree drawn in `crmflow.errors`' docstring is the real one: it names every
exception class the module defines, each under its own base class, with its HTTP status."""

from __future__ import annotations

import inspect
import re

from crmflow import errors
from crmflow.services import flows, imports, lifecycle

_LINE = re.compile(r"^(?P<indent> +)(?P<name>[A-Z]\w*Error)\s+(?P<status>\d{3})\b")


def _drawn() -> list[tuple[int, str, int]]:
    """(depth, class name, status) of each line of the drawing, in order."""
    lines = [_LINE.match(line) for line in (errors.__doc__ or "").splitlines()]
    found = [m for m in lines if m is not None]
    base = min(len(m["indent"]) for m in found)
    return [((len(m["indent"]) - base) // 4, m["name"], int(m["status"])) for m in found]


def _defined() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }


def test_the_drawing_names_every_exception_class_of_the_module_once() -> None:
    names = [name for _, name, _ in _drawn()]
    assert sorted(names) == sorted(_defined())
    assert len(names) == len(set(names))


def test_each_class_is_drawn_under_its_base_class_with_its_status() -> None:
    defined = _defined()
    parents: list[str] = []  # the chain of classes above the current line
    for depth, name, status in _drawn():
        parents = parents[:depth]
        cls = defined[name]
        expected_base = parents[-1] if parents else None
        base = cls.__base__
        actual_base = base.__name__ if base is not None and base in defined.values() else None
        assert actual_base == expected_base, name
        assert getattr(cls, "status_code", None) == status, name
        parents.append(name)


def test_the_errors_raised_by_services_are_the_ones_the_services_export() -> None:
    # The services keep their names for these (callers catch `flows.ConfirmationRequiredError`).

    assert flows.ConfirmationRequiredError is errors.ConfirmationRequiredError
    assert lifecycle.MovesRequiredError is errors.MovesRequiredError
    assert imports.ImportInterruptedError is errors.ImportInterruptedError
