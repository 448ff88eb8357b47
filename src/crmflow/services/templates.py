"""Stored email templates: load a template document, list and show them, and render one for a
record when its email is sent.

A template document (YAML or JSON)::

    name: donor-news
    subject: "{{ record.first_name }}, nos projets avancent"   # optional
    text: |
      Bonjour %ab_firstname%,
      ...
    html: "<p>Bonjour {{ record.first_name }}</p>"            # optional
    from: "Les Amis du Parc <dons@example.org>"                # optional
    reply_to: dons@example.org                                 # optional
    locale: fr                                                 # optional
    defaults: {first_name: "ami"}                              # optional
    variables: [code]                                          # optional

The texts are the engine's sandboxed Jinja2 (StrictUndefined, its size and time budgets), plus
the seed syntax `%ab_firstname%` for a field of the record (the field's key, compared without
underscores and case: `%ab_firstname%` is `first_name`). They see `record` (its fields, id and
type), `vars` (the email action's `variables`, declared in `variables:`; also by bare name),
`now` and `today`; not `flow`, `step` or `change`, which a message rendered when it is sent no
longer has. An empty field renders as its `defaults:` entry, or as empty text: never "None".

Rendered when the message is sent, from the record as it is then (docs/delivery.md,
"Templates"): a template corrected after a flow wrote its message is the one that goes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmflow.engine.commands import UNSUBSCRIBE_URL_MARKER, EmailPayload
from crmflow.engine.conditions import did_you_mean
from crmflow.engine.definition.context_checks import TemplateCheck, TemplateProblems
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.source import parse_source
from crmflow.engine.template_filters import locale_problem
from crmflow.engine.templates import (
    TEMPLATE_VARIABLES,
    check_template,
    render_template,
    template_names,
)
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.documents import read_document
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

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
# What a template rendered at send time can see (flow, step and change belong to the step).
SEND_TIME_VARIABLES = frozenset({"record", "vars", "now", "today"})
_SEED_FIELD = re.compile(r"%ab_([A-Za-z0-9_]+)%")


class TemplateDocument(BaseModel):
    """A template as loaded (see the module's docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    subject: str | None = None
    text: str
    html: str | None = None
    from_: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    locale: str | None = None
    defaults: dict[str, str] = Field(default_factory=dict)
    variables: list[str] = Field(default_factory=list)

    def as_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def parts(self) -> dict[str, str]:
        """The templated texts, by their key in the document."""
        found = {"subject": self.subject, "text": self.text, "html": self.html}
        return {key: text for key, text in found.items() if text is not None}


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


@dataclass(frozen=True)
class RenderedEmail:
    """What a stored template made for one record: the payload with its subject, text and
    senders filled in, and the HTML part (None: text only)."""

    payload: EmailPayload
    html: str | None


def seed_syntax(text: str, fields: Collection[str] | None) -> str:
    """`%ab_firstname%` -> `{{ record.first_name }}`: the field whose key matches the name, or
    matches it once underscores and case are ignored; an unmatched name (or no `fields` known)
    is kept as written, so that the record check names it."""

    def field_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if fields is not None and name not in fields:
            loose = {f.replace("_", "").lower(): f for f in fields}
            name = loose.get(name.replace("_", "").lower(), name)
        return "{{ record." + name + " }}"

    return _SEED_FIELD.sub(field_of, text)


def template_problems(
    document: TemplateDocument,
    *,
    record_type: RecordType | None = None,
    variables: Collection[str] | None = None,
    path: str = "",
) -> list[Problem]:
    """Every problem with the template's texts: syntax, budgets, names a message rendered at
    send time cannot see, and (given `record_type`) fields the record type does not have and
    (given `variables`: the action's) variables the action does not give."""
    fields = record_type.field_keys if record_type is not None else None
    # `unsubscribe_url`: the recipient's unsubscribe link, always given (services.suppressions)
    given = {*(document.variables if variables is None else variables), "unsubscribe_url"}
    problems: list[Problem] = []
    prefix = f"{path}." if path else ""
    if document.locale is not None and (wrong := locale_problem(document.locale)) is not None:
        problems.append(Problem(f"{prefix}locale", wrong, "or leave locale out: en"))
    if variables is not None:
        for name in document.variables:
            if name not in given:
                problems.append(
                    Problem(
                        f"{prefix}variables",
                        f"the template {document.name!r} needs the variable {name!r}",
                        "give it in the action's variables",
                    )
                )
    for key, text in document.parts().items():
        source = seed_syntax(text, fields)
        for issue in check_template(source, record_fields=fields, extra_variables=given):
            problems.append(Problem(f"{prefix}{key}", issue.message, issue.hint))
        for refusal in _outside_send_time(source, given):
            problems.append(Problem(f"{prefix}{key}", refusal))
    return problems


def _outside_send_time(text: str, given: Collection[str]) -> list[str]:
    try:
        names = template_names(text)
    except TemplateError:  # the syntax error is reported by check_template
        return []
    late = sorted(names & (TEMPLATE_VARIABLES - SEND_TIME_VARIABLES) - set(given))
    return [
        f"{name!r} is not available in a stored template (it is rendered when the email is "
        "sent): use record, vars, now or today"
        for name in late
    ]


def _parsed(
    data: Any, what: str, line_of: Any = None, source: str | None = None
) -> TemplateDocument:
    def located(problems: list[Problem]) -> InvalidInputError:
        return InvalidInputError(
            what,
            [
                Problem(p.path, p.message, p.hint, line_of(p.path) if line_of else None, source)
                for p in problems
            ],
        )

    if not isinstance(data, dict):
        raise located([Problem("", "expected a mapping with name, text and optionally subject")])
    try:
        document = TemplateDocument.model_validate(data)
    except ValidationError as exc:
        raise located(
            [
                Problem(".".join(str(p) for p in error["loc"]), error["msg"])
                for error in exc.errors()
            ]
        ) from None
    problems = template_problems(document)
    if problems:
        raise located(problems)
    return document


def load_template_file(ctx: Context, actor: Actor, path: str | Path) -> tuple[TemplateView, bool]:
    """Create or replace the template a YAML or JSON file describes; True when it is new.
    Problems carry the file name and line."""
    require_admin(actor, "load email templates")
    file = Path(path)
    what = f"the email template file {file}"
    max_chars = ctx.settings.max_document_chars
    text = read_document(file, what=what, max_chars=max_chars)
    parsed = parse_source(
        text,
        source=str(file),
        fmt="json" if file.suffix.lower() == ".json" else None,
        max_chars=max_chars,
    )
    document = _parsed(parsed.data, what, parsed.line_of, str(file))
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
    document = _parsed({**data, "name": name}, what)
    return _save(ctx, actor, document)


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
    their texts against the flow's record type and the action's variables. The templates are
    read once, here."""
    with read_connection(ctx.engine) as conn:
        documents = {row.name: _view(row).document for row in store.list_templates(conn)}

    def check(
        name: str, record_type: RecordType | None, variables: Collection[str]
    ) -> TemplateProblems | None:
        document = documents.get(name)
        if document is None:
            return None
        found = template_problems(document, record_type=record_type, variables=variables)
        return [(p.path, p.message, p.hint) for p in found]

    return check


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


def _with_defaults(record: Mapping[str, Any], defaults: Mapping[str, str]) -> dict[str, Any]:
    """An empty value (None or "") as the template's default for it, or as empty text."""
    return {
        key: defaults.get(key, "") if value is None or value == "" else value
        for key, value in record.items()
    }


def render_email(
    document: TemplateDocument,
    payload: EmailPayload,
    record: Mapping[str, Any],
    *,
    now: datetime,
) -> RenderedEmail:
    """The payload with the template's texts rendered for `record` (its fields, an empty one
    as its default in the template's `defaults:` or as empty text).

    The action's subject wins when it is not empty (the flow says it); otherwise the
    template's. The action's from and reply_to win in the same way. Raises what
    `render_template` raises (an undefined name, a budget gone over)."""
    fields = [k for k in record if k not in ("id", "type")]
    variables: dict[str, Any] = {
        "unsubscribe_url": UNSUBSCRIBE_URL_MARKER,  # the link, put in by the dispatcher
        **payload.variables,
        "record": _with_defaults(record, document.defaults),
        "vars": dict(payload.variables),
        "now": now,
        "today": now.date().isoformat(),
    }

    # Dates and numbers in the record's locale, else the template's (engine.template_filters).
    locales = (record.get("locale"), record.get("language"), document.locale)

    def rendered(text: str) -> str:
        return render_template(
            seed_syntax(text, fields), variables, locales=locales, zone=now.tzinfo
        )

    subject = payload.subject
    if not subject.strip() and document.subject is not None:
        subject = rendered(document.subject).strip()
    html = rendered(document.html) if document.html is not None else None
    filled = payload.model_copy(
        update={
            "subject": subject,
            "body": rendered(document.text),
            "from_address": payload.from_address or document.from_,
            "reply_to": payload.reply_to or document.reply_to,
        }
    )
    return RenderedEmail(filled, html)


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
