"""Stored email templates, the part without a database: the document, its checks, and its
render for one record (crmflow.services.templates keeps them; `crmflow flows validate
--templates DIR` reads them from files).

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
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmflow.engine.commands import UNSUBSCRIBE_URL_MARKER, EmailPayload
from crmflow.engine.definition.context_checks import TemplateCheck, TemplateFindings
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.template_empties import empty_field_warning, fields_shown_empty
from crmflow.engine.template_filters import locale_problem
from crmflow.engine.templates import (
    TEMPLATE_VARIABLES,
    check_template,
    render_template,
    template_names,
)
from crmflow.errors import InvalidInputError, Problem

__all__ = [
    "NAME_PATTERN",
    "RenderedEmail",
    "TemplateDocument",
    "render_email",
    "seed_syntax",
    "template_catalog",
    "template_document",
    "template_problems",
    "template_warnings",
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


def template_document(
    data: Any, what: str, line_of: Any = None, source: str | None = None
) -> TemplateDocument:
    """The template document `data` is, or InvalidInputError with every problem (located with
    `line_of` in `source` when given): its shape, then `template_problems`."""

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


def template_warnings(document: TemplateDocument, record_type: RecordType) -> list[Problem]:
    """The fields of `record_type` the template shows where they may be empty (not required,
    no `defaults:` entry, no `| default(...)`): warnings, not problems."""
    fields = record_type.field_keys
    optional = [
        f.key for f in record_type.fields if not f.required and f.key not in document.defaults
    ]
    warnings: list[Problem] = []
    for key, text in document.parts().items():
        for name in fields_shown_empty(seed_syntax(text, fields), optional):
            message, hint = empty_field_warning(name, record_type.key, stored=True)
            warnings.append(Problem(key, message, hint))
    return warnings


def template_catalog(documents: Mapping[str, TemplateDocument]) -> TemplateCheck:
    """The validator's check of the stored templates a flow names, against `documents`: their
    texts against the flow's record type and the action's variables."""

    def check(
        name: str, record_type: RecordType | None, variables: Collection[str]
    ) -> TemplateFindings | None:
        document = documents.get(name)
        if document is None:
            return None
        found = template_problems(document, record_type=record_type, variables=variables)
        warned = template_warnings(document, record_type) if record_type and not found else []
        return TemplateFindings(
            [(p.path, p.message, p.hint) for p in found],
            [(p.path, p.message, p.hint) for p in warned],
        )

    return TemplateCheck(frozenset(documents), check)


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
