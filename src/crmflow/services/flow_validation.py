"""Checking a flow document against this organisation: the names the validator knows (types,
users, groups, saved queries, the flows an actor can see), and a document parsed with them.

`services.flows` (create, edit) and `services.flow_members` (a member's removal) validate with
these; `services.flows` re-exports `validate_flow_text` and `validation_context`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from crmflow.engine import validation
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.source import parse_source
from crmflow.engine.validation import CheckedFlow, ValidationContext, parse_flow
from crmflow.errors import InvalidInputError
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flows
from crmflow.services.record_types import catalog
from crmflow.services.senders import flow_sender_problems
from crmflow.services.templates import template_check
from crmflow.store import flows as flow_store
from crmflow.store.database import read_connection
from crmflow.store.people import active_members_by_group

__all__ = [
    "SourceFormat",
    "check_flow_text",
    "parse_flow_text",
    "source_format",
    "validate_flow_text",
    "validation_context",
]

SourceFormat = Literal["yaml", "json"]


def validation_context(
    ctx: Context, actor: Actor, *, excluding_flow: str | None = None
) -> ValidationContext:
    """What the validator may check names against: this organisation's types, users, groups,
    saved queries, and the other flows `actor` can see (a private flow's name must not leak
    through a "did you mean" to someone who cannot see it)."""
    with read_connection(ctx.engine) as conn:
        names = flow_store.names_in_use(conn, visible_flows(actor))
        members = active_members_by_group(conn)
    return ValidationContext(
        record_types=catalog(ctx),
        users=names.users,
        groups=names.groups,
        group_members={group: frozenset(names) for group, names in members.items()},
        queries=names.queries,
        flows={k: t for k, t in names.flows.items() if k != excluding_flow},
        allow_sql=ctx.settings.allow_sql_actions,
        email_templates=template_check(ctx),
    )


def parse_flow_text(
    ctx: Context,
    actor: Actor,
    source_text: str,
    *,
    fmt: SourceFormat | None,
    source: str,
    excluding_flow: str | None = None,
) -> FlowDefinition:
    context = validation_context(ctx, actor, excluding_flow=excluding_flow)
    definition = parse_flow(
        source_text,
        context=context,
        source=source,
        fmt=fmt,
        max_chars=ctx.settings.max_document_chars,
    )
    _refuse_senders(ctx, definition, source_text, fmt=fmt, source=source)
    return definition


def check_flow_text(
    ctx: Context,
    actor: Actor,
    text: str,
    *,
    fmt: SourceFormat | None = None,
    source: str = "<input>",
) -> CheckedFlow:
    """Validate without saving, keeping the warnings of a valid flow (InvalidInputError with
    every problem otherwise)."""
    checked = validation.check_flow_text(
        text,
        context=validation_context(ctx, actor),
        source=source,
        fmt=fmt,
        max_chars=ctx.settings.max_document_chars,
    )
    _refuse_senders(ctx, checked.definition, text, fmt=fmt, source=source)
    return checked


def _refuse_senders(
    ctx: Context, flow: FlowDefinition, text: str, *, fmt: SourceFormat | None, source: str
) -> None:
    """InvalidInputError when a send_email action's `from` is not a sender the server allows
    (CRMFLOW_EMAIL_ALLOWED_FROM, services.senders), at its line."""
    problems = flow_sender_problems(ctx.settings, flow)
    if not problems:
        return
    parsed = parse_source(text, source=source, fmt=fmt, max_chars=ctx.settings.max_document_chars)
    located = [replace(p, line=parsed.line_of(p.path), source=source) for p in problems]
    raise InvalidInputError(f"the flow {source}", located)


def validate_flow_text(
    ctx: Context,
    actor: Actor,
    text: str,
    *,
    fmt: SourceFormat | None = None,
    source: str = "<input>",
) -> FlowDefinition:
    """Validate without saving (raises InvalidInputError with every problem)."""
    return parse_flow_text(ctx, actor, text, fmt=fmt, source=source)


def source_format(text: str, fmt: SourceFormat | None) -> SourceFormat:
    """The format a version is kept as: `fmt` when given, else JSON for a text that opens an
    object, YAML otherwise."""
    if fmt:
        return fmt
    return "json" if text.lstrip().startswith("{") else "yaml"
