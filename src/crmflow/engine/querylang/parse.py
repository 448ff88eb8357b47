"""Stage 1 of the filter language: plain data (YAML, JSON, an API body) to `Condition` and
`Group` nodes, with every structural problem reported at its path (`filter.all[1].any[0].op`).

Nothing here knows the record type: whether a field exists or a value fits it is `typecheck`'s
business, so a filter can be read (and shown back with `filter_to_data`) before it is checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from crmflow.engine.numbers import not_finite
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "LIST_OPS",
    "NO_VALUE_OPS",
    "Condition",
    "FilterNode",
    "Group",
    "GroupKind",
    "Op",
    "describe",
    "filter_to_data",
    "parse_filter",
]

GroupKind = Literal["all", "any", "not"]


class Op(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    NOT_IN = "not in"
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    IS_EMPTY = "is empty"
    IS_NOT_EMPTY = "is not empty"
    BETWEEN = "between"


_OP_ALIASES = {"==": Op.EQ, "<>": Op.NE, "startswith": Op.STARTS_WITH}
NO_VALUE_OPS = frozenset({Op.IS_EMPTY, Op.IS_NOT_EMPTY})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})


@dataclass(frozen=True)
class Condition:
    """One test on one field, as written (values not yet checked against the field's type)."""

    field: str
    op: Op
    value: object = None
    path: str = dc_field(default="", compare=False)


@dataclass(frozen=True)
class Group:
    """`all` (and), `any` (or) or `not` (exactly one item) over conditions and groups."""

    kind: GroupKind
    items: tuple[FilterNode, ...]
    path: str = dc_field(default="", compare=False)


FilterNode = Condition | Group


def parse_filter(data: object, *, path: str = "filter") -> FilterNode:
    """Parse plain data into a filter; raise InvalidInputError listing every structural problem.

    `None`, `{}` and `all: []` match every record of the type. A bare list means `all`.
    """
    problems: list[Problem] = []
    node = _parse_node(data, path, problems)
    if problems:
        raise InvalidInputError("the filter", problems)
    return node


def _parse_node(data: object, path: str, problems: list[Problem]) -> FilterNode:
    if data is None:
        return Group("all", (), path)
    if isinstance(data, list | tuple):
        return _parse_items("all", data, path, path, problems)
    if not isinstance(data, Mapping):
        problems.append(
            Problem(
                path,
                f"expected a group or a condition, got {describe(data)}",
                "a group is {all: [...]}, {any: [...]} or {not: {...}}; "
                "a condition is {field: ..., op: ..., value: ...}",
            )
        )
        return Group("all", (), path)
    keys = [str(k) for k in data]
    if not keys:
        return Group("all", (), path)
    group_keys = [k for k in keys if k in ("all", "any", "not")]
    if group_keys:
        if len(keys) > 1:
            others = ", ".join(k for k in keys if k != group_keys[0])
            problems.append(
                Problem(
                    path,
                    f"a group holds exactly one of all/any/not, found also: {others}",
                    "nest the other part in its own item of the group",
                )
            )
        kind = group_keys[0]
        inner = data[kind]
        if kind == "not":
            if not isinstance(inner, Mapping):
                problems.append(
                    Problem(
                        f"{path}.not",
                        f"expected one group or condition, got {describe(inner)}",
                        "write not: {field: ..., op: ..., value: ...} or not: {any: [...]}",
                    )
                )
                return Group("not", (Group("all", ()),), path)
            return Group("not", (_parse_node(inner, f"{path}.not", problems),), path)
        if not isinstance(inner, list | tuple):
            problems.append(
                Problem(
                    f"{path}.{kind}",
                    f"expected a list of conditions and groups, got {describe(inner)}",
                )
            )
            return Group("all", (), path)
        return _parse_items(kind, inner, path, f"{path}.{kind}", problems)  # type: ignore[arg-type]
    if "field" in keys or "op" in keys or "value" in keys:
        return _parse_condition(data, path, problems)
    problems.append(
        Problem(
            path,
            f"unknown keys: {', '.join(keys)}",
            "a group is {all: [...]}, {any: [...]} or {not: {...}}; "
            "a condition is {field: ..., op: ..., value: ...}",
        )
    )
    return Group("all", (), path)


def _parse_items(
    kind: GroupKind,
    items: Sequence[object],
    path: str,
    items_path: str,
    problems: list[Problem],
) -> Group:
    nodes = tuple(_parse_node(item, f"{items_path}[{i}]", problems) for i, item in enumerate(items))
    return Group(kind, nodes, path)


def _normalise_op(raw: str) -> Op | None:
    text = " ".join(raw.replace("_", " ").lower().split())
    if text in _OP_ALIASES:
        return _OP_ALIASES[text]
    try:
        return Op(text)
    except ValueError:
        return None


def _parse_condition(
    data: Mapping[object, object], path: str, problems: list[Problem]
) -> FilterNode:
    start = len(problems)
    for key in data:
        if key not in ("field", "op", "value"):
            problems.append(
                Problem(f"{path}.{key}", "unknown key in a condition", "use field, op and value")
            )
    field_name = data.get("field")
    if not isinstance(field_name, str) or not field_name.strip():
        problems.append(
            Problem(
                f"{path}.field",
                "is missing"
                if field_name is None
                else f"expected a field name, got {field_name!r}",
                "name a field of the record type, e.g. field: status",
            )
        )
    raw_op = data.get("op")
    op = _normalise_op(raw_op) if isinstance(raw_op, str) else None
    if op is None:
        problems.append(
            Problem(
                f"{path}.op",
                "is missing" if raw_op is None else f"unknown operator {raw_op!r}",
                f"use one of: {', '.join(o.value for o in Op)}",
            )
        )
    value = data.get("value")
    if op is not None:
        _check_value_shape(op, "value" in data, value, f"{path}.value", problems)
    if len(problems) > start or op is None or not isinstance(field_name, str):
        return Group("all", (), path)  # a placeholder: parse_filter raises anyway
    return Condition(field_name.strip(), op, value, path)


def _check_value_shape(
    op: Op, present: bool, value: object, path: str, problems: list[Problem]
) -> None:
    if op in NO_VALUE_OPS:
        if value is not None:
            problems.append(Problem(path, f"'{op.value}' takes no value", "remove the value"))
        return
    if op in LIST_OPS:
        if not isinstance(value, list | tuple):
            problems.append(
                Problem(
                    path,
                    f"'{op.value}' needs a list of values, got {describe(value)}",
                    "e.g. value: [client, donor]",
                )
            )
        elif not value:
            problems.append(Problem(path, f"'{op.value}' needs at least one value"))
        else:
            _check_scalars(value, path, problems)
        return
    if op is Op.BETWEEN:
        if not isinstance(value, list | tuple) or len(value) != 2:
            problems.append(
                Problem(
                    path,
                    f"'between' needs two values [from, to], got {describe(value)}",
                    "e.g. value: [100, 500] or value: [start of month, today]; both ends included",
                )
            )
        else:
            _check_scalars(value, path, problems)
        return
    if not present or value is None:
        hint = "use 'is empty' to find records without a value" if present else ""
        problems.append(Problem(path, f"'{op.value}' needs a value", hint))
    elif isinstance(value, list | tuple):
        problems.append(
            Problem(path, f"'{op.value}' takes one value, not a list", "use 'in' to test a list")
        )
    elif not isinstance(value, str | int | float | bool | date):
        problems.append(Problem(path, f"expected a single value, got {describe(value)}"))
    elif not_finite(value):  # YAML's .nan, JSON's NaN, 1e400: saved as null
        problems.append(_not_finite_problem(path, value))


def _check_scalars(values: Sequence[object], path: str, problems: list[Problem]) -> None:
    for i, item in enumerate(values):
        if item is None or not isinstance(item, str | int | float | bool | date):
            problems.append(Problem(f"{path}[{i}]", f"expected a value, got {describe(item)}"))
        elif not_finite(item):
            problems.append(_not_finite_problem(f"{path}[{i}]", item))


def _not_finite_problem(path: str, value: object) -> Problem:
    return Problem(path, f"{value!r} is not a finite number", "write digits, e.g. 1000 or 12.5")


def describe(value: object) -> str:
    """A value as a problem names it ("a list of 3", "int 5"), never quoting a whole mapping."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"


def filter_to_data(node: FilterNode) -> dict[str, object]:
    """The canonical plain-data form of a parsed filter (what is stored and shown)."""
    if isinstance(node, Condition):
        out: dict[str, object] = {"field": node.field, "op": node.op.value}
        if node.op not in NO_VALUE_OPS:
            out["value"] = _plain(node.value)
        return out
    if node.kind == "not":
        return {"not": filter_to_data(node.items[0])}
    return {node.kind: [filter_to_data(item) for item in node.items]}


def _plain(value: object) -> object:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
