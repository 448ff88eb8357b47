"""The nodes of a filter checked against its record type: each condition names a `FieldRef`
(a data key or a column of `records`) and holds operands of the field's type.

`typecheck` builds these and `resolve` turns them into predicates; they live apart from both so
that neither imports the other's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field

from crmflow.engine.querylang.parse import GroupKind, Op
from crmflow.engine.querylang.timevalues import TimeOperand
from crmflow.engine.recordtypes import FieldType

__all__ = [
    "BUILTIN_FIELDS",
    "CheckedCondition",
    "CheckedGroup",
    "CheckedNode",
    "FieldRef",
    "Operand",
    "Username",
]


@dataclass(frozen=True)
class FieldRef:
    """A field a filter can test: a key of the record's JSON data, or a column of `records`."""

    key: str
    type: FieldType
    column: str | None = None  # set for the built-ins: id, owner_id, created_at, updated_at
    choices: tuple[str, ...] = ()


BUILTIN_FIELDS: dict[str, FieldRef] = {
    "id": FieldRef("id", FieldType.NUMBER, "id"),
    "owner": FieldRef("owner", FieldType.USER, "owner_id"),
    "created_at": FieldRef("created_at", FieldType.DATETIME, "created_at"),
    "updated_at": FieldRef("updated_at", FieldType.DATETIME, "updated_at"),
}


@dataclass(frozen=True)
class Username:
    """A user named by username; the SQL layer looks up the id."""

    name: str


Operand = str | int | float | bool | Username | TimeOperand


@dataclass(frozen=True)
class CheckedCondition:
    field: FieldRef
    op: Op
    operands: tuple[Operand, ...]
    path: str = dc_field(default="", compare=False)


@dataclass(frozen=True)
class CheckedGroup:
    kind: GroupKind
    items: tuple[CheckedNode, ...]


CheckedNode = CheckedCondition | CheckedGroup
