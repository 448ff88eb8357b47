"""The flow validator: a YAML / JSON document in, a FlowDefinition out, or every problem at once.

Two passes. The models check the shape (unknown keys, wrong types, missing keys); pydantic reports
all of those together. The parts with a wrong shape are then set aside and the meaning of the rest
is checked (record fields, CEL, templates, users, step graph), so one run lists everything it can.
Invalid input only ever raises InvalidInputError.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from crmflow.engine.conditions import did_you_mean
from crmflow.engine.definition.checks import CheckScope, FlowChecker
from crmflow.engine.definition.common import KEY_PATTERN
from crmflow.engine.definition.context_checks import TemplateCheck
from crmflow.engine.definition.flow import SCHEMA_VERSION, FlowDefinition
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.source import (
    MAX_DOCUMENT_CHARS,
    ParsedSource,
    join_path,
    parse_source,
    plain_data,
)
from crmflow.errors import InvalidInputError, Problem, shown

__all__ = [
    "CheckedFlow",
    "ValidationContext",
    "check_flow_data",
    "check_flow_text",
    "flow_from_data",
    "parse_flow",
]


@dataclass(frozen=True)
class ValidationContext:
    record_types: Mapping[str, RecordType]  # built-ins + the organisation's own types
    users: frozenset[str] | None = None  # known usernames; None = cannot check, skip
    groups: frozenset[str] | None = None  # known user group names; None = skip
    # Each group's active members (a private flow's group must be flow members); None = skip
    group_members: Mapping[str, frozenset[str]] | None = None
    queries: Mapping[str, str] | None = None  # saved query name -> its record type; None = skip
    flows: Mapping[str, str] | None = None  # other flows' key -> record type; None = skip
    allow_sql: bool = False  # run_sql actions allowed (a server setting)
    # The problems of a stored email template used by a flow of a record type with given
    # variables; None = the template is not loaded (the services pass their own check).
    email_templates: TemplateCheck | None = None


@dataclass(frozen=True)
class CheckedFlow:
    """A valid flow and its warnings: what does not make it invalid but may surprise (a
    template showing a field that may be empty), each with its path, line and hint."""

    definition: FlowDefinition
    warnings: list[Problem]


def parse_flow(
    text: str,
    *,
    context: ValidationContext,
    source: str = "<input>",
    fmt: Literal["yaml", "json"] | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> FlowDefinition:
    """Parse and check a flow document; raises InvalidInputError listing every problem."""
    return check_flow_text(
        text, context=context, source=source, fmt=fmt, max_chars=max_chars
    ).definition


def check_flow_text(
    text: str,
    *,
    context: ValidationContext,
    source: str = "<input>",
    fmt: Literal["yaml", "json"] | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> CheckedFlow:
    """`parse_flow`, keeping the warnings of a valid flow (`crmflow flows validate`, the API)."""
    parsed = parse_source(text, source=source, fmt=fmt, max_chars=max_chars)
    return _finish(parsed, context)


def flow_from_data(
    data: Mapping[str, Any], *, context: ValidationContext, source: str = "<input>"
) -> FlowDefinition:
    """The same checks on data already parsed (an API body); problems carry no line numbers."""
    return _finish(ParsedSource(data=plain_data(data), source=source), context).definition


def check_flow_data(
    data: Any, *, context: ValidationContext
) -> tuple[FlowDefinition | None, list[Problem]]:
    """The flow and no problems, or None and every problem (without source or line)."""
    flow, problems, _ = _check(data, context)
    return flow, problems


def _finish(parsed: ParsedSource, context: ValidationContext) -> CheckedFlow:
    flow, problems, warnings = _check(parsed.data, context)

    def located(found: list[Problem]) -> list[Problem]:
        out = [
            Problem(p.path, p.message, p.hint, parsed.line_of(p.path), parsed.source) for p in found
        ]
        out.sort(key=lambda p: p.line if p.line is not None else 1 << 30)
        return out

    if problems or flow is None:
        raise InvalidInputError(f"the flow {parsed.source}", located(problems))
    return CheckedFlow(flow, located(warnings))


def _check(
    data: Any, context: ValidationContext
) -> tuple[FlowDefinition | None, list[Problem], list[Problem]]:
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {_type_name(data)}"
        return (
            None,
            [
                Problem(
                    "",
                    f"a flow document is a mapping of keys, got {kind}",
                    "start with schema_version: 1",
                )
            ],
            [],
        )
    data = dict(data)
    problems: list[Problem] = []
    version = data.get("schema_version")
    if "schema_version" not in data:
        problems.append(
            Problem(
                "schema_version", "is missing", f"add schema_version: {SCHEMA_VERSION} at the top"
            )
        )
        data["schema_version"] = SCHEMA_VERSION
    elif version != SCHEMA_VERSION or isinstance(version, bool):
        problems.append(
            Problem(
                "schema_version",
                f"unsupported schema version {version!r}",
                f"this crmflow reads schema_version: {SCHEMA_VERSION}",
            )
        )
        if isinstance(version, int) and not isinstance(version, bool):
            # Another version means other rules: checking it against these ones would mislead.
            return None, problems, []
        data["schema_version"] = SCHEMA_VERSION
    try:
        flow: FlowDefinition | None = FlowDefinition.model_validate(data)
        skipped: frozenset[str] = frozenset()
    except ValidationError as exc:
        shape = [_problem_from_error(error, data) for error in exc.errors()]
        problems += _unique(shape)
        flow, skipped = _validate_readable_part(data, [p.path for p in shape])
    if flow is None:
        return None, problems, []
    scope = CheckScope(
        record_types=context.record_types,
        users=context.users,
        groups=context.groups,
        group_members=context.group_members,
        queries=context.queries,
        flows=context.flows,
        allow_sql=context.allow_sql,
        email_templates=context.email_templates,
        skipped=skipped,
        unreadable_step_keys=frozenset(
            _raw_step_key(data, path) for path in skipped if path.count("[") == 1
        )
        - {""},
    )
    checker = FlowChecker(flow, scope)
    problems += checker.run()
    if problems:
        return None, _unique(problems), []
    return flow, [], _unique(checker.warnings)


# -- setting aside the parts with a wrong shape -----------------------------------------------

Part = tuple[str, int, int | None]
_PLACEHOLDER_TRIGGER = {"type": "manual"}
_PLACEHOLDER_ACTION = {"type": "history", "message": "placeholder"}


def _validate_readable_part(
    data: dict[str, Any], paths: list[str]
) -> tuple[FlowDefinition | None, frozenset[str]]:
    """The flow with each malformed trigger, step or action replaced by a placeholder.

    Returns None when a problem lies outside those parts (e.g. a top-level key), as then no
    meaningful flow remains to check.
    """
    copy = plain_data(data)
    skipped: set[Part] = set()
    for path in paths:
        enclosing = _enclosing_part(path)
        if enclosing is None:
            return None, frozenset()
        skipped.add(enclosing)
    for kind, index, action_index in sorted(
        skipped, key=lambda p: (p[0], p[1], -1 if p[2] is None else p[2])
    ):
        if kind == "triggers":
            copy["triggers"][index] = dict(_PLACEHOLDER_TRIGGER)
        elif action_index is None:
            key = _raw_step_key(data, f"steps[{index}]")
            copy["steps"][index] = {"type": "merge", "key": key or f"invalid-step-{index}"}
        else:
            step = copy["steps"][index]
            if isinstance(step, dict) and isinstance(step.get("actions"), list):
                step["actions"][action_index] = dict(_PLACEHOLDER_ACTION)
    names = {_part_path(part) for part in skipped}
    # A step set aside wholly makes its actions' placeholders moot.
    names = {n for n in names if not any(n.startswith(o + ".") for o in names)}
    try:
        return FlowDefinition.model_validate(copy), frozenset(names)
    except ValidationError:
        return None, frozenset()


def _enclosing_part(path: str) -> Part | None:

    match = re.match(r"^(triggers|steps)\[(\d+)\](?:\.actions\[(\d+)\](?:$|[.\[]))?", path)
    if match is None:
        return None
    kind, index, action = match.group(1), int(match.group(2)), match.group(3)
    if kind == "triggers" or action is None:
        return (kind, index, None)
    return (kind, index, int(action))


def _part_path(part: Part) -> str:
    kind, index, action = part
    return f"{kind}[{index}]" if action is None else f"{kind}[{index}].actions[{action}]"


def _raw_step_key(data: Mapping[str, Any], path: str) -> str:
    steps = data.get("steps")
    index = int(path[path.index("[") + 1 : path.index("]")])
    if isinstance(steps, list) and index < len(steps) and isinstance(steps[index], dict):
        key = steps[index].get("key")
        if isinstance(key, str) and KEY_PATTERN.match(key):
            return key
    return ""


# -- pydantic errors as problems ----------------------------------------------------------------


def _problem_from_error(error: Mapping[str, Any], data: Any) -> Problem:
    loc = tuple(error["loc"])
    path, clean_loc = _path_of(loc, data)
    kind = str(error["type"])
    value = error.get("input")
    message = str(error.get("msg", "is not valid"))
    hint = ""
    if kind == "extra_forbidden":
        name = str(clean_loc[-1]) if clean_loc else "?"
        allowed = _allowed_keys(loc[:-1])
        message = f"unknown field {name!r}"
        hint = did_you_mean(name, allowed) or (
            f"allowed here: {', '.join(sorted(allowed))}" if allowed else ""
        )
    elif kind == "missing":
        message = "is required"
        hint = f"add {clean_loc[-1]}: ..." if clean_loc else ""
    elif kind == "union_tag_invalid":
        tags = str(error.get("ctx", {}).get("expected_tags", ""))
        expected_tags = [t.strip(" '") for t in tags.split(",")]
        tag = str(error.get("ctx", {}).get("tag", value))
        path = join_path(path, "type")
        message = f"unknown type {tag!r}"
        hint = did_you_mean(tag, expected_tags) or f"types: {', '.join(expected_tags)}"
    elif kind == "union_tag_not_found":
        path = join_path(path, "type")
        message = "is required"
        hint = "say which kind this is with type: ..."
    elif kind.endswith("_type") or kind in {"model_attributes_type", "dict_type", "list_type"}:
        message = f"{_expected(kind, message)}, got {_type_name(value)} {shown(value)}"
    elif kind in {"literal_error", "enum"}:
        expected = str(error.get("ctx", {}).get("expected", ""))
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        message = f"{shown(value)} is not allowed: expected {expected}"
        hint = did_you_mean(str(value), options)
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        message = f"{shown(value)} does not have the expected form ({message.lower()})"
    else:
        message = message[:1].lower() + message[1:]
    return Problem(path, message, hint)


def _path_of(loc: tuple[Any, ...], data: Any) -> tuple[str, list[Any]]:
    """The document path of a pydantic location, leaving out the union tags pydantic adds."""
    path = ""
    clean: list[Any] = []
    current: Any = data
    for element in loc:
        if isinstance(element, str) and element.startswith("~"):
            continue  # the tag of a form chosen by a callable discriminator (`~word`)
        if isinstance(current, list) and isinstance(element, int):
            path = join_path(path, element)
            clean.append(element)
            current = current[element] if 0 <= element < len(current) else None
            continue
        if isinstance(current, dict):
            if element in current:
                path = join_path(path, str(element))
                clean.append(element)
                current = current[element]
                continue
            if element == current.get("type", "action"):
                continue
        path = join_path(path, element if isinstance(element, int) else str(element))
        clean.append(element)
        current = None
    return path, clean


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = FlowDefinition
    for element in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            name = next(
                (n for n, info in fields.items() if element in (n, info.alias)),
                None,
            )
            if name is None:
                return None
            current = fields[name].annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif _is_union(current):
            current = next(
                (m for m in typing.get_args(current) if _tag_of(m) == element),
                None,
            )
            if current is None:
                return None
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if _is_union(annotation):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _is_union(annotation: Any) -> bool:

    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _tag_of(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return args[0] if args else None
    return None


_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "datetime_type": "expected a date and time (YYYY-MM-DDTHH:MM)",
    "date_type": "expected a date (YYYY-MM-DD)",
}


def _expected(kind: str, message: str) -> str:
    return _EXPECTED.get(kind, message[:1].lower() + message[1:])


def _type_name(value: Any) -> str:
    names = {
        dict: "mapping",
        list: "list",
        str: "text",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "nothing",
    }
    return names.get(type(value), type(value).__name__)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out: list[Problem] = []
    for problem in problems:
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            out.append(problem)
    return out
