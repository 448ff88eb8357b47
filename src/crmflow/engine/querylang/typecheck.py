"""Stage 2 of the filter language: check parsed nodes against a `RecordType` (known fields,
operators that fit each field's type, values of the right type, well-formed dates) and return a
`CheckedFilter`, or raise InvalidInputError with every problem at its path.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
from collections.abc import Callable, Collection
from typing import TypeVar

from crmflow.engine.numbers import not_finite, whole_number
from crmflow.engine.querylang.checked import (
    BUILTIN_FIELDS,
    CheckedCondition,
    CheckedGroup,
    CheckedNode,
    FieldRef,
    Operand,
    Username,
)
from crmflow.engine.querylang.parse import (
    LIST_OPS,
    NO_VALUE_OPS,
    Condition,
    FilterNode,
    Group,
    Op,
    describe,
)
from crmflow.engine.querylang.resolve import CheckedFilter
from crmflow.engine.querylang.timevalues import parse_time_value
from crmflow.engine.recordtypes import FieldType, RecordType
from crmflow.errors import InvalidInputError, Problem

__all__ = ["ALLOWED_OPS", "check_filter"]

_N = TypeVar("_N", int, float)

_EQUALITY_OPS = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.IS_EMPTY, Op.IS_NOT_EMPTY})
_ORDER_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.BETWEEN})
_TEXT_OPS = frozenset({Op.CONTAINS, Op.STARTS_WITH})
ALLOWED_OPS: dict[FieldType, frozenset[Op]] = {
    FieldType.TEXT: _EQUALITY_OPS | _TEXT_OPS,
    FieldType.EMAIL: _EQUALITY_OPS | _TEXT_OPS,
    FieldType.PHONE: _EQUALITY_OPS | _TEXT_OPS,
    FieldType.CHOICE: _EQUALITY_OPS,
    FieldType.NUMBER: _EQUALITY_OPS | _ORDER_OPS,
    FieldType.DATE: _EQUALITY_OPS | _ORDER_OPS,
    FieldType.DATETIME: _EQUALITY_OPS | _ORDER_OPS,
    FieldType.BOOL: frozenset({Op.EQ, Op.NE, Op.IS_EMPTY, Op.IS_NOT_EMPTY}),
    FieldType.USER: _EQUALITY_OPS,
    FieldType.REFERENCE: _EQUALITY_OPS,
    FieldType.FILE: frozenset(),  # its value is never set: the file is kept beside the record
}

_NEVER_EMPTY_COLUMNS = frozenset({"id", "created_at", "updated_at"})


def check_filter(
    node: FilterNode,
    rtype: RecordType,
    *,
    existing_users: Callable[[set[str]], Collection[str]] | None = None,
) -> CheckedFilter:
    """Check a parsed filter against `rtype`; raise InvalidInputError listing every problem.

    `existing_users`, when given, receives the usernames the filter names and returns those that
    exist (the caller knows the users; this module reads nothing), so unknown ones are reported
    with the other problems.
    """
    problems: list[Problem] = []
    usernames: list[tuple[str, str]] = []
    root = _check_node(node, rtype, problems, usernames)
    if existing_users is not None and usernames:
        found = set(existing_users({name for _, name in usernames}))
        problems.extend(
            Problem(path, f"no user named {name!r}", "see `crmflow users list`")
            for path, name in usernames
            if name not in found
        )
        problems.sort(key=lambda p: _path_key(p.path))
    if problems:
        raise InvalidInputError("the filter", problems)
    return CheckedFilter(rtype.key, root)


def _path_key(path: str) -> list[tuple[int, str]]:
    """Orders `a.b[10]` after `a.b[2]`, so problems read top to bottom."""
    return [
        (int(part), "") if _digits(part) else (-1, part) for part in re.split(r"[.\[\]]+", path)
    ]


def _check_node(
    node: FilterNode,
    rtype: RecordType,
    problems: list[Problem],
    usernames: list[tuple[str, str]],
) -> CheckedNode:
    if isinstance(node, Group):
        items = tuple(_check_node(item, rtype, problems, usernames) for item in node.items)
        return CheckedGroup(node.kind, items)
    return _check_condition(node, rtype, problems, usernames)


def _field_ref(rtype: RecordType, key: str) -> FieldRef | None:
    if key in BUILTIN_FIELDS:
        return BUILTIN_FIELDS[key]
    fdef = rtype.field(key)
    if fdef is None:
        return None
    return FieldRef(fdef.key, fdef.type, None, fdef.choices)


def _check_condition(
    cond: Condition,
    rtype: RecordType,
    problems: list[Problem],
    usernames: list[tuple[str, str]],
) -> CheckedCondition:
    fref = _field_ref(rtype, cond.field)
    if fref is None:
        known = [*rtype.field_keys, *BUILTIN_FIELDS]
        close = difflib.get_close_matches(cond.field, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(
            Problem(
                f"{cond.path}.field",
                f"unknown field {cond.field!r} for record type {rtype.key!r}",
                f"{hint}known fields: {', '.join(known)}",
            )
        )
        return CheckedCondition(FieldRef(cond.field, FieldType.TEXT), cond.op, (), cond.path)
    allowed = ALLOWED_OPS[fref.type]
    if fref.column in _NEVER_EMPTY_COLUMNS:
        allowed = allowed - NO_VALUE_OPS
    if cond.op not in allowed:
        kind = "built-in" if fref.column else fref.type.value
        problems.append(
            Problem(
                f"{cond.path}.op",
                f"'{cond.op.value}' does not apply to {cond.field!r} ({kind} field)",
                f"use one of: {', '.join(o.value for o in Op if o in allowed)}",
            )
        )
        return CheckedCondition(fref, cond.op, (), cond.path)
    if cond.op in NO_VALUE_OPS:
        return CheckedCondition(fref, cond.op, (), cond.path)
    value_path = f"{cond.path}.value"
    if cond.op in LIST_OPS or cond.op is Op.BETWEEN:
        assert isinstance(cond.value, list | tuple)
        raws = [(f"{value_path}[{i}]", v) for i, v in enumerate(cond.value)]
    else:
        raws = [(value_path, cond.value)]
    operands: list[Operand] = []
    for path, raw in raws:
        try:
            operand = _operand(fref, raw)
        except ValueError as exc:
            problems.append(Problem(path, str(exc)))
            continue
        if isinstance(operand, Username):
            usernames.append((path, operand.name))
        operands.append(operand)
    return CheckedCondition(fref, cond.op, tuple(operands), cond.path)


def _operand(fref: FieldRef, raw: object) -> Operand:
    kind = fref.type
    if kind in (FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE):
        if isinstance(raw, str):
            return raw
        if kind is FieldType.TEXT and isinstance(raw, int | float) and not isinstance(raw, bool):
            return str(raw)
        raise ValueError(f"expected text for {fref.key!r}, got {describe(raw)}")
    if kind is FieldType.CHOICE:
        if isinstance(raw, str) and raw in fref.choices:
            return raw
        close = difflib.get_close_matches(str(raw), fref.choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{raw!r} is not a choice of {fref.key!r}{hint}; choices: {', '.join(fref.choices)}"
        )
    if kind is FieldType.NUMBER:
        if fref.column == "id":
            return _record_id(fref, raw)
        number: int | float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str):
            with contextlib.suppress(ValueError):  # not a number: said below
                number = float(raw.strip()) if "." in raw else int(raw.strip())
        if not_finite(number):
            raise ValueError(
                f"{raw!r} is not a finite number (write digits for {fref.key!r}, e.g. 1000)"
            )
        if number is not None:
            return _in_range(number)
        raise ValueError(f"expected a number for {fref.key!r}, got {describe(raw)}")
    if kind is FieldType.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ValueError(f"expected true or false for {fref.key!r}, got {describe(raw)}")
    if kind in (FieldType.DATE, FieldType.DATETIME):
        return parse_time_value(raw)
    if kind is FieldType.USER:
        if isinstance(raw, str) and raw.strip() and not _digits(raw.strip()):
            return Username(raw.strip())
        return _record_id(fref, raw, what="a user id or a username")
    return _record_id(fref, raw)


def _record_id(fref: FieldRef, raw: object, what: str = "a record id") -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return _in_range(raw)
    if isinstance(raw, str) and _digits(raw.strip()) and int(raw) > 0:
        return _in_range(int(raw))
    raise ValueError(f"expected {what} for {fref.key!r}, got {describe(raw)}")


def _in_range(number: _N) -> _N:
    """`number`, unless it is an integer past what a float holds (1.8e308): stored numbers are
    compared as floats, and no float is that large (SQLite cannot even bind it)."""
    if isinstance(number, int) and abs(number) > _LARGEST:
        raise ValueError("the number is out of range: numbers run to about ±1.8e308")
    return number


_LARGEST = int(sys.float_info.max)


def _digits(text: str) -> bool:
    """Whether int() reads `text` as a whole number (`engine.numbers.whole_number`)."""
    return whole_number(text, max_digits=4_300) is not None
