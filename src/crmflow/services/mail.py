"""The mail catcher's messages: with no CRMFLOW_SMTP_URL the dispatcher keeps every email in
the outbox row it came from (status `caught`, the message as it would have gone) instead of
sending it, so that a new user reads what the demo flows send at once (`crmflow mail list`,
`GET /api/mail`). A person sees the messages of the runs they can see: those of the flows
visible to them, as `crmflow runs` shows; its signed links (an approval email's) only when they
are theirs (`messages.redact_links`)."""

from __future__ import annotations

from dataclasses import replace
from email import message_from_string
from email.message import EmailMessage
from email.policy import default

from crmflow.errors import NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flows
from crmflow.services.messages import redacted_email
from crmflow.store.database import read_connection
from crmflow.store.outbox import CaughtMail, caught_mail, caught_mails

__all__ = ["CaughtMail", "caught", "list_caught", "readable"]


def list_caught(ctx: Context, actor: Actor, *, limit: int = 50) -> list[CaughtMail]:
    """The newest `limit` messages the mail catcher kept that `actor` may read, newest first."""
    with read_connection(ctx.engine) as conn:
        return caught_mails(conn, visible=visible_flows(actor), limit=limit)


def caught(ctx: Context, actor: Actor, message_id: int) -> CaughtMail:
    """One message the mail catcher kept, its signed links shown only to the person each is
    for (`messages.redact_links`); NotFoundError when there is none `actor` may read."""
    with read_connection(ctx.engine) as conn:
        found = caught_mail(conn, message_id, visible=visible_flows(actor))
    if found is None:
        raise NotFoundError(
            f"no caught message {message_id} (`crmflow mail list` shows those you can read)"
        )
    return replace(found, rendered=redacted_email(ctx, actor, found.rendered))


def readable(rendered: str) -> str:
    """A kept message as a person reads it: its headers, then each text part decoded (the
    message itself is quoted-printable or base64), each attachment by its name."""
    message = message_from_string(rendered, policy=default)
    lines = [f"{name}: {value}" for name, value in message.items()]
    assert isinstance(message, EmailMessage)  # the default policy's class
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() == "text" and not part.is_attachment():
            lines += ["", str(part.get_content()).rstrip("\n")]
        else:
            lines += ["", f"[attachment {part.get_filename()} ({part.get_content_type()})]"]
    return "\n".join(lines) + "\n"
