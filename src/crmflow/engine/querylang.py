"""The saved-query filter language: typed models, parsing with precise problems, type checking
against a record type, and resolution of relative dates into concrete predicates.

A filter is plain data (from YAML, JSON or an API body)::

    all:
      - {field: client_since, op: "=", value: "today - 180 days"}
      - any:
          - {field: status, op: in, value: [client, donor]}
          - {field: total_donations, op: ">=", value: 1000}

Three stages, all pure (no clock, no database):

1. `parse_filter` turns plain data into `Condition` / `Group` nodes, or raises InvalidInputError
   listing every structural problem with its path (`filter.all[1].any[0].op`).
2. `check_filter` checks those nodes against a `RecordType` (known fields, operators that fit the
   field type, values of the right type, well-formed relative dates) and returns a
   `CheckedFilter`, or raises with every problem.
3. `CheckedFilter.resolve(now=..., zone=...)` turns relative values into concrete ones and returns a
   `Pred` tree that `crmflow.store.querysql` compiles to SQL.

Semantics, chosen for what a CRM user expects:

- **Empty fields.** A field is empty when its key is missing, holds JSON null, or (for `is empty`)
  an empty string. `!=`, `not in` and `not: {...}` are exact complements of `=`, `in` and the
  negated group: they *include* records whose field is empty ("status != client" lists contacts
  without a status), instead of silently dropping them as SQL's NULL logic would. Ordering
  operators (`<`, `>=`, `between`), `contains` and `starts with` never match an empty field.
- **Dates.** A value is either a *day* (`today`, `yesterday`, `start of month`, `2026-05-27`, any
  of these moved by days/weeks/months/years) or an *instant* (`now`, anything moved by hours or
  minutes, an ISO date-time). Days and "today" are taken in the organisation's time zone. On a
  date field an instant counts as its local day. On a date-time field a day stands for the whole
  local day, a half-open UTC range that is 23 or 25 hours long on DST days: `= today` means
  "during today", `< today` before its first instant, `<= today` before tomorrow's first instant,
  `> today` from tomorrow's first instant, `between [a, b]` from the start of day a to the end of
  day b.
- **Arithmetic.** Days, weeks, months and years move the local calendar date or wall-clock time;
  months and years use relativedelta, so Jan 31 + 1 month is Feb 28, and `end of month - 1 month`
  is the last day of the previous month (a month end stays a month end). Hours and minutes are
  elapsed time. Weeks start on Monday. Instants have whole-second precision, like stored values.
- **Text.** `=` and `in` compare exactly; `contains` and `starts with` ignore case.
- **Users.** `owner` and user fields take a user id or a username.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Literal

from dateutil.relativedelta import relativedelta

from crmflow.engine.recordtypes import FieldType, RecordType
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "ALLOWED_OPS",
    "BUILTIN_FIELDS",
    "RELATIVE_FORMS",
    "CheckedCondition",
    "CheckedFilter",
    "CheckedGroup",
    "CheckedNode",
    "Compare",
    "Condition",
    "DayValue",
    "Empty",
    "FieldRef",
    "FilterNode",
    "Group",
    "InstantValue",
    "OneOf",
    "Op",
    "Operand",
    "Pred",
    "PredGroup",
    "RelativeTime",
    "TextMatch",
    "Username",
    "Value",
    "check_filter",
    "day_start",
    "filter_to_data",
    "parse_filter",
    "parse_time_value",
]

GroupKind = Literal["all", "any", "not"]
CompareOp = Literal["=", "<", "<=", ">", ">="]
Scalar = str | int | float | bool


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
_NO_VALUE_OPS = frozenset({Op.IS_EMPTY, Op.IS_NOT_EMPTY})
_LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
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
}

RELATIVE_FORMS = (
    "a date YYYY-MM-DD, a date and time YYYY-MM-DDTHH:MM[:SS][+HH:MM], or a relative date: "
    "today, now, yesterday, tomorrow, start of day|week|month|year, end of day|week|month|year, "
    "optionally followed by '+ N unit' or '- N unit' (units: minutes, hours, days, weeks, months, "
    "years), e.g. 'today - 180 days', 'now + 2 hours', 'start of month - 1 month'"
)


# --- parsed filter --------------------------------------------------------------------------


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
                f"expected a group or a condition, got {_describe(data)}",
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
                        f"expected one group or condition, got {_describe(inner)}",
                        "write not: {field: ..., op: ..., value: ...} or not: {any: [...]}",
                    )
                )
                return Group("not", (Group("all", ()),), path)
            return Group("not", (_parse_node(inner, f"{path}.not", problems),), path)
        if not isinstance(inner, list | tuple):
            problems.append(
                Problem(
                    f"{path}.{kind}",
                    f"expected a list of conditions and groups, got {_describe(inner)}",
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
    if op in _NO_VALUE_OPS:
        if value is not None:
            problems.append(Problem(path, f"'{op.value}' takes no value", "remove the value"))
        return
    if op in _LIST_OPS:
        if not isinstance(value, list | tuple):
            problems.append(
                Problem(
                    path,
                    f"'{op.value}' needs a list of values, got {_describe(value)}",
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
                    f"'between' needs two values [from, to], got {_describe(value)}",
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
        problems.append(Problem(path, f"expected a single value, got {_describe(value)}"))


def _check_scalars(values: Sequence[object], path: str, problems: list[Problem]) -> None:
    for i, item in enumerate(values):
        if item is None or not isinstance(item, str | int | float | bool | date):
            problems.append(Problem(f"{path}[{i}]", f"expected a value, got {_describe(item)}"))


def _describe(value: object) -> str:
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
        if node.op not in _NO_VALUE_OPS:
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


# --- time values ----------------------------------------------------------------------------

_UNITS = {
    "minute": "minutes",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
    "month": "months",
    "year": "years",
}
_RELATIVE = re.compile(
    r"^(?P<anchor>today|now|yesterday|tomorrow|(?:start|end)\s+of\s+(?:day|week|month|year))"
    r"(?P<offsets>(?:\s*[+-]\s*\d+\s*[a-z]+)*)$"
)
_OFFSET = re.compile(r"\s*([+-])\s*(\d+)\s*([a-z]+)")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The largest amount of each unit that can stay within the years 1 to 9999 from any day: a
# larger one can never resolve, so it is refused when the filter is read, whatever the day.
_MAX_OFFSET = {
    "minutes": 9999 * 366 * 24 * 60,
    "hours": 9999 * 366 * 24,
    "days": 9999 * 366,
    "weeks": 9999 * 366 // 7,
    "months": 9999 * 12,
    "years": 9999,
}
_DATE_RANGE_HINT = "dates run from year 1 to year 9999: use a smaller offset"


def _shown(text: str, *, quote: bool = True, width: int = 60) -> str:
    """`text` as an error message quotes it: a value of thousands of characters is cut."""
    cut = text if len(text) <= width else text[:width] + "..."
    return repr(cut) if quote else cut


@dataclass(frozen=True)
class DayValue:
    """An absolute calendar day."""

    day: date

    def resolve(self, now: datetime, zone: tzinfo) -> date:
        return self.day


@dataclass(frozen=True)
class InstantValue:
    """An absolute instant; a naive one is read in the organisation's zone when resolved."""

    at: datetime

    def resolve(self, now: datetime, zone: tzinfo) -> datetime:
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=zone)
        return at.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RelativeTime:
    """`today - 180 days`, `now + 2 hours`, `start of month - 1 month`, ...

    `resolve` returns a `date` (a local day) or an aware UTC `datetime` (an instant): see the
    module docstring for which is which.
    """

    anchor: str  # today | now | yesterday | tomorrow | start of <unit> | end of <unit>
    offsets: tuple[tuple[int, str], ...] = ()  # (signed amount, plural unit)
    text: str = dc_field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> RelativeTime:
        """Parse a relative date; raise ValueError saying the accepted forms."""
        normal = " ".join(text.lower().split())
        match = _RELATIVE.match(normal)
        if match is None:
            raise ValueError(f"{_shown(text)} is not a date: use {RELATIVE_FORMS}")
        offsets: list[tuple[int, str]] = []
        for sign, amount, unit in _OFFSET.findall(match["offsets"]):
            singular = unit[:-1] if unit.endswith("s") else unit
            if singular not in _UNITS:
                raise ValueError(
                    f"{text!r}: unknown unit {unit!r}; use minutes, hours, days, weeks, months "
                    "or years"
                )
            plural = _UNITS[singular]
            # Compared as text first: int() of thousands of digits is slow, then refused.
            limit = _MAX_OFFSET[plural]
            digits = amount.lstrip("0") or "0"
            if len(digits) > len(str(limit)) or int(digits) > limit:
                raise ValueError(
                    f"{_shown(text)}: {_shown(amount, quote=False)} {plural} is out of range "
                    f"(at most {limit:,} {plural}); {_DATE_RANGE_HINT}"
                )
            offsets.append((int(digits) * (-1 if sign == "-" else 1), plural))
        anchor = " ".join(match["anchor"].split())
        return cls(anchor, tuple(offsets), text)

    def resolve(self, now: datetime, zone: tzinfo) -> date | datetime:
        """The day or instant at `now`; ValueError (never OverflowError) when it falls outside
        the years 1 to 9999."""
        if now.tzinfo is None:
            raise ValueError("`now` must be an aware datetime")
        try:
            return self._resolve(now, zone)
        except (OverflowError, ValueError):
            raise ValueError(
                f"{_shown(self.text or self.anchor)} falls outside the years 1 to 9999 on "
                f"{now.astimezone(zone).date().isoformat()}; {_DATE_RANGE_HINT}"
            ) from None

    def _resolve(self, now: datetime, zone: tzinfo) -> date | datetime:
        today = now.astimezone(zone).date()
        instant: datetime | None = None
        day = today
        # An `end of ...` day becomes, as an instant, the start of the next day; a month or year
        # end stays a month end when moved by months or years.
        is_end = False
        month_end = False
        if self.anchor == "now":
            instant = now.astimezone(UTC)
        elif self.anchor == "yesterday":
            day = today - timedelta(days=1)
        elif self.anchor == "tomorrow":
            day = today + timedelta(days=1)
        elif self.anchor.startswith("start of "):
            day = _start_of(today, self.anchor.removeprefix("start of "))
        elif self.anchor.startswith("end of "):
            unit = self.anchor.removeprefix("end of ")
            day = _end_of(today, unit)
            is_end = True
            month_end = unit in ("month", "year")
        for amount, unit in self.offsets:
            if unit in ("hours", "minutes"):
                if instant is None:
                    instant = day_start(day + timedelta(days=1) if is_end else day, zone)
                instant = instant + timedelta(**{unit: amount})
            elif instant is not None:
                wall = instant.astimezone(zone).replace(tzinfo=None) + relativedelta(
                    **{unit: amount}  # type: ignore[arg-type]
                )
                instant = wall.replace(tzinfo=zone).astimezone(UTC)
            elif month_end and unit in ("months", "years"):
                moved = day.replace(day=1) + relativedelta(**{unit: amount})  # type: ignore[arg-type]
                day = _end_of(moved, "month")
            else:
                day = day + relativedelta(**{unit: amount})  # type: ignore[arg-type]
                month_end = False
        if instant is not None:
            return instant.astimezone(UTC).replace(microsecond=0)
        return day


def _start_of(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    return day


def _end_of(day: date, unit: str) -> date:
    if unit == "week":
        return day + timedelta(days=6 - day.weekday())
    if unit == "month":
        return day.replace(day=1) + relativedelta(months=1) - timedelta(days=1)
    if unit == "year":
        return day.replace(month=12, day=31)
    return day


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant of a local day, in UTC (01:00 local where midnight is skipped)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


TimeOperand = DayValue | InstantValue | RelativeTime


def parse_time_value(raw: object) -> TimeOperand:
    """An absolute or relative date/time value; ValueError (saying the accepted forms) if not."""
    if isinstance(raw, datetime):
        return InstantValue(raw)
    if isinstance(raw, date):
        return DayValue(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected a date, got {_describe(raw)}: use {RELATIVE_FORMS}")
    text = raw.strip()
    if _DATE_TEXT.match(text):
        try:
            return DayValue(date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid calendar date") from None
    if text[:4].isdigit():
        iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            return InstantValue(datetime.fromisoformat(iso))
        except ValueError:
            raise ValueError(f"{raw!r} is not a date: use {RELATIVE_FORMS}") from None
    return RelativeTime.parse(text)


# --- checked filter -------------------------------------------------------------------------


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
_NEVER_EMPTY_COLUMNS = frozenset({"id", "created_at", "updated_at"})


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
        (int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.\[\]]+", path)
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
        allowed = allowed - _NO_VALUE_OPS
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
    if cond.op in _NO_VALUE_OPS:
        return CheckedCondition(fref, cond.op, (), cond.path)
    value_path = f"{cond.path}.value"
    if cond.op in _LIST_OPS or cond.op is Op.BETWEEN:
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
        raise ValueError(f"expected text for {fref.key!r}, got {_describe(raw)}")
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
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return float(raw.strip()) if "." in raw else int(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"expected a number for {fref.key!r}, got {_describe(raw)}")
    if kind is FieldType.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ValueError(f"expected true or false for {fref.key!r}, got {_describe(raw)}")
    if kind in (FieldType.DATE, FieldType.DATETIME):
        return parse_time_value(raw)
    if kind is FieldType.USER:
        if isinstance(raw, str) and raw.strip() and not raw.strip().isdigit():
            return Username(raw.strip())
        return _record_id(fref, raw, what="a user id or a username")
    return _record_id(fref, raw)


def _record_id(fref: FieldRef, raw: object, what: str = "a record id") -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    if isinstance(raw, str) and raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    raise ValueError(f"expected {what} for {fref.key!r}, got {_describe(raw)}")


# --- resolved predicates --------------------------------------------------------------------

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
                Problem(f"{node.path}.value", f"a date out of range: {exc}", _DATE_RANGE_HINT)
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
