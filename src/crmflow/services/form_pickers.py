"""What the flow forms' pickers offer (issue 13): the record type's fields and status values,
users, groups of users, lists of records, saved queries, stored templates, flows and record
types, each as (value, words shown), read through the services; and the fields a template or a
condition can use, with the forms a text writes them in.

`crmflow.services.flow_forms` decides which input gets which picker from the flow's JSON Schema
(a property's name); this module only gives the values. Each list is bounded (`MAX_OPTIONS`):
a value further on can still be typed where the field takes free text, or in the YAML view.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.engine.recordtypes.fields import FieldType
from crmflow.engine.recordtypes.recordtype import RecordType
from crmflow.errors import InvalidInputError, NotFoundError
from crmflow.services import flows, queries, record_groups, record_types, templates, users
from crmflow.services.context import Actor, Context

__all__ = [
    "BUILDER_META_FIELDS",
    "MAX_OPTIONS",
    "Variable",
    "condition_fields",
    "picker_data",
    "seed_alias",
    "variables_of",
]

MAX_OPTIONS = 500
# Fields every record has that the conditions builder offers (created_at and updated_at are
# instants in CEL, which the builder does not compare: write those conditions by hand).
BUILDER_META_FIELDS = {"id": FieldType.NUMBER.value, "owner": FieldType.USER.value}
Choices = list[tuple[str, str]]


@dataclass(frozen=True)
class Variable:
    """A field a template can show: `{{ record.first_name }}`, and its seed alias
    `%ab_firstname%` (stored templates read it; flow texts take the first form)."""

    key: str
    label: str
    jinja: str
    alias: str


def seed_alias(key: str) -> str:
    return f"%ab_{key.replace('_', '').lower()}%"


def variables_of(rtype: RecordType | None) -> list[Variable]:
    if rtype is None:
        return []
    out = []
    for fdef in rtype.fields:
        if fdef.type is FieldType.FILE:
            continue
        jinja = "{{ record." + fdef.key + " }}" if fdef.key.isidentifier() else ""
        if not jinja:
            jinja = "{{ record['" + fdef.key.replace("'", "\\'") + "'] }}"
        out.append(Variable(fdef.key, fdef.label or fdef.key, jinja, seed_alias(fdef.key)))
    return out


def condition_fields(rtype: RecordType | None) -> dict[str, str]:
    """Field key -> type, as `services.condition_builder` takes them."""
    if rtype is None:
        return {}
    found = {f.key: f.type.value for f in rtype.fields if f.type is not FieldType.FILE}
    return {**found, **{k: v for k, v in BUILDER_META_FIELDS.items() if k not in found}}


def _record_type(ctx: Context, key: str) -> RecordType | None:
    if not key:
        return None
    try:
        return record_types.get_record_type(ctx, key)
    except (NotFoundError, InvalidInputError):
        return None  # a type not known has no fields to offer; the validator says so


def picker_data(ctx: Context, actor: Actor | None, record_type: str) -> dict[str, Choices]:
    """Every picker's values for a flow of `record_type` (see the module's docstring); the
    flows and templates only with the `actor` who will see them."""
    rtype = _record_type(ctx, record_type)
    out: dict[str, Choices] = {"record_type_of_flow": [(record_type, record_type)]}
    if rtype is not None:
        out["field"] = [
            (f.key, f"{f.label} ({f.key})" if f.label and f.label != f.key else f.key)
            for f in rtype.fields
        ]
        out["variables"] = [(v.jinja, f"{v.label}|{v.alias}") for v in variables_of(rtype)]
        status = rtype.field("status")
        if status is not None and status.choices:
            out["status"] = [(c, c) for c in status.choices]  # set_status, status_changed
        labels = {f.key: f.label for f in rtype.fields}
        out["condition_fields"] = [
            (key, f"{kind}|{labels.get(key) or key}")
            for key, kind in condition_fields(rtype).items()
        ]
    page = queries.list_queries(ctx, limit=ctx.settings.page_size_max)
    out["query"] = [
        (q.name, q.name) for q in page.items if not record_type or q.record_type == record_type
    ]
    out["user"] = [
        (u.username, f"{u.display_name} ({u.username})" if u.display_name else u.username)
        for u in users.list_users(ctx)[:MAX_OPTIONS]
        if u.active and u.username != users.SYSTEM_USERNAME
    ]
    out["group"] = [(str(g["name"]), str(g["name"])) for g in users.list_groups(ctx)][:MAX_OPTIONS]
    out["list"] = [(str(g["name"]), str(g["name"])) for g in record_groups.list_record_groups(ctx)][
        :MAX_OPTIONS
    ]
    if actor is not None:
        out["template"] = [
            (t.name, f"{t.name}: {t.document.subject}" if t.document.subject else t.name)
            for t in templates.list_templates(ctx, actor)[:MAX_OPTIONS]
        ]
        out["flow"] = [
            (f.key, f"{f.name} ({f.key})") for f in flows.list_flows(ctx, actor)[:MAX_OPTIONS]
        ]
    out["record_type"] = [(t.key, t.name) for t in record_types.list_record_types(ctx)]
    return out
