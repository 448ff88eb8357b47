"""Forms for flow documents, generated from the flow's JSON Schema (issue 13): one source of truth.

`crmflow.engine.jsonschema.flow_json_schema()` describes every trigger kind, step type and action
kind; `form_fields()` turns one of its objects (and the document's current value) into a tree of
`FormField`s a page renders, and `apply_form()` writes the posted values back into a ruamel
round-trip node, changing only the keys whose value differs: the rest of the file keeps its
bytes, comments and order. A shape the renderer does not know becomes a field of widget
`"unsupported"` (the page says to use the YAML view); `unsupported_kinds()` names every kind that
has one, and a test keeps that list empty.

Pure: no SQL, no IO. The pages pass the record type's fields and the saved queries as pickers.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString, ScalarString

from crmflow.engine.jsonschema import flow_json_schema
from crmflow.engine.numbers import not_finite
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "FormField",
    "Kind",
    "StepSummary",
    "action_kinds",
    "apply_form",
    "comparable",
    "dump_document",
    "find_step",
    "form_fields",
    "kind_schema",
    "load_document",
    "new_flow_text",
    "problems_by_field",
    "refilled",
    "rename_references",
    "round_trip_yaml",
    "saved_step_text",
    "slug",
    "step_kinds",
    "step_schema",
    "step_summaries",
    "trigger_kinds",
    "unsupported_kinds",
    "written_back",
]

# Long texts get a text area; the schema says "string" for all of them.
_MULTILINE = frozenset(
    {
        "body",
        "message",
        "description",
        "notes",
        "condition",
        "until",
        "sql",
        "text",
        "if",
        "entry_condition",
        "goal",
    }
)
_FIELD_PICKERS = frozenset({"field", "date_field", "zone_field"})
_QUERY_PICKERS = frozenset({"query"})
# Other pickers (services.form_pickers gives their values): a property's name, or its kind and
# name, -> the picker. A select when the value must be one of the list; a datalist (free text
# stays possible, e.g. a name not made yet) otherwise; a list of lines gets an "Add" input.
_PICKERS: Mapping[str, str] = {
    "user": "user",
    "users": "user",
    "decide": "user",
    "group": "group",
    "groups": "group",
    "add_to_group.group": "list",
    "remove_from_group.group": "list",
    "template": "template",
    "flow": "flow",
    "from_flows": "flow",
    "create_record.record_type": "record_type",
    "set_status.status": "status",
    "status_changed.from": "status",
    "status_changed.to": "status",
    "fields": "field",
    # The flow's own settings (services.flow_form_settings).
    "owner": "user",
    "controller": "user",
    "members": "user",
    "record_type": "record_type",
    "timezone": "timezone",
    # Where a step goes: one of the document's step keys.
    "next": "step",
    "goto": "step",
    "else": "step",
    "on_timeout": "step",
}
# The properties whose value is a step's key: a renamed step is renamed there too.
STEP_REFERENCES = frozenset({"next", "goto", "else", "on_timeout"})
# Texts rendered as templates get the variable picker; CEL conditions the conditions builder.
_TEMPLATED = frozenset({"subject", "body", "message", "title", "description", "reason"})
_CONDITIONS = frozenset({"condition", "until", "if", "entry_condition", "goal"})
Pickers = Mapping[str, Sequence[str | tuple[str, str]]]


@dataclass(frozen=True)
class Kind:
    """One kind of a discriminated union: its `type` value, title, description and schema."""

    value: str
    title: str
    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class FormField:
    """One input of a generated form. `path` is the validator's path below the form's root
    (`subject`, `timing.days`, `actions[0].cc`): the input's name is `f:<path>` and a problem
    of that path shows at this field."""

    path: str
    label: str
    # text textarea integer number checkbox select lines scalar yaml group items choice unsupported
    widget: str
    required: bool = False
    help: str = ""
    value: str = ""
    checked: bool = False
    options: tuple[tuple[str, str], ...] = ()
    children: tuple[FormField, ...] = ()
    # An optional group or kind the document leaves out: the page shows it folded.
    folded: bool = False
    # A picker beside the input (services.form_pickers): field user group list template flow
    # record_type query variables condition; `options` then holds its values for a datalist.
    picker: str = ""
    # What the picker's page fragments need to know (the flow's record type).
    picker_arg: str = ""

    @property
    def name(self) -> str:
        return f"f:{self.path}"

    @property
    def id(self) -> str:
        return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)

    def walk(self) -> Iterator[FormField]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class StepSummary:
    index: int
    key: str
    name: str
    type: str
    active: bool
    actions: int


# -- the schema ----------------------------------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    return flow_json_schema()


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = _schema()["$defs"][str(node["$ref"]).rsplit("/", 1)[-1]]
    return node


def _kinds(union: Mapping[str, Any]) -> list[Kind]:
    kinds = []
    for option in union.get("oneOf") or union.get("anyOf") or []:
        target = _resolve(option)
        const = (target.get("properties") or {}).get("type", {}).get("const")
        if const is None:
            continue
        kinds.append(
            Kind(
                value=str(const),
                title=_kind_title(str(const)),
                description=str(target.get("description") or "").split("\n\n")[0],
                schema=target,
            )
        )
    return kinds


def _kind_title(value: str) -> str:
    return value.replace("_", " ").capitalize()


def trigger_kinds() -> list[Kind]:
    return _kinds(_schema()["properties"]["triggers"]["items"])


def step_kinds() -> list[Kind]:
    return _kinds(_schema()["properties"]["steps"]["items"])


def action_kinds() -> list[Kind]:
    action = _schema()["$defs"]["ActionStep"]["properties"]["actions"]["items"]
    return _kinds(action)


def kind_schema(kinds: Sequence[Kind], value: str) -> Mapping[str, Any] | None:
    return next((k.schema for k in kinds if k.value == value), None)


def _without_null(node: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """A property's schema without its `null` option, and whether it had one."""
    options = node.get("anyOf")
    if isinstance(options, list) and any(o.get("type") == "null" for o in options):
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            inner = dict(rest[0])
            for extra in ("title", "description", "default"):
                if extra in node:
                    inner.setdefault(extra, node[extra])
            return inner, True
        return {**node, "anyOf": rest}, True
    return node, False


def _is_scalar(node: Mapping[str, Any]) -> bool:
    node = _resolve(node)
    return "enum" in node or node.get("type") in ("string", "integer", "number", "boolean")


def _shape(node: Mapping[str, Any], name: str) -> str:
    """The widget a property's schema calls for."""
    node, _ = _without_null(node)
    union = node.get("oneOf") or node.get("anyOf")
    if union and "discriminator" in node:
        return "choice"
    if union and all(_is_scalar(o) for o in union):
        return "scalar"
    if union and any(_kinds({"oneOf": [o]}) for o in union):
        return "choice"
    if union:
        # Mixed: a word or an object (`on_failure: stop` or `{goto: step}`): a little YAML.
        return "yaml"
    if "$ref" in node:
        target = _resolve(node)
        if "enum" in target:
            return "select"
        return "group" if target.get("properties") else "unsupported"
    if "enum" in node:
        return "select"
    kind = node.get("type")
    if kind == "string":
        return "textarea" if name in _MULTILINE else "text"
    if kind in ("integer", "number", "boolean"):
        return {"integer": "integer", "number": "number", "boolean": "checkbox"}[str(kind)]
    if kind == "array":
        items = node.get("items") or {}
        if _is_scalar(items):
            return "lines"
        if "discriminator" in items or _kinds(items):
            return "items"
        if _resolve(items).get("properties"):
            return "items"
        return "unsupported"
    if kind == "object" and not node.get("properties"):
        return "yaml"
    if kind is None and not union and set(node) <= {"title", "description", "default"}:
        return "scalar"  # any value (field_changed's from / to)
    return "unsupported"


# -- rendering -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, ScalarString):
        return str(value)
    return value


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
        return json.dumps(value)  # a text that reads as a number or true: quoted
    return json.dumps(_plain(value), default=str)


def _parse_scalar(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _yaml_text(value: Any) -> str:
    if value is None:
        return ""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump(value, out)
    text = out.getvalue()
    return text[:-5] if text.endswith("\n...\n") else text


def _label(node: Mapping[str, Any], name: str) -> str:
    return str(node.get("title") or name.replace("_", " ").capitalize())


def form_fields(
    schema: Mapping[str, Any],
    value: Mapping[str, Any] | None,
    *,
    prefix: str = "",
    pickers: Pickers | None = None,
) -> list[FormField]:
    """The fields of one schema object (a trigger, a step, an action), filled from `value`.
    The discriminator `type` is left out (the caller shows the kind); `pickers` maps a
    property name (`field`, `query`) to the names to pick from."""
    schema = _resolve(schema)
    required = set(schema.get("required") or ())
    value = value if isinstance(value, Mapping) else {}
    kind = str(((schema.get("properties") or {}).get("type") or {}).get("const") or "")
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        if name == "type" and "const" in prop:
            continue
        path = f"{prefix}.{name}" if prefix else name
        each = _field(prop, name, path, value.get(name), name in value, name in required, pickers)
        fields.append(_with_picker(each, f"{kind}.{name}", name, pickers))
    return fields


def _choices(values: Sequence[str | tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((v, v) if isinstance(v, str) else (str(v[0]), str(v[1])) for v in values)


def _with_picker(each: FormField, qualified: str, name: str, pickers: Pickers | None) -> FormField:
    """`each` with the picker its name calls for, when the page gave that picker's values."""
    if pickers is None or each.widget not in ("text", "textarea", "lines"):
        return each
    record_type = next(iter(_choices(pickers.get("record_type_of_flow", ()))), ("", ""))[0]
    if name in _CONDITIONS and each.widget == "textarea":
        options = _choices(pickers.get("condition_fields", ()))
        return replace(each, picker="condition", options=options, picker_arg=record_type)
    if name in _TEMPLATED and each.widget in ("text", "textarea"):
        options = _choices(pickers.get("variables", ()))
        return replace(each, picker="variables", options=options, picker_arg=record_type)
    picker = _PICKERS.get(qualified) or _PICKERS.get(name)
    if picker is None or picker not in pickers:
        return each
    return replace(each, picker=picker, options=_choices(pickers[picker]))


def _field(
    prop: Mapping[str, Any],
    name: str,
    path: str,
    current: Any,
    present: bool,
    required: bool,
    pickers: Pickers | None,
) -> FormField:
    inner, _ = _without_null(prop)
    widget = _shape(prop, name)
    label = _label(prop, name)
    help_text = str(_resolve(inner).get("description") or prop.get("description") or "")
    help_text = help_text.split("\n\n", maxsplit=1)[0]
    default = prop.get("default")
    shown = current if present else default
    common: dict[str, Any] = {
        "path": path,
        "label": label,
        "required": required,
        "help": help_text,
    }
    if widget in ("text", "textarea"):
        key = "field" if name in _FIELD_PICKERS else "query" if name in _QUERY_PICKERS else ""
        options = _choices(pickers.get(key, ())) if pickers and key else ()
        if options:
            text = "" if shown is None else str(shown)
            known = [v for v, _ in options]
            # A value not in the list (a query of another page, a field since removed) stays.
            kept = () if text in known or not text else ((text, text),)
            choices = (("", "—"), *kept, *options)
            return FormField(widget="select", value=text, options=choices, picker=key, **common)
        return FormField(widget=widget, value="" if shown is None else str(shown), **common)
    if widget in ("integer", "number", "scalar"):
        return FormField(widget=widget, value=_scalar_text(shown), **common)
    if widget == "checkbox":
        return FormField(widget=widget, checked=bool(shown), **common)
    if widget == "select":
        target = _resolve(inner)
        values = [str(v) for v in target.get("enum") or ()]
        choices = tuple((v, _kind_title(v)) for v in values)
        if not required and default is None:
            choices = (("", "—"), *choices)
        return FormField(
            widget=widget, value="" if shown is None else str(shown), options=choices, **common
        )
    if widget == "lines":
        # A single address may stand for a list of one (`to: someone@example.org`).
        items = [shown] if isinstance(shown, str) else shown if isinstance(shown, list) else []
        return FormField(widget=widget, value="\n".join(str(i) for i in items), **common)
    if widget == "yaml":
        return FormField(widget=widget, value=_yaml_text(current) if present else "", **common)
    if widget == "group":
        children = form_fields(
            inner, current if isinstance(current, Mapping) else None, prefix=path, pickers=pickers
        )
        folded = not required and not isinstance(current, Mapping)
        return FormField(widget=widget, children=tuple(children), folded=folded, **common)
    if widget == "choice":
        kinds = _kinds(inner)
        kind = str(current.get("type", "")) if isinstance(current, Mapping) else ""
        choices = tuple((k.value, k.title) for k in kinds)
        if not required:
            choices = (("", "—"), *choices)
        chosen = kind_schema(kinds, kind)
        children = (
            form_fields(chosen, current, prefix=path, pickers=pickers) if chosen is not None else []
        )
        if chosen is not None and not help_text:
            common["help"] = next(k.description for k in kinds if k.value == kind)
        return FormField(
            widget=widget,
            value=kind,
            options=choices,
            children=tuple(children),
            folded=not required and not kind,
            **common,
        )
    if widget == "items":
        items_schema = inner.get("items") or {}
        kinds = _kinds(items_schema)
        children = []
        for index, item in enumerate(current if isinstance(current, list) else []):
            item_path = f"{path}[{index}]"
            item_label = f"{label} {index + 1}"
            if isinstance(item, Mapping) and item.get("name"):
                item_label += f": {item['name']}"
            if kinds:
                each = _field(items_schema, name, item_path, item, True, True, pickers)
                children.append(replace(each, label=item_label))
            else:
                sub = form_fields(items_schema, item, prefix=item_path, pickers=pickers)
                children.append(
                    FormField(path=item_path, label=item_label, widget="group", children=tuple(sub))
                )
        adds = tuple((k.value, k.title) for k in kinds)  # "Add one" of these kinds
        return FormField(widget=widget, children=tuple(children), options=adds, **common)
    return FormField(widget="unsupported", value=_yaml_text(current) if present else "", **common)


def unsupported_kinds() -> list[str]:
    """Every trigger kind, step type and action kind whose form has a field the renderer
    cannot draw, as `kind: field path` (empty when the editor covers the whole schema)."""
    found = []
    groups = (("trigger", trigger_kinds()), ("step", step_kinds()), ("action", action_kinds()))
    for what, kinds in groups:
        for kind in kinds:
            for top in form_fields(kind.schema, _example_value(kind.schema)):
                for each in top.walk():
                    if each.widget == "unsupported":
                        found.append(f"{what} {kind.value}: {each.path}")
    return found


def _example_value(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A value with one item in each list of objects and each union filled with its first
    kind, so that a walk reaches every nested shape."""
    schema = _resolve(schema)
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if name == "type" and "const" in prop:
            out[name] = prop["const"]
            continue
        inner, _ = _without_null(prop)
        shape = _shape(prop, name)
        if shape == "group":
            out[name] = _example_value(inner)
        elif shape == "choice":
            kinds = _kinds(inner)
            out[name] = _example_value(kinds[0].schema) if kinds else {}
        elif shape == "items":
            items = inner.get("items") or {}
            kinds = _kinds(items)
            out[name] = [_example_value(kinds[0].schema if kinds else items)]
    return out


# -- writing back --------------------------------------------------------------------------------


_ABSENT = object()
# Texts another YAML reader (1.1) would take for a number, a time in minutes or a boolean.
_AMBIGUOUS = re.compile(r"[-+]?[\d_.:]+([eE][-+]?\d+)?|(?i:y|n|yes|no|true|false|on|off|null|~)")
_MAX_ADDED_ITEMS = 100


def apply_form(
    schema: Mapping[str, Any],
    node: CommentedMap,
    form: Mapping[str, str],
    *,
    prefix: str = "",
    where: str = "",
) -> list[Problem]:
    """Write the posted values of `schema`'s fields (`f:<path>` keys of `form`) into `node`,
    changing only the keys whose value differs; a field not posted is left alone. Returns
    the problems of values that cannot be read (a word in a number field), at `where + path`."""
    schema = _resolve(schema)
    required = set(schema.get("required") or ())
    problems: list[Problem] = []
    had = set(node)
    for name, prop in (schema.get("properties") or {}).items():
        if name == "type" and "const" in prop:
            continue
        path = f"{prefix}.{name}" if prefix else name
        problems += _apply_field(prop, name, path, node, form, name in required, where)
    _in_schema_order(node, had, list(schema.get("properties") or ()))
    return problems


def _in_schema_order(node: CommentedMap, had: set[Any], order: list[str]) -> None:
    """Move each key added to `node` where the schema lists it among the keys already there
    (a new `timing` goes before the step's `actions`, not after them)."""
    rank = {name: index for index, name in enumerate(order)}
    for name in [k for k in node if k not in had and k in rank]:
        later = [k for k in node if rank.get(k, -1) > rank[name]]
        if later:
            value = node.pop(name)
            node.insert(list(node).index(later[0]), name, value)


def _posted(form: Mapping[str, str], path: str) -> str | None:
    value = form.get(f"f:{path}")
    return None if value is None else value.replace("\r\n", "\n")


def _set(node: CommentedMap, name: str, new: Any, default: Any) -> None:
    old = node.get(name, _ABSENT)
    if new is None:
        if old is not _ABSENT and old is not None:
            del node[name]
        return
    if old is _ABSENT or old is None:
        if new in (default, [], {}):
            return
    elif _plain(old) == new:
        return
    if isinstance(new, str):
        if isinstance(old, ScalarString) and ("\n" in new) == ("\n" in str(old)):
            new = type(old)(new)
        elif "\n" in new:
            new = LiteralScalarString(new)
        elif _AMBIGUOUS.fullmatch(new):
            new = DoubleQuotedScalarString(new)  # "09:30", "15", "no": a text, for any reader
    node[name] = new


def _apply_field(
    prop: Mapping[str, Any],
    name: str,
    path: str,
    node: CommentedMap,
    form: Mapping[str, str],
    required: bool,
    where: str,
) -> list[Problem]:
    inner, _ = _without_null(prop)
    widget = _shape(prop, name)
    default = prop.get("default")
    if widget in ("group", "choice", "items"):
        return _apply_nested(inner, widget, name, path, node, form, where)
    raw = _posted(form, path)
    if raw is None:
        return []
    new: Any
    if widget in ("text", "textarea", "select"):
        new = raw if raw or required else None
        if widget == "text" and new is not None:
            new = new.strip()
    elif widget in {"integer", "number"}:
        text = raw.strip()
        if not text:
            new = None
        else:
            try:
                new = int(text) if widget == "integer" else float(text)
            except ValueError:
                kind = "a whole number" if widget == "integer" else "a number"
                return [Problem(where + path, f"is not {kind}: {text[:40]!r}", "type digits")]
            if not_finite(new):  # nan, inf, 1e400
                return [
                    Problem(where + path, f"is not a finite number: {text[:40]!r}", "type digits")
                ]
    elif widget == "checkbox":
        new = raw == "true"
    elif widget == "scalar":
        new = _parse_scalar(raw)
    elif widget == "lines":
        new = [line.strip() for line in raw.split("\n") if line.strip()]
        if isinstance(node.get(name), str) and new == [str(node[name])]:
            return []
        if not new and not required:
            new = None if name not in node else []
    elif widget == "yaml":
        if not raw.strip():
            new = None
        else:
            try:
                new = YAML(typ="rt").load(raw)
            except YAMLError as exc:
                first = str(exc).splitlines()[0] if str(exc) else "cannot be read"
                return [Problem(where + path, f"is not valid YAML: {first}", "fix the text")]
            if _plain(node.get(name)) == _plain(new):
                return []
    else:
        return []
    _set(node, name, new, default)
    return []


def _apply_nested(
    inner: Mapping[str, Any],
    widget: str,
    name: str,
    path: str,
    node: CommentedMap,
    form: Mapping[str, str],
    where: str,
) -> list[Problem]:
    if widget == "group":
        current = node.get(name)
        target = current if isinstance(current, CommentedMap) else CommentedMap()
        found = apply_form(inner, target, form, prefix=path, where=where)
        if current is None and _has_content(target):
            node[name] = target
        return found
    if widget == "choice":
        kind = _posted(form, path)
        if kind is None:
            return []
        return _apply_choice(_kinds(inner), node, name, kind, path, form, where)
    items = node.get(name)
    if not isinstance(items, CommentedSeq):
        return []
    items_schema = inner.get("items") or {}
    kinds = _kinds(items_schema)
    problems: list[Problem] = []
    for index, item in enumerate(items):
        if not isinstance(item, CommentedMap):
            continue
        item_path = f"{path}[{index}]"
        if kinds:
            kind = _posted(form, item_path)
            if kind is not None:
                problems += _apply_choice(kinds, items, index, kind, item_path, form, where)
        else:
            problems += apply_form(items_schema, item, form, prefix=item_path, where=where)
    if not kinds:
        return problems
    # Items posted past the end: a form shown again with an item added but not saved yet.
    index = len(items)
    while index < _MAX_ADDED_ITEMS and (kind := _posted(form, f"{path}[{index}]")):
        items.append(CommentedMap())
        problems += _apply_choice(kinds, items, index, kind, f"{path}[{index}]", form, where)
        index += 1
    # One more item of the kind picked under the list ("Add one": f:<path>[+]); its own fields
    # show to fill once saved (the validator names the missing ones).
    added = _posted(form, f"{path}[+]")
    if added:
        if kind_schema(kinds, added) is None:
            return [*problems, Problem(where + path, f"has no kind {added[:40]!r}", "pick one")]
        fresh = CommentedMap()
        fresh["type"] = added
        items.append(fresh)
    return problems


def _has_content(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_content(v) for v in value.values())
    if isinstance(value, list):
        return bool(value)
    return value not in (None, "")


def _apply_choice(
    kinds: list[Kind],
    parent: Any,
    name: Any,
    kind: str,
    path: str,
    form: Mapping[str, str],
    where: str,
) -> list[Problem]:
    current = parent.get(name) if isinstance(parent, Mapping) else parent[name]
    if not kind:
        if isinstance(parent, CommentedMap) and name in parent and current is not None:
            del parent[name]
        return []
    target = kind_schema(kinds, kind)
    if target is None:
        return [Problem(where + path, f"has no kind {kind[:40]!r}", "pick one of the list")]
    if isinstance(current, CommentedMap) and str(current.get("type", "")) == kind:
        return apply_form(target, current, form, prefix=path, where=where)
    fresh = CommentedMap()
    fresh["type"] = kind
    # The fields posted were those of the former kind: only the new kind's own names count.
    problems = apply_form(target, fresh, form, prefix=path, where=where)
    parent[name] = fresh
    return problems


# -- documents -----------------------------------------------------------------------------------


def _indentation(text: str) -> tuple[int, int]:
    """(sequence, offset) of the first block list under a key: `key:\\n  - item` is (4, 2),
    `key:\\n- item` is (2, 0). A file keeps its own style when written back."""
    lines = text.splitlines()
    for before, line in itertools.pairwise(lines):
        parent = re.match(r"^( *)[^\s#-][^:]*:\s*$", before)
        dash = re.match(r"^( *)- ", line)
        if parent and dash:
            offset = len(dash.group(1)) - len(parent.group(1))
            if offset >= 0:
                return offset + 2, offset
    return 4, 2


def round_trip_yaml(text: str = "") -> YAML:
    """A ruamel round-trip reader and writer that writes lists indented as `text` has them."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    sequence, offset = _indentation(text)
    yaml.indent(mapping=2, sequence=sequence, offset=offset)
    return yaml


def load_document(text: str) -> CommentedMap:
    """A flow's YAML (or JSON) as a round-trip node; InvalidInputError when it is not a
    mapping that can be read (the YAML view shows why)."""
    try:
        document = round_trip_yaml(text).load(text)
    except YAMLError as exc:
        raise InvalidInputError(
            "the flow", [Problem("", f"cannot be read: {exc}", "fix it in the YAML view")]
        ) from None
    if not isinstance(document, CommentedMap):
        raise InvalidInputError(
            "the flow", [Problem("", "is not a mapping of keys", "fix it in the YAML view")]
        )
    return document


def dump_document(document: CommentedMap, original: str = "") -> str:
    if original.lstrip().startswith("{"):
        return json.dumps(_plain(document), indent=2, ensure_ascii=False) + "\n"
    out = io.StringIO()
    round_trip_yaml(original).dump(document, out)
    return out.getvalue()


def comparable(value: Any) -> Any:
    """`value` (a part of a loaded document) as plain mappings, lists and scalars, every scalar
    but a bool, a number or null as its text: what a form changed is what no longer compares
    equal."""
    if isinstance(value, Mapping):
        return {str(k): comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value if isinstance(value, (bool, int, float, type(None))) else str(value)


def written_back(
    text: str, document: CommentedMap, problems: list[Problem], *, before: Any, after: Any
) -> tuple[str, list[Problem]]:
    """The end of a form applied to `document` (loaded from `text`), where `before` is
    `comparable()` of the part the form edits before it was applied and `after` that part now:
    `text` itself with the problems of values that could not be read, `text` when nothing
    changed (a JSON document keeps its layout too), else the document written back."""
    if problems:
        return text, problems
    if comparable(after) == before:
        return text, []
    return dump_document(document, text), []


def step_summaries(document: Mapping[str, Any]) -> list[StepSummary]:
    out = []
    for index, step in enumerate(document.get("steps") or []):
        if not isinstance(step, Mapping):
            continue
        out.append(
            StepSummary(
                index=index,
                key=str(step.get("key", "")),
                name=str(step.get("name") or step.get("key", "")),
                type=str(step.get("type") or "action"),
                active=step.get("active", True) is not False,
                actions=len(step.get("actions") or []),
            )
        )
    return out


def step_schema(step: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return kind_schema(step_kinds(), str(step.get("type") or "action"))


def find_step(document: Mapping[str, Any], key: str) -> tuple[int, CommentedMap]:
    for index, step in enumerate(document.get("steps") or []):
        if isinstance(step, CommentedMap) and str(step.get("key", "")) == key:
            return index, step
    raise InvalidInputError(
        "the step", [Problem(f"steps[{key}]", "is not in the flow's current version", "reload")]
    )


def saved_step_text(text: str, key: str, form: Mapping[str, str]) -> tuple[str, list[Problem]]:
    """`text` with step `key`'s fields as posted in `form`: only what changed is written; the
    rest of the file keeps its bytes. Returns the new text and the problems of values that
    could not be read (the text is then unchanged)."""
    document = load_document(text)
    index, step = find_step(document, key)
    schema = step_schema(step)
    if schema is None:
        raise InvalidInputError(
            "the step",
            [Problem(f"steps[{index}].type", "is not a step type", "fix it in the YAML view")],
        )
    before = _plain(step)
    problems = apply_form(schema, step, form, where=f"steps[{index}].")
    if problems or _plain(step) == before:
        return text, problems  # nothing to write: a JSON document keeps its layout too
    renamed = str(step.get("key", ""))
    if renamed and renamed != key:
        rename_references(document, key, renamed)
    return dump_document(document, text), []


def rename_references(document: Any, old: str, new: str) -> int:
    """Point every `next`, `goto`, `else` and `on_timeout` that names step `old` at `new` (a
    step renamed in its form: the validator would refuse the flow's references left dangling).
    Returns how many were changed; the other keys keep their text."""
    changed = 0
    if isinstance(document, CommentedMap):
        for name in list(document):
            value = document[name]
            if name in STEP_REFERENCES and isinstance(value, str) and value == old:
                document[name] = type(value)(new) if isinstance(value, ScalarString) else new
                changed += 1
            else:
                changed += rename_references(value, old, new)
    elif isinstance(document, CommentedSeq):
        for item in document:
            changed += rename_references(item, old, new)
    return changed


def new_flow_text(
    *, key: str, name: str, record_type: str, trigger: str, form: Mapping[str, str]
) -> tuple[str, list[Problem]]:
    """A new flow's YAML: its name, record type and one trigger with the posted fields, and a
    first step that writes to the record's history (to change in the step forms)."""
    document = CommentedMap()
    document["schema_version"] = 1
    document["key"] = key
    document["name"] = name
    document["record_type"] = record_type
    entry = CommentedMap()
    entry["type"] = trigger
    problems: list[Problem] = []
    schema = kind_schema(trigger_kinds(), trigger)
    if schema is None:
        problems.append(
            Problem("triggers[0].type", "is not a trigger kind", "pick one of the list")
        )
    else:
        problems += apply_form(schema, entry, form, prefix="", where="triggers[0].")
    document["triggers"] = CommentedSeq([entry])
    step = CommentedMap()
    step["key"] = "start"
    step["name"] = "Start"
    action = CommentedMap()
    action["type"] = "history"
    action["message"] = "Entered the flow"
    step["actions"] = CommentedSeq([action])
    document["steps"] = CommentedSeq([step])
    return dump_document(document), problems


def problems_by_field(
    problems: Sequence[Problem], prefix: str, fields: Sequence[FormField]
) -> tuple[dict[str, list[str]], list[str]]:
    """Each problem at the field it concerns (its path below `prefix`, else the nearest
    field above it), as the validator words it; the rest for the top of the form."""
    paths = {f.path for top in fields for f in top.walk()}
    at: dict[str, list[str]] = {}
    rest = []
    for problem in problems:
        text = problem.message + (f" ({problem.hint})" if problem.hint else "")
        path = problem.path
        if path.startswith(prefix):  # "" for the document's own settings
            path = path[len(prefix) :]
            while path and path not in paths:
                path = re.sub(r"(\[\d+\]|\.[^.\[]*|^[^.\[]*)$", "", path)
            if path:
                at.setdefault(path, []).append(text)
                continue
        rest.append(f"{problem.path}: {text}" if problem.path else text)
    return at, rest


def slug(name: str) -> str:
    """A flow key from its name: `Six-month promotion!` -> `six-month-promotion`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    text = text[:60].strip("-") or "flow"
    # /flows/new and /flows/validate are pages: a flow of that key could not be opened.
    return f"{text}-flow" if text in ("new", "validate") else text


def refilled(fields: Sequence[FormField], form: Mapping[str, str]) -> list[FormField]:
    """`fields` showing the values of `form` (what was posted), to show a refused form again
    as the user left it."""
    out = []
    for each in fields:
        children = tuple(refilled(each.children, form))
        posted = form.get(each.name)
        if posted is None or each.widget in ("group", "items", "unsupported"):
            out.append(replace(each, children=children))
        elif each.widget == "checkbox":
            out.append(replace(each, checked=posted == "true", children=children))
        else:
            out.append(replace(each, value=posted.replace("\r\n", "\n"), children=children))
    return out
