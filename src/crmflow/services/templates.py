"""Stored email templates: load a template document, list and show them, and render one for a
record when its email is sent.

The template document, what its texts may use and how an empty field renders are described in
crmflow.engine.stored_templates, which holds the document, its checks and its render.

Rendered when the message is sent, from the record as it is then (docs/delivery.md,
"Templates"): a template corrected after a flow wrote its message is the one that goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from crmflow.engine.commands import EmailPayload
from crmflow.engine.conditions import did_you_mean
from crmflow.engine.definition.context_checks import TemplateCheck
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.recordtypes.values import normalise_email
from crmflow.engine.stored_templates import (
    RenderedEmail,
    TemplateDocument,
    render_email,
    seed_syntax,
    template_catalog,
    template_document,
    template_problems,
)
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.documents import parse_document_file
from crmflow.services.permissions import require_admin
from crmflow.store import templates as store
from crmflow.store.database import Connection, read_connection
from crmflow.store.record_types import find_record_type, record_type_from_row
from crmflow.store.records import find_record

__all__ = [
    "RenderedEmail",
    "TemplateDocument",
    "TemplateView",
    "get_template",
    "list_templates",
    "load_template_file",
    "render_email",
    "render_stored_email",
    "save_template",
    "seed_syntax",
    "template_check",
    "template_problems",
]


@dataclass(frozen=True)
class TemplateView:
    """A stored template as `crmflow templates list/show` and the API show it."""

    name: str
    document: TemplateDocument
    updated_at: datetime
    updated_by: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.document.subject,
            "has_html": self.document.html is not None,
            "locale": self.document.locale,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary(), "document": self.document.as_document()}


def load_template_file(ctx: Context, actor: Actor, path: str | Path) -> tuple[TemplateView, bool]:
    """Create or replace the template a YAML or JSON file describes; True when it is new.
    Problems carry the file name and line."""
    require_admin(actor, "load email templates")
    file = Path(path)
    what = f"the email template file {file}"
    max_chars = ctx.settings.max_document_chars
    parsed = parse_document_file(file, what=what, max_chars=max_chars)
    document = template_document(parsed.data, what, parsed.line_of, str(file))
    _check_senders(document, what, parsed.line_of, str(file))
    return _save(ctx, actor, document)


def save_template(
    ctx: Context, actor: Actor, name: str, data: Mapping[str, Any]
) -> tuple[TemplateView, bool]:
    """Create or replace the template `name` (PUT /api/templates/{name}); the document's own
    `name`, when it gives one, must be `name`."""
    require_admin(actor, "change email templates")
    what = f"the email template {name!r}"
    if "name" in data and data["name"] != name:
        raise InvalidInputError(
            what, [Problem("name", f"is {data['name']!r}, not {name!r} as in the address")]
        )
    document = template_document({**data, "name": name}, what)
    _check_senders(document, what)
    return _save(ctx, actor, document)


def _check_senders(
    document: TemplateDocument, what: str, line_of: Any = None, source: str | None = None
) -> None:
    """InvalidInputError for a `from` or `reply_to` that is not one email address (with a
    display name or not): refused when the template is loaded, not when its first email
    fails at send."""
    problems = []
    for key, value in (("from", document.from_), ("reply_to", document.reply_to)):
        if value is not None and (wrong := _address_problem(value)) is not None:
            example = "Les Amis du Parc <dons@example.org>"
            hint = f"write one address, e.g. {example!r} or dons@example.org"
            problems.append(Problem(key, f"{value!r} {wrong}", hint))
    if problems:
        raise InvalidInputError(
            what,
            [
                Problem(p.path, p.message, p.hint, line_of(p.path) if line_of else None, source)
                for p in problems
            ],
        )


def _address_problem(value: str) -> str | None:
    """Why `value` is not one email address, or None."""
    if "\r" in value or "\n" in value:
        return "has a line break, which an email header cannot carry"
    found = getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        return "is not one email address"
    try:
        normalise_email(found[0][1])
    except ValueError as exc:
        return f"is not an email address: {str(exc).split(': ', 1)[-1]}"
    return None


def _save(ctx: Context, actor: Actor, document: TemplateDocument) -> tuple[TemplateView, bool]:
    at = ctx.now()
    with ctx.engine.begin() as conn:
        created = store.save_template(
            conn, document.name, document.as_document(), at=at, by=actor.username
        )
    return TemplateView(document.name, document, at, actor.username), created


def _view(row: store.StoredTemplate) -> TemplateView:
    return TemplateView(
        row.name, TemplateDocument.model_validate(row.document), row.updated_at, row.updated_by
    )


def list_templates(ctx: Context, actor: Actor) -> list[TemplateView]:
    """Every stored template, by name (any signed-in user may read them, as flows)."""
    with read_connection(ctx.engine) as conn:
        return [_view(row) for row in store.list_templates(conn)]


def _template_in(conn: Connection, name: str) -> TemplateView:
    row = store.find_template(conn, name)
    if row is None:
        known = sorted(store.template_names(conn))
        hint = did_you_mean(name, known) or (
            f"known templates: {', '.join(known)}" if known else "none is loaded yet"
        )
        raise NotFoundError(
            f"no email template {name!r} ({hint}; load one with `crmflow templates load FILE`)"
        )
    return _view(row)


def get_template(ctx: Context, actor: Actor, name: str) -> TemplateView:
    with read_connection(ctx.engine) as conn:
        return _template_in(conn, name)


def template_check(ctx: Context) -> TemplateCheck:
    """The validator's check of the stored templates a flow names (services.flow_validation):
    their texts against the flow's record type and the action's variables, and an unknown name
    refused. The templates are read once, here."""
    with read_connection(ctx.engine) as conn:
        documents = {row.name: _view(row).document for row in store.list_templates(conn)}
    return template_catalog(documents)


def _record_variables(
    values: Mapping[str, Any], record_type: RecordType | None, *, record_id: int, type_key: str
) -> dict[str, Any]:
    """`record` for a stored template: every field of its type (None when it has no value),
    its id and type; owner and the times are not read at send time (None)."""
    out: dict[str, Any] = dict.fromkeys(record_type.field_keys if record_type else ())
    out.update(values)
    out.update(id=record_id, type=type_key)
    for meta in ("owner", "created_at", "updated_at"):
        out.setdefault(meta, None)
    return out


def render_stored_email(ctx: Context, payload: EmailPayload) -> RenderedEmail:
    """Render the stored template a payload names, for its record as it is now (the
    dispatcher, at send time). NotFoundError when the template or the record is gone."""
    if payload.template is None:
        return RenderedEmail(payload, None)
    with read_connection(ctx.engine) as conn:
        view = _template_in(conn, payload.template)
        stored = find_record(conn, payload.record_id) if payload.record_id is not None else None
        if payload.record_id is not None and stored is None:
            raise NotFoundError(f"the record {payload.record_id} of this email was deleted")
        # Only the record's own type: the whole catalogue would be read for every email sent.
        type_row = find_record_type(conn, stored.type) if stored is not None else None
    record_type = record_type_from_row(type_row) if type_row is not None else None
    record = (
        _record_variables(stored.data, record_type, record_id=stored.id, type_key=stored.type)
        if stored is not None
        else {}
    )
    zone_now = ctx.now().astimezone(ctx.zone)
    return render_email(view.document, payload, record, now=zone_now)
