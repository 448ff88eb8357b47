"""CEL conditions: compiled once, checked at save time for syntax and for the names they use.

The variables a flow condition sees (see docs/flows.md):
  record  the record's fields, plus id, type, owner, created_at, updated_at
  change  the change that woke the flow: kind, fields, before, after, by, at (may be empty)
  now     the current time (a timestamp); today: the current date as YYYY-MM-DD in the flow's zone
  flow    key and name of the flow
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "CEL_FUNCTIONS",
    "CEL_VARIABLES",
    "CHANGE_ATTRIBUTES",
    "FLOW_ATTRIBUTES",
    "MAX_CONDITION_CHARS",
    "RECORD_META_FIELDS",
    "ConditionIssue",
    "ConditionReads",
    "ConditionShape",
    "TextComparison",
    "check_condition",
    "compile_condition",
    "condition_reads",
    "condition_shape",
    "text_comparison",
]

MAX_CONDITION_CHARS = 4_000
RECORD_META_FIELDS = frozenset({"id", "type", "owner", "created_at", "updated_at"})
CHANGE_ATTRIBUTES = frozenset({"kind", "fields", "before", "after", "by", "at"})
FLOW_ATTRIBUTES = frozenset({"key", "name", "owner", "controller"})
CEL_VARIABLES = frozenset({"record", "change", "now", "today", "flow"})

_STRING_LITERAL = re.compile(
    r"""[rR]?[bB]?(?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""",
    re.DOTALL,
)
_INDEXED = re.compile(r"""\b(record|change|flow)\s*\[\s*(?:'([^']*)'|"([^"]*)")\s*\]""")
_DOTTED = re.compile(r"(?<![\w.])(record|change|flow)\s*\.\s*([A-Za-z_]\w*)")
# Macros bind their own loop variable: `items.exists(x, x > 1)` introduces `x`.
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


@dataclass(frozen=True)
class ConditionIssue:
    message: str
    hint: str = ""


@lru_cache(maxsize=4096)
def compile_condition(expression: str) -> Any:
    """The compiled program; raises ValueError when the expression does not compile."""
    if len(expression) > MAX_CONDITION_CHARS:
        raise ValueError(f"the condition is longer than {MAX_CONDITION_CHARS} characters")
    # Imported here: the cel package also loads its interactive shell (prompt_toolkit), half a
    # second that every command would otherwise pay at start-up.
    import cel  # noqa: PLC0415 - lazy: it loads an interactive shell too (see above)

    return cel.compile(expression)


# The functions the CEL library (common-expression-language 0.10) evaluates; any other name
# compiles but fails on every run, so it is refused when the flow is saved.
CEL_FUNCTIONS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "string", "int", "uint",
        "double", "bytes", "timestamp", "duration", "dyn", "type", "getFullYear", "getMonth",
        "getDayOfMonth", "getDate", "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes",
        "getSeconds", "getMilliseconds",
    }
)  # fmt: skip
_COMPREHENSION = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(")


@dataclass(frozen=True)
class ConditionShape:
    """What bounds the cost of an expression: its comprehension macros (map, filter, all,
    exists, exists_one), whether one is inside another's body, its `+` (the only way CEL makes
    a longer string or list) and about how many items its literal lists hold."""

    comprehensions: int
    nested: bool
    pluses: int
    literal_items: int
    unknown_functions: tuple[str, ...]

    @property
    def bounded_by_its_text(self) -> bool:
        """Without comprehensions or `+`, the work is linear in the expression and the data."""
        return self.comprehensions == 0 and self.pluses == 0


@lru_cache(maxsize=4096)
def condition_shape(expression: str) -> ConditionShape:
    bare = _STRING_LITERAL.sub('""', expression)
    spans: list[tuple[int, int]] = []
    for match in _COMPREHENSION.finditer(bare):
        spans.append((match.end(), _closing(bare, match.end())))
    nested = any(
        outer_start <= inner_start < outer_end
        for outer_start, outer_end in spans
        for inner_start, _ in spans
        if (inner_start, _) != (outer_start, outer_end)
    )
    try:
        called = [str(f) for f in compile_condition(expression).functions()]
    except Exception:  # a compile error is reported on its own
        called = []
    unknown = tuple(
        sorted({f for f in called if f[:1].isalpha() and f not in CEL_FUNCTIONS and f != "of"})
    )
    return ConditionShape(
        comprehensions=len(spans),
        nested=nested,
        pluses=bare.count("+"),
        literal_items=bare.count(",") + bare.count("[") + 1,
        unknown_functions=unknown,
    )


def _closing(text: str, start: int) -> int:
    """The index of the parenthesis closing the one just before `start`."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return len(text)


@dataclass(frozen=True)
class ConditionReads:
    """What an expression reads: its top-level names and, when it only ever reads the record
    field by field (`record.status`, `record['status']`), those fields (None: the whole record,
    e.g. `size(record)` or `record.exists(k, ...)`)."""

    names: frozenset[str]
    record_fields: frozenset[str] | None


_RECORD = re.compile(r"(?<![\w.])record\b")
_RECORD_FIELD = re.compile(
    # `record.name(` is a method or macro on the whole record (`record.exists(k, ...)`).
    r"""(?<![\w.])record\s*(?:\.\s*([A-Za-z_]\w*)(?!\w|\s*\()|\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])"""
)


@lru_cache(maxsize=4096)
def condition_reads(expression: str) -> ConditionReads:
    """What `expression` reads, so that a caller can hand over only that."""
    # The CEL library converts every variable it is given, value by value, on each call (about
    # 2 us a value; a contact has twenty): handing over only what the expression can read is the
    # same result at a fraction of the cost. Any doubt hands over everything.
    try:
        names = frozenset(str(v) for v in compile_condition(expression).variables())
    except Exception:  # compile errors surface in `evaluate`, with the words a user needs
        return ConditionReads(CEL_VARIABLES, None)
    if "record" not in names:
        return ConditionReads(names, frozenset())
    bare = _STRING_LITERAL.sub('""', expression)
    if _MACRO_VARIABLE.search(bare) and "record" in _MACRO_VARIABLE.findall(bare):
        return ConditionReads(names, None)  # a macro rebinds `record`: not the record any more
    uses = len(_RECORD.findall(bare))
    # Field names are read from the expression itself, since literals were blanked in `bare`.
    fields = [m.group(1) or m.group(2) or m.group(3) for m in _RECORD_FIELD.finditer(expression)]
    field_uses = len(_RECORD_FIELD.findall(bare))
    if uses != field_uses or None in fields or len(fields) != field_uses:
        return ConditionReads(names, None)
    return ConditionReads(names, frozenset(f for f in fields if f is not None))


@dataclass(frozen=True)
class TextComparison:
    """`record.<field> == '<text>'` (or `!=`): for a field that holds text, its value is just
    the comparison of two Python strings, as CEL compares them (code point by code point)."""

    field: str
    equal: bool  # `==`; False: `!=`
    text: str

    def value(self, values: Mapping[str, Any]) -> bool | None:
        """The expression's value for a record's `values`, or None when the field does not
        hold text (missing, empty, another type: CEL's rules, which the library applies)."""
        value = values.get(self.field)
        if type(value) is not str:
            return None
        return (value == self.text) is self.equal


_TEXT_COMPARISON = re.compile(
    r"""[ \t\n\r]*record[ \t\n\r]*\.[ \t\n\r]*([A-Za-z_][A-Za-z0-9_]*)[ \t\n\r]*(==|!=)"""
    r"""[ \t\n\r]*(?:'([^'\\\n\r]*)'|"([^"\\\n\r]*)")[ \t\n\r]*"""
)


@lru_cache(maxsize=4096)
def text_comparison(expression: str) -> TextComparison | None:
    """`expression` as a `TextComparison` when it is one (no escapes in the text), else None.
    Only for an expression that compiles: the caller compiles it first."""
    match = _TEXT_COMPARISON.fullmatch(expression)
    if match is None or match.group(1) in RECORD_META_FIELDS:
        return None
    text = match.group(3) if match.group(3) is not None else match.group(4)
    return TextComparison(match.group(1), match.group(2) == "==", text)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "syntax error"


def check_condition(
    expression: str,
    *,
    record_fields: Collection[str] | None,
    extra_variables: Iterable[str] = (),
) -> list[ConditionIssue]:
    """Every problem with `expression`: syntax, unknown variables, unknown record fields.

    `record_fields` None means the record type is unknown (its fields are not checked).
    """
    if not expression.strip():
        return [ConditionIssue("the condition is empty", "write a CEL expression or remove it")]
    try:
        program = compile_condition(expression)
    except (ValueError, RuntimeError, TypeError) as exc:
        detail = _cel_error_detail(str(exc))
        return [ConditionIssue(f"the CEL condition does not compile: {detail}", _CEL_HINT)]
    issues: list[ConditionIssue] = []
    bare = _STRING_LITERAL.sub('""', expression)
    known = set(CEL_VARIABLES) | set(extra_variables) | set(_MACRO_VARIABLE.findall(bare))
    try:
        variables = [str(v) for v in program.variables()]
    except (ValueError, RuntimeError):  # pragma: no cover - the library always lists them
        variables = []
    for name in variables:
        if name not in known:
            issues.append(
                ConditionIssue(
                    f"unknown variable {name!r} in the condition",
                    did_you_mean(name, CEL_VARIABLES) or f"use {', '.join(sorted(CEL_VARIABLES))}",
                )
            )
    for root, attribute in _attributes(expression, bare):
        issue = _check_attribute(root, attribute, record_fields)
        if issue is not None and issue not in issues:
            issues.append(issue)
    shape = condition_shape(expression)
    for name in shape.unknown_functions:
        issues.append(
            ConditionIssue(
                f"unknown CEL function {name!r} in the condition",
                did_you_mean(name, CEL_FUNCTIONS) or f"known: {', '.join(sorted(CEL_FUNCTIONS))}",
            )
        )
    if shape.nested:
        issues.append(ConditionIssue(NESTED_COMPREHENSION, NESTED_COMPREHENSION_HINT))
    return issues


NESTED_COMPREHENSION = (
    "the condition has a map/filter/all/exists/exists_one inside another one, whose cost grows "
    "with the product of the lists' sizes; nested comprehensions are not allowed"
)
NESTED_COMPREHENSION_HINT = (
    "test the inner list once, outside (e.g. with `in`), or split the condition into two steps"
)


_CEL_HINT = "CEL looks like: record.status == 'client' && record.amount > 100"


def _cel_error_detail(text: str) -> str:
    for line in text.splitlines():
        if "ERROR" in line:
            return line.split("ERROR:", 1)[-1].strip()
    return _first_line(text)


def _attributes(expression: str, bare: str) -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2) or m.group(3) or "") for m in _INDEXED.finditer(expression)]
    found += [(m.group(1), m.group(2)) for m in _DOTTED.finditer(bare)]
    return found


def _check_attribute(
    root: str, attribute: str, record_fields: Collection[str] | None
) -> ConditionIssue | None:
    if root == "record":
        if record_fields is None:
            return None
        allowed = set(record_fields) | RECORD_META_FIELDS
    elif root == "change":
        allowed = set(CHANGE_ATTRIBUTES)
    else:
        allowed = set(FLOW_ATTRIBUTES)
    if attribute in allowed:
        return None
    what = "the record type has no field" if root == "record" else f"{root} has no attribute"
    return ConditionIssue(
        f"{what} {attribute!r} ({root}.{attribute})",
        did_you_mean(attribute, allowed) or f"known: {', '.join(sorted(allowed))}",
    )


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'did you mean 'x'?' for the closest candidate, or '' when none is close."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else ""
