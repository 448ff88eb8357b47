"""Conditions built with the saved queries' filter builder, written as CEL (issue 13).

A flow's conditions (`condition`, `if`, `until`, `entry_condition`) are CEL; the people who build
flows in forms pick a field, an operator and a value, as they do for a saved query. This module
converts between the two, both ways, and nothing else (pure: no SQL, no IO):

- `filter_to_cel(filter, fields)`: a filter in the saved-query language (`{all: [...]}` or
  `{any: [...]}`, nested groups, `{field, op, value}` conditions) as one CEL expression;
- `cel_to_filter(cel, fields)`: the filter of a CEL expression the builder wrote, or of one
  written by hand in the same shapes (`record.status != "cancelled"`); None when the builder
  cannot show it, and the form opens the condition in its hand mode;
- `Builder` and `builder_to_filter` / `filter_to_builder`: the builder's rows as a form posts
  them ("in the last 30 days" included), as the saved-query page has them.

`fields` maps each field key to its type (`crmflow.engine.recordtypes.FieldType` values:
`text`, `number`, `bool`, `date`, ...). What a CEL condition sees differs from SQL in two ways
a user might meet: `contains` and `starts with` compare case as written, and relative dates
(`today - 180 days`) are only for `date` fields (their values are `YYYY-MM-DD` texts; the CEL
compares them as midnight UTC instants, `today` being the flow's local day).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crmflow.engine.numbers import not_finite, whole_number
from crmflow.errors import Problem

__all__ = [
    "LAST",
    "NEXT",
    "OPERATORS",
    "Builder",
    "Row",
    "builder_to_cel",
    "builder_to_filter",
    "cel_to_builder",
    "cel_to_filter",
    "filter_to_builder",
    "filter_to_cel",
    "normalised",
]

LAST, NEXT = "in the last", "in the next"
# (value posted, words shown): the saved-query builder's operators.
OPERATORS: tuple[tuple[str, str], ...] = (
    ("=", "is"),
    ("!=", "is not"),
    ("contains", "contains"),
    ("starts with", "starts with"),
    ("<", "is less than / before"),
    ("<=", "is at most / on or before"),
    (">", "is more than / after"),
    (">=", "is at least / on or after"),
    ("between", "is between (a, b)"),
    ("in", "is one of (a, b, ...)"),
    ("not in", "is none of (a, b, ...)"),
    ("is empty", "is empty"),
    ("is not empty", "is not empty"),
    (LAST, "is in the last N days"),
    (NEXT, "is in the next N days"),
)
_OPS = frozenset(op for op, _ in OPERATORS)
_COMPARE = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_FROM_CEL = {cel: op for op, cel in _COMPARE.items()}
_RELATIVE = re.compile(r"^today(?: ([+-]) (\d{1,5}) days?)?$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ROWS = 50
MAX_DAYS = 36_500  # "in the last N days": a hundred years at most
MAX_DEPTH = 3
MAX_PARENS = 32  # parentheses the builder reads inside one another
_DAY_START = '"T00:00:00Z"'


@dataclass
class Row:
    """One condition as the builder shows it (the value as typed)."""

    field: str = ""
    op: str = "="
    value: str = ""


@dataclass
class Builder:
    """A group of the builder: all or any of its rows and groups, in order."""

    match: str = "all"
    items: list[Row | Builder] = field(default_factory=list)


# -- filter -> CEL -------------------------------------------------------------------------------


def _ref(key: str) -> str:
    return f"record.{key}" if _IDENT.match(key) else f"record[{json.dumps(key)}]"


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _relative(value: Any) -> tuple[str, int] | None:
    """`today - 180 days` -> ("-", 180); `today` -> ("+", 0); anything else None."""
    found = _RELATIVE.match(value) if isinstance(value, str) else None
    if found is None:
        return None
    return (found.group(1) or "+", int(found.group(2) or 0))


def _relative_cel(sign: str, days: int) -> str:
    today = f"timestamp(today + {_DAY_START})"
    return today if days == 0 else f'{today} {sign} duration("{days * 24}h")'


def _condition_cel(cond: Mapping[str, Any], fields: Mapping[str, str], path: str) -> str:
    key = str(cond.get("field", ""))
    op = str(cond.get("op", "="))
    value = cond.get("value")
    if key not in fields:
        raise _RefusedError(Problem(f"{path}.field", f"{key!r} is not a field", _known(fields)))
    ref = _ref(key)
    given: list[Any] = value if isinstance(value, list) else [value]
    values: list[str]
    if any(_relative(v) is not None for v in given):
        if fields[key] != "date":
            raise _RefusedError(
                Problem(
                    f"{path}.value",
                    f"a relative date ({value}) is for a date field; {key!r} is "
                    f"{fields[key] or 'not a date'}",
                    "give a fixed value, or write the condition in CEL",
                )
            )
        if op in ("in", "not in") or not all(_relative(v) for v in given):
            raise _RefusedError(
                Problem(f"{path}.value", "mixes relative and fixed dates", "use one kind")
            )
        ref = f"timestamp({ref} + {_DAY_START})"
        values = [_relative_cel(*r) for v in given if (r := _relative(v)) is not None]
    else:
        values = [_literal(v) for v in given]
    if op in _COMPARE:
        return f"{ref} {_COMPARE[op]} {values[0]}"
    if op == "between":
        if len(values) != 2:
            raise _RefusedError(Problem(f"{path}.value", "needs two values (a, b)", "e.g. 1, 10"))
        return f"({ref} >= {values[0]} && {ref} <= {values[1]})"
    if op in ("in", "not in"):
        listed = f"{ref} in [{', '.join(values)}]"
        return listed if op == "in" else f"!({listed})"
    if op in ("contains", "starts with"):
        method = "contains" if op == "contains" else "startsWith"
        return f"{ref}.{method}({values[0]})"
    if op == "is empty":
        return f'({ref} == null || {ref} == "")'
    if op == "is not empty":
        return f'({ref} != null && {ref} != "")'
    raise _RefusedError(Problem(f"{path}.op", f"{op!r} is not an operator", "pick one of the list"))


def _known(fields: Mapping[str, str]) -> str:
    return "known fields: " + ", ".join(sorted(fields))[:300]


class _RefusedError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _group_cel(node: Mapping[str, Any], fields: Mapping[str, str], path: str, *, top: bool) -> str:
    match = "all" if "all" in node else "any"
    items = node.get(match)
    if not isinstance(items, list):
        raise _RefusedError(Problem(path, "is not a group", "all: [...] or any: [...]"))
    parts = []
    for index, item in enumerate(items):
        where = f"{path}.{match}[{index}]"
        if isinstance(item, Mapping) and ("all" in item or "any" in item):
            text = _group_cel(item, fields, where, top=False)
        elif isinstance(item, Mapping):
            text = _condition_cel(item, fields, where)
        else:
            raise _RefusedError(Problem(where, "is not a condition", "{field, op, value}"))
        if text:
            parts.append(text)
    joined = (" && " if match == "all" else " || ").join(parts)
    return joined if top or len(parts) < 2 else f"({joined})"


def filter_to_cel(
    filter: Mapping[str, Any], fields: Mapping[str, str]
) -> tuple[str, list[Problem]]:
    """The CEL of `filter` ("" for an empty one), or "" and the problem that stops it."""
    try:
        return _group_cel(normalised(filter), fields, "filter", top=True), []
    except _RefusedError as exc:
        return "", [exc.problem]


def normalised(filter: Mapping[str, Any]) -> dict[str, Any]:
    """`filter` with groups of one item replaced by that item and a top group of one item
    matching `all` (the same condition, as CEL writes it once)."""

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping) and ("all" in node or "any" in node):
            match = "all" if "all" in node else "any"
            items = [walk(i) for i in node.get(match) or []]
            if len(items) == 1 and isinstance(items[0], Mapping) and "field" in items[0]:
                return items[0]
            return {match: items}
        return dict(node) if isinstance(node, Mapping) else node

    top = walk(filter)
    if isinstance(top, Mapping) and "field" in top:
        return {"all": [top]}
    if isinstance(top, Mapping) and len(top.get("any") or top.get("all") or []) <= 1:
        return {"all": list(top.get("any") or top.get("all") or [])}
    return dict(top) if isinstance(top, Mapping) else {"all": []}


# -- CEL -> filter -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.+-])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class _NotBuiltError(Exception):
    """The expression has a shape the builder does not show."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    at = 0
    text = text.strip()
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise _NotBuiltError(f"cannot read {text[at : at + 20]!r}")
        kind = found.lastgroup or ""
        out.append((kind, found.group(kind)))
        at = found.end()
        while at < len(text) and text[at].isspace():
            at += 1
    return out


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    at: int = 0
    depth: int = 0  # parentheses open: bounded, so a hostile text cannot exhaust the stack

    def inner(self) -> Any:
        """The expression inside parentheses just taken, up to the closing one."""
        if self.depth >= MAX_PARENS:
            raise _NotBuiltError(f"parentheses nested more than {MAX_PARENS} deep")
        self.depth += 1
        inner = self.expr()
        self.depth -= 1
        self.take(")")
        return inner

    def peek(self, ahead: int = 0) -> str:
        index = self.at + ahead
        return self.tokens[index][1] if index < len(self.tokens) else ""

    def kind(self) -> str:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise _NotBuiltError("the expression ends too soon")
        value = self.tokens[self.at][1]
        if expected is not None and value != expected:
            raise _NotBuiltError(f"expected {expected!r}, found {value!r}")
        self.at += 1
        return value

    # expr := and ('||' and)* ; and := unary ('&&' unary)*
    def expr(self) -> Any:
        items = [self.conj()]
        while self.peek() == "||":
            self.take()
            items.append(self.conj())
        return items[0] if len(items) == 1 else ("any", items)

    def conj(self) -> Any:
        items = [self.unary()]
        while self.peek() == "&&":
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else ("all", items)

    def unary(self) -> Any:
        if self.peek() == "!" and self.peek(1) == "(":
            self.take()
            self.take("(")
            inner = self.inner()
            if isinstance(inner, tuple) and inner[0] == "cond" and inner[2] == "in":
                return ("cond", inner[1], "not in", inner[3], inner[4])
            raise _NotBuiltError("a negation other than !(field in [...])")
        if self.peek() == "(":
            self.take()
            return _collapse(self.inner())
        return self.comparison()

    def left(self) -> tuple[str, bool]:
        """A field reference: (key, whether it is read as a day: timestamp(record.f + ...))."""
        if self.peek() == "timestamp":
            self.take()
            self.take("(")
            key, _ = self.left()
            self.take("+")
            if self.take() not in (_DAY_START, "'T00:00:00Z'"):
                raise _NotBuiltError("a timestamp other than a day's")
            self.take(")")
            return key, True
        self.take("record")
        if self.peek() == ".":
            self.take()
            if self.kind() != "name":
                raise _NotBuiltError("a field name after record.")
            return self.take(), False
        self.take("[")
        if self.kind() != "str":
            raise _NotBuiltError("a field name in record[...]")
        key = _string(self.take())
        self.take("]")
        return key, False

    def value(self) -> Any:
        kind, text = self.tokens[self.at] if self.at < len(self.tokens) else ("", "")
        if kind == "str":
            self.take()
            return _string(text)
        if kind == "num":
            self.take()
            try:
                number = float(text) if any(c in text for c in ".eE") else int(text)
            except ValueError:  # more digits than int() reads
                raise _NotBuiltError(f"a number of {len(text):,} characters") from None
            if not_finite(number):
                raise _NotBuiltError(f"a number beyond a float's range: {text[:20]!r}")
            return number
        if text in ("true", "false", "null"):
            self.take()
            return {"true": True, "false": False, "null": None}[text]
        if text == "timestamp":
            self.take()
            self.take("(")
            self.take("today")
            self.take("+")
            if self.take() not in (_DAY_START, "'T00:00:00Z'"):
                raise _NotBuiltError("a timestamp other than today's")
            self.take(")")
            if self.peek() in ("+", "-") and self.peek(1) == "duration":
                sign = self.take()
                self.take("duration")
                self.take("(")
                found = re.match(r"^(\d+)h$", _string(self.take()))
                self.take(")")
                if found is None or int(found.group(1)) % 24:
                    raise _NotBuiltError("a duration other than whole days")
                days = int(found.group(1)) // 24
                return _Relative(f"today {sign} {days} day{'s' if days != 1 else ''}")
            return _Relative("today")
        if not text:
            raise _NotBuiltError("the expression ends too soon")
        raise _NotBuiltError(f"a value the builder does not show: {text!r}")

    def comparison(self) -> Any:
        key, as_day = self.left()
        op = self.peek()
        if op in _FROM_CEL:
            self.take()
            return ("cond", key, _FROM_CEL[op], self.value(), as_day)
        if op == "in" and not as_day:
            self.take()
            self.take("[")
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.take()
            self.take("]")
            return ("cond", key, "in", items, as_day)
        if op == "." and self.peek(1) in ("contains", "startsWith") and not as_day:
            self.take()
            method = self.take()
            self.take("(")
            value = self.value()
            self.take(")")
            return (
                "cond",
                key,
                "contains" if method == "contains" else "starts with",
                value,
                False,
            )
        raise _NotBuiltError(f"an operator the builder does not show: {op!r}")


@dataclass(frozen=True)
class _Relative:
    text: str


def _string(token: str) -> str:
    if token.startswith("'"):
        token = '"' + token[1:-1].replace('\\"', '"').replace('"', '\\"') + '"'
    try:
        value = json.loads(token)
    except ValueError:
        raise _NotBuiltError(f"a text the builder cannot read: {token[:20]}") from None
    return str(value)


def _collapse(node: Any) -> Any:
    """A parenthesised pair the builder writes for one condition: between, is (not) empty."""
    if not isinstance(node, tuple) or node[0] not in ("all", "any") or len(node[1]) != 2:
        return node
    first, second = node[1]
    if not (isinstance(first, tuple) and isinstance(second, tuple)):
        return node
    if first[0] != "cond" or second[0] != "cond" or first[1] != second[1]:
        return node
    key = first[1]
    pair = (first[2], first[3], second[2], second[3])
    if node[0] == "any" and pair == ("=", None, "=", ""):
        return ("cond", key, "is empty", None, False)
    if node[0] == "all" and pair == ("!=", None, "!=", ""):
        return ("cond", key, "is not empty", None, False)
    if node[0] == "all" and first[2] == ">=" and second[2] == "<=" and first[4] == second[4]:
        return ("cond", key, "between", [first[3], second[3]], first[4])
    return node


def _plain_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain_value(v) for v in value]
    return value.text if isinstance(value, _Relative) else value


def _to_filter(node: Any, fields: Mapping[str, str]) -> dict[str, Any]:
    if node[0] in ("all", "any"):
        return {node[0]: [_to_filter(i, fields) for i in node[1]]}
    _, key, op, value, as_day = node
    if key not in fields:
        raise _NotBuiltError(f"{key!r} is not a field of the record type")
    values = value if isinstance(value, list) else [value]
    relative = [isinstance(v, _Relative) for v in values]
    if as_day != any(relative) or (any(relative) and not all(relative)):
        raise _NotBuiltError("a date compared in another way than the builder writes it")
    if as_day and fields[key] != "date":
        raise _NotBuiltError(f"a relative date on {key!r}, which is not a date field")
    cond: dict[str, Any] = {"field": key, "op": op}
    if op not in ("is empty", "is not empty"):
        cond["value"] = _plain_value(value)
    return cond


def cel_to_filter(cel: str, fields: Mapping[str, str]) -> tuple[dict[str, Any] | None, str]:
    """The filter of `cel` ({"all": []} for an empty text), or None and why the builder
    cannot show it (the form then keeps the CEL as written, in its hand mode)."""
    if not cel.strip():
        return {"all": []}, ""
    try:
        parser = _Parser(_tokens(cel))
        tree = _collapse(parser.expr())
        if parser.at != len(parser.tokens):
            raise _NotBuiltError(f"{parser.peek()!r} after the end of a condition")
        data = _to_filter(tree, fields)
    except _NotBuiltError as exc:
        return None, str(exc)
    if "field" in data:
        data = {"all": [data]}
    if _depth(data) > MAX_DEPTH:
        return None, f"groups nested more than {MAX_DEPTH} deep"
    return normalised(data), ""


def _depth(node: Mapping[str, Any]) -> int:
    items = node.get("all") or node.get("any") or []
    inner = [_depth(i) for i in items if isinstance(i, Mapping) and "field" not in i]
    return 1 + max(inner, default=0)


# -- the builder's rows --------------------------------------------------------------------------


def _typed(kind: str, text: str) -> Any:
    text = text.strip()
    if _relative(text) is not None:
        return text
    if kind == "number":
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
    return text


def builder_to_filter(
    builder: Builder, fields: Mapping[str, str], *, where: str = "condition"
) -> tuple[dict[str, Any], list[Problem]]:
    """The filter of the builder's rows (a row without a field is left out) and the problems
    of rows that cannot be read (a number of days that is not one)."""
    problems: list[Problem] = []
    counter = iter(range(1, 10_000))

    def group(node: Builder) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for item in node.items:
            if isinstance(item, Builder):
                inner = group(item)
                if inner[item.match if item.match in ("all", "any") else "all"]:
                    items.append(inner)
                continue
            number = next(counter)
            if not item.field:
                continue
            kind = fields.get(item.field, "")
            text = item.value.strip()
            if item.op in (LAST, NEXT):
                days = whole_number(text, max_digits=9)
                if days is None or not 1 <= days <= MAX_DAYS:
                    problems.append(
                        Problem(
                            f"{where} {number}",
                            f"{item.op!r} needs a whole number of days, got {text[:20]!r}",
                            f"write a number from 1 to {MAX_DAYS}, e.g. 30",
                        )
                    )
                    continue
                span = (
                    [f"today - {days} days", "today"]
                    if item.op == LAST
                    else ["today", f"today + {days} days"]
                )
                items.append({"field": item.field, "op": "between", "value": span})
                continue
            cond: dict[str, Any] = {"field": item.field, "op": item.op}
            if item.op in ("in", "not in"):
                cond["value"] = [_typed(kind, v) for v in text.split(",") if v.strip()]
            elif item.op == "between":
                parts = [v for v in re.split(r",| and ", text) if v.strip()]
                cond["value"] = [_typed(kind, v) for v in parts]
            elif item.op not in ("is empty", "is not empty"):
                cond["value"] = _typed(kind, text)
            typed = cond.get("value")
            if any(not_finite(v) for v in (typed if isinstance(typed, list) else [typed])):
                problems.append(
                    Problem(
                        f"{where} {number}",
                        f"{text[:20]!r} is not a finite number",
                        "write digits, e.g. 1000 or 12.5",
                    )
                )
                continue
            items.append(cond)
        return {node.match if node.match in ("all", "any") else "all": items}

    return group(builder), problems


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def filter_to_builder(filter: Mapping[str, Any]) -> Builder:
    """The builder's rows of a filter: `between [today - 30 days, today]` shows as "in the
    last 30 days", as on the saved-query page."""
    match = "any" if "any" in filter else "all"
    out = Builder(match=match)
    for item in filter.get(match) or []:
        if not isinstance(item, Mapping):
            continue
        if "all" in item or "any" in item:
            out.items.append(filter_to_builder(item))
            continue
        key, op, value = str(item.get("field", "")), str(item.get("op", "=")), item.get("value")
        if op == "between" and isinstance(value, list) and len(value) == 2:
            low, high = (_relative(v) for v in value)
            if value[1] == "today" and low is not None and low[0] == "-" and low[1] > 0:
                out.items.append(Row(key, LAST, str(low[1])))
                continue
            if value[0] == "today" and high is not None and high[0] == "+" and high[1] > 0:
                out.items.append(Row(key, NEXT, str(high[1])))
                continue
        out.items.append(Row(key, op if op in _OPS else "=", _value_text(value)))
    return out


def builder_to_cel(builder: Builder, fields: Mapping[str, str]) -> tuple[str, list[Problem]]:
    data, problems = builder_to_filter(builder, fields)
    if problems:
        return "", problems
    return filter_to_cel(data, fields)


def cel_to_builder(cel: str, fields: Mapping[str, str]) -> tuple[Builder | None, str]:
    data, why = cel_to_filter(cel, fields)
    return (filter_to_builder(data) if data is not None else None), why


def rows_from_form(
    matches: Sequence[str],
    groups: Sequence[str],
    fields: Sequence[str],
    ops: Sequence[str],
    values: Sequence[str],
) -> Builder:
    """The builder as a form posts it: `matches[0]` is the top group's, `matches[g]` that of
    group g (1, 2, ...: one level below the top); each row names its group in `groups`."""
    top = Builder(match=matches[0] if matches and matches[0] in ("all", "any") else "all")
    subs: dict[int, Builder] = {}
    for index, match in enumerate(matches[1:MAX_ROWS], start=1):
        subs[index] = Builder(match=match if match in ("all", "any") else "all")
    placed: set[int] = set()
    rows = zip(groups[:MAX_ROWS], fields, ops, values, strict=False)
    for group, key, op, value in rows:
        number = whole_number(group, max_digits=5) or 0
        row = Row(key.strip()[:100], op if op in _OPS else "=", value[:1000])
        target = subs.get(number)
        if target is None:
            top.items.append(row)
            continue
        if number not in placed:
            top.items.append(target)
            placed.add(number)
        target.items.append(row)
    for number, sub in subs.items():
        if number not in placed:
            top.items.append(sub)  # an empty group just added: shown with its first row
    return top
