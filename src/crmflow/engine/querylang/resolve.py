"""Stage 3 of the filter language: a `CheckedFilter` resolved at a moment (`now`, in the
organisation's zone) into concrete predicates (`Pred`) that `crmflow.store.querysql` compiles to
SQL. Here relative dates become days and instants, a day on a date-time field becomes its local
half-open UTC range, and `!=`, `not in` become exact complements (empty fields included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Literal

from crmflow.engine.querylang.checked import (
    CheckedCondition,
    CheckedGroup,
    CheckedNode,
    FieldRef,
    Operand,
    Username,
)
from crmflow.engine.querylang.parse import GroupKind, Op
from crmflow.engine.querylang.timevalues import (
    DATE_RANGE_HINT,
    DayValue,
    InstantValue,
    RelativeTime,
    day_start,
)
from crmflow.engine.recordtypes import FieldType
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "CheckedFilter",
    "Compare",
    "Empty",
    "OneOf",
    "Pred",
    "PredGroup",
    "TextMatch",
    "Value",
]

CompareOp = Literal["=", "<", "<=", ">", ">="]

Value = str | int | float | bool | Username | date | datetime
"""A concrete operand: a `date` is a day, an aware `datetime` an instant (in UTC)."""


@dataclass(frozen=True)
class Compare:
    field: FieldRef
    op: CompareOp
    value: Value


@dataclass(frozen=True)
class OneOf:
    field: FieldRef
    values: tuple[Value, ...]


@dataclass(frozen=True)
class TextMatch:
    field: FieldRef
    mode: Literal["contains", "starts with"]
    text: str


@dataclass(frozen=True)
class Empty:
    """The field is missing, null or an empty string."""

    field: FieldRef


@dataclass(frozen=True)
class PredGroup:
    """`all` of no items is true, `any` of no items is false; `not` is the exact complement."""

    kind: GroupKind
    items: tuple[Pred, ...]


Pred = Compare | OneOf | TextMatch | Empty | PredGroup


@dataclass(frozen=True)
class CheckedFilter:
    """A filter known to fit its record type; `resolve` it at the moment it is run."""

    record_type: str
    root: CheckedNode

    def resolve(self, *, now: datetime, zone: tzinfo) -> Pred:
        """Concrete predicates for `now` (aware) in the organisation's `zone`.

        A date that falls outside the years 1 to 9999 at `now` (`today - 3000 years`, or a
        query stored before such values were refused) raises InvalidInputError naming the
        condition's path, never an OverflowError."""
        if now.tzinfo is None:
            raise ValueError("`now` must be an aware datetime")
        problems: list[Problem] = []
        pred = _resolve_node(self.root, now, zone, problems)
        if problems:
            raise InvalidInputError("the filter", problems)
        return pred


def _resolve_node(node: CheckedNode, now: datetime, zone: tzinfo, problems: list[Problem]) -> Pred:
    if isinstance(node, CheckedGroup):
        items = tuple(_resolve_node(i, now, zone, problems) for i in node.items)
        return PredGroup(node.kind, items)
    try:
        return _resolve_condition(node, now, zone)
    except (OverflowError, ValueError) as exc:
        # A day at either end of the range can still overflow once turned into an instant of
        # the organisation's zone (its first instant, or the start of the next day).
        if "outside the years" in str(exc):
            problems.append(Problem(f"{node.path}.value", str(exc)))
        else:
            problems.append(
                Problem(f"{node.path}.value", f"a date out of range: {exc}", DATE_RANGE_HINT)
            )
        return PredGroup("any", ())


def _resolve_condition(node: CheckedCondition, now: datetime, zone: tzinfo) -> Pred:
    fref, op = node.field, node.op
    values = [_resolve_operand(fref, o, now, zone) for o in node.operands]
    if op is Op.IS_EMPTY:
        return Empty(fref)
    if op is Op.IS_NOT_EMPTY:
        return PredGroup("not", (Empty(fref),))
    if op is Op.CONTAINS or op is Op.STARTS_WITH:
        assert isinstance(values[0], str)
        return TextMatch(fref, "contains" if op is Op.CONTAINS else "starts with", values[0])
    if op is Op.NE:
        return PredGroup("not", (_compare(fref, "=", values[0], zone),))
    if op is Op.IN or op is Op.NOT_IN:
        if fref.type is FieldType.DATETIME and any(_is_day(v) for v in values):
            pred: Pred = PredGroup("any", tuple(_compare(fref, "=", v, zone) for v in values))
        else:
            pred = OneOf(fref, tuple(values))
        return pred if op is Op.IN else PredGroup("not", (pred,))
    if op is Op.BETWEEN:
        return PredGroup(
            "all", (_compare(fref, ">=", values[0], zone), _compare(fref, "<=", values[1], zone))
        )
    return _compare(fref, op.value, values[0], zone)  # type: ignore[arg-type]


def _is_day(value: Value) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _resolve_operand(fref: FieldRef, operand: Operand, now: datetime, zone: tzinfo) -> Value:
    if isinstance(operand, DayValue | InstantValue | RelativeTime):
        value = operand.resolve(now, zone)
        if fref.type is FieldType.DATE and isinstance(value, datetime):
            return value.astimezone(zone).date()
        return value
    return operand


def _compare(fref: FieldRef, op: CompareOp, value: Value, zone: tzinfo) -> Pred:
    if fref.type is not FieldType.DATETIME or not _is_day(value):
        return Compare(fref, op, value)
    assert isinstance(value, date)
    start = day_start(value, zone)
    end = day_start(value + timedelta(days=1), zone)
    if op == "=":
        return PredGroup("all", (Compare(fref, ">=", start), Compare(fref, "<", end)))
    if op == "<":
        return Compare(fref, "<", start)
    if op == "<=":
        return Compare(fref, "<", end)
    if op == ">":
        return Compare(fref, ">=", end)
    return Compare(fref, ">=", start)
