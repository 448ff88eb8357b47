"""The messages flows wrote (the web's /messages): emails, SMS and webhooks of the outbox with
what became of each (waiting, sent, kept by the mail catcher, failed with the reason), newest
first, a page at a time. A person sees the messages of the flows they can see (an admin, all),
as the mail catcher's `crmflow mail list` does.

A signed link in a message (an approval email's `/a/TOKEN`, a marketing email's unsubscribe
`/u/TOKEN`) is a capability of the person it was made for: whoever holds it decides as that
user, or unsubscribes that address, without signing in. So every view of a message (this page,
`GET /api/mail/{id}`, `crmflow mail show`) shows such a link only to the user it names (the
user an approval link decides as; the user whose email is the address an unsubscribe link
names), and to anyone else, admins included, its token replaced by `[link for maria only]`
(`redact_links`). The message as stored and delivered keeps its links."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import Any

from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flows
from crmflow.services.paging import DEFAULT_PAGE_SIZE, page_size
from crmflow.services.suppressions import text_of_token
from crmflow.store.database import read_connection
from crmflow.store.stats import OutboxLine, outbox_line, outbox_page
from crmflow.store.suppressions import normalise_address
from crmflow.store.users import find_user_by_name

__all__ = [
    "KINDS",
    "STATES",
    "MessageParts",
    "MessagesPage",
    "OutboxLine",
    "message",
    "message_parts",
    "messages_page",
    "redact_links",
    "redacted_email",
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
    redact = _Redaction(ctx, actor)
    shown = [replace(row, payload=redact.payload(row.payload)) for row in rows[:size]]
    return MessagesPage(shown, shown[-1].id if len(rows) > size else None)


def message(ctx: Context, actor: Actor, message_id: int) -> OutboxLine:
    """One outbox message with the text it was sent (or kept) as, its signed links shown only
    to the person each is for (`redact_links`); NotFoundError when there is none `actor` may
    read."""
    with read_connection(ctx.engine) as conn:
        found = outbox_line(conn, message_id, visible=visible_flows(actor))
    if found is None:
        raise NotFoundError(f"no message {message_id} among those you can read (see /messages)")
    redact = _Redaction(ctx, actor)
    rendered = redact.email(found.rendered) if found.rendered else found.rendered
    return replace(found, payload=redact.payload(found.payload), rendered=rendered)


# --- Signed links, shown to the person each is for --------------------------------------------

# A link signed by `suppressions.signed_token`: the path of what it does (`/a/`, an approval's
# button, `approval_links`; `/u/`, unsubscribe, `suppressions`), then the token: its text and
# its HMAC-SHA256 (32 bytes: 43 characters), each base64url without padding.
_SIGNED_LINK = re.compile(r"/(?P<path>[au])/(?P<token>[\w-]+\.[\w-]{43})(?![\w-])", re.ASCII)
_PURPOSES = {"a": "approval", "u": "unsubscribe"}


class _Redaction:
    """`redact_links` for one viewer, reading their address once, when a link needs it."""

    def __init__(self, ctx: Context, viewer: Actor) -> None:
        self.ctx = ctx
        self.viewer = viewer
        self._address: str | None = None
        self._read = False

    def _viewer_address(self) -> str | None:
        if not self._read:
            with read_connection(self.ctx.engine) as conn:
                user = find_user_by_name(conn, self.viewer.username)
            self._address = normalise_address(user.email) if user and user.email else None
            self._read = True
        return self._address

    def _link(self, found: re.Match[str]) -> str:
        path, token = found["path"], found["token"]
        text = text_of_token(self.ctx, _PURPOSES[path], token)
        if text is None:  # not one of ours, or changed: nobody's capability, shown as nobody's
            return f"/{path}/[link for its recipient only]"
        if path == "a":  # `approval_links.link_token`: enrollment:step run:button:until:user
            parts = text.split(":", 4)
            owner = parts[4] if len(parts) == 5 else None
            if owner is not None and owner == self.viewer.username:
                return found[0]
        else:  # the address it unsubscribes
            owner = text
            if owner == self._viewer_address():
                return found[0]
        return f"/{path}/[link for {owner or 'its recipient'} only]"

    def text(self, text: str) -> str:
        return _SIGNED_LINK.sub(self._link, text) if "/" in text else text

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with the text of each of its strings redacted (an email's body and
        HTML before it is sent, an SMS's text, a webhook's body)."""
        return {key: _each_string(value, self.text) for key, value in payload.items()}

    def email(self, rendered: str) -> str:
        """An RFC 5322 message with its headers' and text parts' links redacted: the very
        message when none needs it, else the message written anew (text parts decoded,
        redacted, and encoded again)."""
        parsed = message_from_string(rendered, policy=default)
        assert isinstance(parsed, EmailMessage)  # the default policy's class
        changed = False
        for name in dict.fromkeys(parsed.keys()):
            values = [str(value) for value in parsed.get_all(name, [])]
            redacted = [self.text(value) for value in values]
            if redacted != values:
                del parsed[name]
                for value in redacted:
                    parsed[name] = value
                changed = True
        for part in parsed.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            if part.is_attachment():
                continue
            content = str(part.get_content())
            redacted_text = self.text(content)
            if redacted_text != content:
                part.set_content(
                    redacted_text, subtype=part.get_content_subtype(), cte="quoted-printable"
                )
                changed = True
        return parsed.as_string() if changed else rendered


def _each_string(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_each_string(item, change) for item in value]
    if isinstance(value, dict):
        return {key: _each_string(item, change) for key, item in value.items()}
    return value


def redact_links(ctx: Context, viewer: Actor, text: str) -> str:
    """`text` with each signed link in it (`/a/TOKEN`, `/u/TOKEN`) kept when it is `viewer`'s
    (an approval link deciding as them, an unsubscribe link of their email address) and its
    token replaced by `[link for maria only]` otherwise, admins included: a link that decides
    or unsubscribes for someone is theirs alone. A token that is not a valid one of this
    server's is replaced too."""
    return _Redaction(ctx, viewer).text(text)


def redacted_email(ctx: Context, viewer: Actor, rendered: str) -> str:
    """An email as sent or kept (RFC 5322), its headers and text parts as `redact_links` makes
    them for `viewer`; the very message when nothing needed it."""
    return _Redaction(ctx, viewer).email(rendered) if rendered else rendered


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
