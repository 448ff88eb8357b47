"""The messages flows wrote (the web's /messages): emails, SMS and webhooks of the outbox with
what became of each (waiting, sent, kept by the mail catcher, failed with the reason), newest
first, a page at a time. A person sees the messages of the flows they can see (an admin, all),
as the mail catcher's `crmflow mail list` does."""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_string
from email.message import EmailMessage
from email.policy import default

from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flows
from crmflow.services.paging import DEFAULT_PAGE_SIZE, page_size
from crmflow.store.database import read_connection
from crmflow.store.stats import OutboxLine, outbox_line, outbox_page

__all__ = [
    "KINDS",
    "STATES",
    "MessageParts",
    "MessagesPage",
    "OutboxLine",
    "message",
    "message_parts",
    "messages_page",
]

KINDS = ("email", "sms", "webhook")
# What a person filters by, and the outbox statuses each covers.
STATES: dict[str, tuple[str, ...]] = {
    "waiting": ("pending", "retrying", "leased", "sending"),
    "sent": ("sent", "delivered", "partly_sent"),
    "caught": ("caught",),
    "failed": ("failed", "suppressed"),
    "cancelled": ("cancelled",),
}


@dataclass(frozen=True)
class MessagesPage:
    """Newest first; pass `next_before` back as `before` for the next (older) page."""

    items: list[OutboxLine]
    next_before: int | None


def messages_page(
    ctx: Context,
    actor: Actor,
    *,
    kind: str | None = None,
    state: str | None = None,
    before: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> MessagesPage:
    """The outbox messages of the flows `actor` can see, newest first, `limit` at a time (ids
    below `before`), only of `kind` (email, sms, webhook) / in `state` (waiting, sent, caught,
    failed, cancelled) when given."""
    size = page_size(ctx, limit)
    problems = []
    if kind is not None and kind not in KINDS:
        problems.append(Problem("kind", f"unknown kind {kind!r}", hint=", ".join(KINDS)))
    if state is not None and state not in STATES:
        problems.append(Problem("state", f"unknown state {state!r}", hint=", ".join(STATES)))
    if problems:
        raise InvalidInputError("the messages filter", problems)
    with read_connection(ctx.engine) as conn:
        rows = outbox_page(
            conn,
            visible=visible_flows(actor),
            kind=kind,
            statuses=STATES[state] if state is not None else None,
            before=before,
            limit=size + 1,
        )
    shown = rows[:size]
    return MessagesPage(shown, shown[-1].id if len(rows) > size else None)


def message(ctx: Context, actor: Actor, message_id: int) -> OutboxLine:
    """One outbox message with the text it was sent (or kept) as; NotFoundError when there is
    none `actor` may read."""
    with read_connection(ctx.engine) as conn:
        found = outbox_line(conn, message_id, visible=visible_flows(actor))
    if found is None:
        raise NotFoundError(f"no message {message_id} among those you can read (see /messages)")
    return found


@dataclass(frozen=True)
class MessageParts:
    """An email as a person reads it: headers, text parts, HTML parts, attachments' names."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[tuple[str, str]] = field(default_factory=list)  # (name, content type)


def message_parts(rendered: str | None) -> MessageParts:
    """The parts of an email as sent (or kept); empty when it was never rendered."""
    if not rendered:
        return MessageParts()
    parsed = message_from_string(rendered, policy=default)
    assert isinstance(parsed, EmailMessage)  # the default policy's class
    out = MessageParts(headers=[(name, str(value)) for name, value in parsed.items()])
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() == "text" and not part.is_attachment():
            target = out.htmls if part.get_content_subtype() == "html" else out.texts
            target.append(str(part.get_content()))
        else:
            out.attachments.append((part.get_filename() or "(no name)", part.get_content_type()))
    return out
