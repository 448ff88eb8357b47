"""Emails: an outbox payload -> an `email.message.EmailMessage` -> an SMTP server over one
connection kept open for many messages, or the mail catcher.

The Message-ID is the one the engine wrote in the payload, made from the message's idempotency
key, so every attempt at a message carries the same one and a receiver can tell a second copy
(docs/delivery.md). Bcc recipients are envelope recipients only, never a header.
"""

from __future__ import annotations

import contextlib
import functools
import smtplib
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email import quoprimime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, getaddresses
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email
from jinja2 import TemplateError

from crmflow.delivery.addresses import addresses_in, first_address
from crmflow.engine.commands import EmailPayload
from crmflow.engine.recordtypes.values import normalise_email
from crmflow.engine.test_mode import TEST_PREFIX, prefixed_subject
from crmflow.errors import CrmflowError, DeliveryError
from crmflow.services.context import Context
from crmflow.services.record_files import AttachmentCache, StoredFile, email_attachments
from crmflow.services.suppressions import (
    unsubscribe_headers,
    with_unsubscribe_link,
)
from crmflow.services.templates import render_stored_email
from crmflow.store.database import Connection
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import ClaimedMessage

__all__ = [
    "CatchingSender",
    "DeliveryError",
    "OutgoingEmail",
    "Sender",
    "Sent",
    "SmtpSender",
    "SmtpTarget",
    "archive_entry",
    "archive_sent",
    "build_email",
    "build_simple_email",
    "email_for",
    "email_of",
    "envelope_recipients",
    "parse_smtp_url",
    "rendered_of",
    "with_headers",
]

_TIMEOUT = 30.0  # seconds: connect, and each reply of the server
_IDLE_CHECK = 5.0  # seconds: a kept connection idle longer is checked with NOOP before use


@dataclass(frozen=True)
class Sent:
    """A delivered message: the server's reply, or (`caught`) the message the catcher kept."""

    reply: str
    caught: str | None = None
    subject: str | None = None  # an email's subject as sent (the record's history keeps it)
    # An email's recipients the server took, and those it refused for a while (4xx at RCPT TO:
    # the dispatcher tries them again, alone) with its reply to each.
    accepted: tuple[str, ...] = ()
    refused_for_now: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OutgoingEmail:
    """An email ready to go: the bytes handed to the server (CRLF line ends, 7-bit unless an
    attachment needs more), its subject and its envelope sender (the From address)."""

    data: bytes
    subject: str
    sender: str

    def as_string(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @classmethod
    def of(cls, message: EmailMessage) -> OutgoingEmail:
        """An `email.message.EmailMessage` (a message with attachments) as it goes."""
        return cls(message.as_bytes(policy=SMTP), str(message["Subject"]), envelope_sender(message))


class Sender(Protocol):
    def send(self, message: OutgoingEmail, sender: str, recipients: list[str]) -> Sent: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SmtpTarget:
    """Where CRMFLOW_SMTP_URL points: `security` is plain, starttls or tls."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = None


_SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://user:password@host:port` (plain), `smtp+starttls://...` or
    `smtp://...?starttls=1` (STARTTLS), `smtps://...` (TLS from the start); user and
    password percent-encoded, the port defaulting to 25, 587 and 465."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(
            f"CRMFLOW_SMTP_URL {parts.scheme}://... is not an SMTP URL: use "
            "smtp://user:password@host:port, smtp+starttls://... or smtps://..."
        )
    security, port = _SCHEMES[parts.scheme]
    if parse_qs(parts.query).get("starttls", ["0"])[0] in ("1", "true", "yes"):
        security = "starttls"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def build_email(
    payload: EmailPayload,
    default_sender: str,
    *,
    html: str | None = None,
    files: Sequence[StoredFile] = (),
) -> EmailMessage:
    """The message of an email payload: text body (and `html` as its alternative part),
    attachments as MIME parts (the payload's, then the record `files` it names, read by
    `services.record_files.email_attachments`), the payload's Message-ID; raises DeliveryError
    (permanent) for an address that is not one, or for a stored template's payload not rendered
    yet (`services.templates.render_stored_email` fills its body)."""
    if payload.body is None:
        raise DeliveryError(
            f"the email names the stored template {payload.template!r} but was not rendered",
            permanent=True,
        )
    message = EmailMessage(policy=SMTP)
    _header(message, "From", payload.from_address or default_sender)
    _header(message, "To", ", ".join(payload.to))
    if payload.cc:
        _header(message, "Cc", ", ".join(payload.cc))
    if payload.reply_to:
        _header(message, "Reply-To", payload.reply_to)
    _header(message, "Subject", payload.subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    _header(message, "Message-ID", payload.message_id)
    # Quoted-printable: readable as it is, and 7-bit clean for any server (no 8BITMIME needed).
    message.set_content(payload.body, cte="quoted-printable")
    if html is not None:
        message.add_alternative(html, subtype="html", cte="quoted-printable")
    for attachment in payload.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.content.encode(),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    for file in files:
        maintype, _, subtype = file.info.content_type.partition("/")
        message.add_attachment(
            file.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=file.info.filename,
        )
    return message


def _header(message: EmailMessage, name: str, value: str) -> None:
    """Set a header; DeliveryError (permanent) for a value with a line break."""
    _no_line_break(name, value)
    message[name] = value


def _no_line_break(name: str, value: str) -> None:
    """DeliveryError (permanent) for a header value with a line break, which no header may
    carry (it would start a header of its own: an injection), whatever the attempt."""
    if "\r" in value or "\n" in value:
        raise DeliveryError(
            f"the {name} {value!r} has a line break, which an email header cannot carry: take "
            "it out of the flow's text or the record field it shows",
            permanent=True,
        )


# --- The lean builder: a message without attachments, written as bytes -----------------------
# What `build_email` makes of such a message, byte for byte but the boundary, without building an
# `EmailMessage` (its header parsing and refolding took 1-2 ms a message, most of what the
# dispatcher spent on one). A header that is printable ASCII and fits a line is written as it
# is; any other (text to encode, a line to fold) goes through the email package as before.

_MAX_LINE = 78  # the email package's SMTP policy
# Written on one line whatever their length: a URL in angle brackets (RFC 2369) or an id,
# which folding would turn into encoded words.
_ONE_LINE = frozenset({"list-unsubscribe", "message-id"})
_TEXT_HEADERS = 'charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


def _header_line(name: str, value: str) -> str:
    _no_line_break(name, value)
    fits = len(name) + 2 + len(value) <= _MAX_LINE or name.lower() in _ONE_LINE
    if fits and value.isascii() and value.isprintable():
        return f"{name}: {value}\r\n"
    return str(SMTP.header_factory(name, value).fold(policy=SMTP))


def _quoted_printable(text: str) -> bytes:
    """`text` as `EmailMessage.set_content(text, cte="quoted-printable")` encodes it."""
    lines = text.encode("utf-8").splitlines()
    body = (b"\n".join(lines) + b"\n").decode("latin-1")
    return quoprimime.body_encode(body, _MAX_LINE, eol="\r\n").encode("ascii")


def _text_part(subtype: str, text: str) -> bytes:
    head = f"Content-Type: text/{subtype}; {_TEXT_HEADERS}"
    return head.encode("ascii") + _quoted_printable(text)


def _has_files(payload: EmailPayload) -> bool:
    """Whether the message carries attachments (built by `build_email`): given in the payload,
    or files of the record (`record_files`, on payloads that have the field)."""
    return bool(payload.attachments) or bool(getattr(payload, "record_files", ()))


def build_simple_email(
    payload: EmailPayload,
    default_sender: str,
    *,
    html: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> OutgoingEmail:
    """The message of an email payload without attachments (its text body, and `html` as its
    alternative part; `headers` added after the payload's), as `build_email` makes it but much
    cheaper; the same DeliveryError for the same faults."""
    if payload.body is None or _has_files(payload):
        raise ValueError("build_simple_email: a rendered message without attachments only")
    sender = payload.from_address or default_sender
    named = [("From", sender), ("To", ", ".join(payload.to))]
    if payload.cc:
        named.append(("Cc", ", ".join(payload.cc)))
    if payload.reply_to:
        named.append(("Reply-To", payload.reply_to))
    named.append(("Subject", payload.subject))
    named.append(("Date", formatdate(localtime=False, usegmt=True)))
    named.append(("Message-ID", payload.message_id))
    named += headers or ()
    head = "".join(_header_line(name, value) for name, value in named) + "MIME-Version: 1.0\r\n"
    if html is None:
        data = head.encode() + _text_part("plain", payload.body)
    else:
        # "=_" never occurs in quoted-printable text: the boundary cannot be in a part.
        boundary = f"=_crmflow_{uuid.uuid4().hex}"
        head += f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        mark = f"--{boundary}\r\n".encode()
        data = b"".join(
            (
                head.encode(),
                mark,
                _text_part("plain", payload.body),
                b"\r\n" + mark,
                _text_part("html", html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
    found = addresses_in([sender])
    return OutgoingEmail(data, payload.subject, found[0][1] if found else "")


def email_of(ctx: Context, payload: EmailPayload) -> tuple[OutgoingEmail, EmailPayload]:
    """The message to send for `payload` (`rendered_of`, then `email_for`), and the payload
    rendered."""
    payload, html = rendered_of(ctx, payload)
    return email_for(ctx, payload, html), payload


def rendered_of(ctx: Context, payload: EmailPayload) -> tuple[EmailPayload, str | None]:
    """The payload with its stored template (if it names one) rendered now, for the record as
    it is now, and its HTML part; a template or record that is gone, a name the template does
    not know or a budget gone over fails the message for good (another attempt would render
    the same)."""
    if payload.template is None:
        return payload, None
    try:
        rendered = render_stored_email(ctx, payload)
    # As the engine's own renders (steps.scope): a filter given a value it cannot take.
    except (CrmflowError, TemplateError, ValueError, TypeError, ArithmeticError) as exc:
        raise DeliveryError(
            f"the template {payload.template!r} did not render: {exc}", permanent=True
        ) from exc
    # A test run's subject keeps its "[TEST] " when the template gives the subject.
    subject = rendered.payload.subject
    if payload.subject.startswith(TEST_PREFIX):
        subject = prefixed_subject(subject)
    return rendered.payload.model_copy(update={"subject": subject}), rendered.html


def email_for(
    ctx: Context,
    payload: EmailPayload,
    html: str | None,
    recipient: str | None = None,
    *,
    files: AttachmentCache | None = None,
) -> OutgoingEmail:
    """The message of a rendered payload, with a marketing email's unsubscribe link (in its
    texts and its headers, docs/delivery.md) made for `recipient`, by default its first To;
    the record files it attaches read through `files` (the dispatcher's batch keeps them)."""
    recipient = recipient or first_address(payload.to)
    payload, html = with_unsubscribe_link(ctx, payload, html, recipient)
    if payload.body is not None and not _has_files(payload):
        headers = unsubscribe_headers(ctx, payload, recipient)
        return build_simple_email(payload, ctx.settings.mail_from, html=html, headers=headers)
    # The record's files it names, as they are now; one gone fails this email alone.
    attached = email_attachments(ctx, payload, files)
    message = build_email(payload, ctx.settings.mail_from, html=html, files=attached)
    return with_headers(OutgoingEmail.of(message), unsubscribe_headers(ctx, payload, recipient))


def with_headers(email: OutgoingEmail, headers: Sequence[tuple[str, str]]) -> OutgoingEmail:
    """`email` (a message built by `build_email`) with `headers` added after its own, written
    as the lean builder writes them: a List-Unsubscribe `<url>` on one line, which the email
    package would have turned into RFC 2047 encoded words no client can follow."""
    if not headers:
        return email
    lines = "".join(_header_line(name, value) for name, value in headers).encode()
    head, _, rest = email.data.partition(b"\r\n\r\n")  # the top-level headers end there
    return replace(email, data=head + b"\r\n" + lines + b"\r\n" + rest)


def archive_sent(conn: Connection, message: ClaimedMessage, sent: Sent, at: datetime) -> None:
    """The archive in the CRM: an email sent (or caught) with `archive: true` leaves a line in
    its record's history with the subject it went with, in the outcome's transaction."""
    entry = archive_entry(message, sent, at)
    if entry is not None:
        insert_history(conn, [entry])


def archive_entry(message: ClaimedMessage, sent: Sent, at: datetime) -> HistoryEntry | None:
    """The history line `archive_sent` writes for a message sent, if it leaves one."""
    payload = message.payload
    if message.kind != "email" or sent.subject is None or not payload.get("archive", True):
        return None
    record_id = payload.get("record_id")
    if record_id is None:
        return None
    to = ", ".join(payload.get("to", ()))
    # Named by its run, so that only those who may see the run read it (store.history).
    text = f"Email sent to {to}: {sent.subject}"
    return HistoryEntry(record_id, message.enrollment_id, text, at)


def envelope_recipients(payload: EmailPayload) -> list[str]:
    """Every address the message goes to (To, Cc and Bcc), bare, each checked: an invalid one
    fails the message for good."""
    out: list[str] = []
    for _, address in addresses_in([*payload.to, *payload.cc, *payload.bcc]):
        problem = _address_problem(address)
        if problem is not None:
            raise DeliveryError(f"{address!r} is not an email address: {problem}", permanent=True)
        if address not in out:
            out.append(address)
    return out


@functools.lru_cache(maxsize=4096)
def _address_problem(address: str) -> str | None:
    """Why `address` is not an email address, or None (kept: a campaign's Cc and Bcc, and
    each address's retries, are checked once)."""
    try:
        normalise_email(address)  # a plain address without email-validator's 40 us
        return None
    except ValueError:
        pass
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def envelope_sender(message: EmailMessage) -> str:
    return getaddresses([str(message["From"])])[0][1]


class SmtpSender:
    """Sends over one SMTP connection, opened at the first message and kept for the next ones;
    one that the server closed in the meantime is opened again (once per message)."""

    def __init__(
        self,
        target: SmtpTarget,
        *,
        timeout: float = _TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """`tls_context`: how the server's certificate is checked (default: against the
        system's trusted roots, with its host name)."""
        self.target = target
        self.timeout = timeout
        self.tls_context = tls_context or ssl.create_default_context()
        self._smtp: smtplib.SMTP | None = None
        self._used_at = 0.0  # time.monotonic() of the last command on the kept connection
        self.connections = 0  # opened so far (tests check that one carries many messages)

    def send(self, message: OutgoingEmail, sender: str, recipients: list[str]) -> Sent:
        try:
            return self._send(self._connection(), message, sender, recipients)
        except (smtplib.SMTPException, OSError) as exc:
            # The connection is in an unknown state: the next message opens a new one.
            self.close()
            raise DeliveryError(_describe(exc), permanent=False) from exc

    def _send(
        self, smtp: smtplib.SMTP, message: OutgoingEmail, sender: str, recipients: list[str]
    ) -> Sent:
        """MAIL, RCPT for each, DATA: the replies are read one by one so that a 5xx refusal
        fails the message for good and the server's final reply (its queue id) is kept."""
        code, reply = smtp.mail(sender)
        if code != 250:
            self._refused(smtp, code, reply, "MAIL FROM")
        refused: dict[str, tuple[int, bytes]] = {}
        for address in recipients:
            code, reply = smtp.rcpt(address)
            if code not in (250, 251):
                refused[address] = (code, reply)
        if len(refused) == len(recipients):
            # Permanent only if every refusal is: a 4xx one may pass.
            code = min(c for c, _ in refused.values())
            detail = "; ".join(
                f"{a}: {c} {r.decode(errors='replace')}" for a, (c, r) in refused.items()
            )
            self._refused(smtp, code, detail.encode(), "RCPT TO")
        code, reply = smtp.data(message.data)
        if code != 250:
            self._refused(smtp, code, reply, "DATA")
        text = f"{code} {reply.decode(errors='replace')}"
        if refused:
            text += "; refused: " + ", ".join(f"{a} {c}" for a, (c, _) in refused.items())
        return Sent(
            text,
            subject=message.subject,
            accepted=tuple(a for a in recipients if a not in refused),
            refused_for_now=tuple(
                (a, f"{c} {r.decode(errors='replace')}")
                for a, (c, r) in refused.items()
                if 400 <= c < 500
            ),
        )

    def _refused(self, smtp: smtplib.SMTP, code: int, reply: bytes, command: str) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()
        raise DeliveryError(
            f"{command} refused: {code} {reply.decode(errors='replace')}",
            permanent=500 <= code < 600,
        )

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and not self._dropped_while_idle(self._smtp):
            self._used_at = time.monotonic()
            return self._smtp
        t = self.target
        smtp: smtplib.SMTP
        if t.security == "tls":
            smtp = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout, context=self.tls_context)
        else:
            smtp = smtplib.SMTP(t.host, t.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if t.security == "starttls":
                smtp.starttls(context=self.tls_context)
                smtp.ehlo()
            if t.username:
                smtp.login(t.username, t.password or "")
        except BaseException:
            _quietly_close(smtp)
            raise
        self._smtp = smtp
        self._used_at = time.monotonic()
        self.connections += 1
        return smtp

    def _dropped_while_idle(self, smtp: smtplib.SMTP) -> bool:
        """Whether the kept connection, idle for a while, was closed by the server (servers
        drop idle clients after a minute or so): a NOOP tells before a message is started on
        it, so that a dropped connection is not mistaken for a failed delivery."""
        if time.monotonic() - self._used_at < _IDLE_CHECK:
            return False
        try:
            code, _ = smtp.noop()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code == 250:
            return False
        self.close()
        return True

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                _quietly_close(smtp)


class CatchingSender:
    """The mail catcher: with no CRMFLOW_SMTP_URL, the message "goes" to the database, kept as
    it would have been sent (`crmflow mail list`), so a new user sees what the flows send."""

    def send(self, message: OutgoingEmail, sender: str, recipients: list[str]) -> Sent:
        return Sent(
            "caught by the mail catcher", caught=message.as_string(), subject=message.subject
        )

    def close(self) -> None:
        pass


def _quietly_close(smtp: Any) -> None:
    with contextlib.suppress(OSError):
        smtp.close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
