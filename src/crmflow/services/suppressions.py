"""Unsubscribe and suppression (docs/delivery.md, "Unsubscribe and suppression").

Every marketing email carries `List-Unsubscribe: <PUBLIC_URL/u/TOKEN>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), and its texts may show the same
link as `{{ unsubscribe_url }}`. The token is the recipient's address and an HMAC-SHA256 of it
(CRMFLOW_SECRET_KEY, or a key the server makes once and keeps in the database): anyone holding
the link can unsubscribe that address and no other, and a changed token is refused.

An address on the suppression list (unsubscribed, hard bounce, added by an admin) receives no
more email from any flow: the dispatcher sets such messages aside (`suppressed`) and the
record's history says why (`delivery.suppression`). A `transactional` email is still sent to
an address that unsubscribed, not to one that bounced or that an admin added.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from datetime import tzinfo
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from email_validator import EmailNotValidError, validate_email

from crmflow.engine.commands import UNSUBSCRIBE_URL_MARKER, EmailPayload
from crmflow.errors import CrmflowError, InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.paging import page_size
from crmflow.services.permissions import require_admin
from crmflow.store.database import Connection, read_connection
from crmflow.store.suppressions import (
    Suppression,
    add_suppression,
    list_suppressions,
    normalise_address,
    remove_suppression,
    signing_key,
)

__all__ = [
    "REASONS",
    "add",
    "add_unsubscribe_headers",
    "address_of_token",
    "because",
    "blocks",
    "list_page",
    "remove",
    "signed_token",
    "text_of_token",
    "unsubscribe",
    "unsubscribe_headers",
    "unsubscribe_token",
    "unsubscribe_url",
    "with_unsubscribe_link",
]

REASONS = ("unsubscribed", "hard_bounce", "admin")
_KEY_NAME = "unsubscribe"
_keys: dict[str, bytes] = {}  # the kept key, by database URL: read once per process
_keys_lock = threading.Lock()


MAX_TOKEN_CHARS = 2048  # an address or a link id and a signature, base64: a few hundred


def _key(ctx: Context, conn: Connection | None = None) -> bytes:
    """The signing key. With `conn` (a caller inside a transaction, such as a batch writing
    approval emails), a key not read yet is read or made on it and not kept in memory: that
    transaction may still roll back."""
    if ctx.settings.secret_key:
        return ctx.settings.secret_key.encode()
    url = str(ctx.engine.url)
    with _keys_lock:
        if url not in _keys and conn is not None:
            return signing_key(conn, _KEY_NAME, secrets.token_urlsafe(32), at=ctx.now()).encode()
        if url not in _keys:
            with ctx.engine.begin() as own:
                kept = signing_key(own, _KEY_NAME, secrets.token_urlsafe(32), at=ctx.now())
            _keys[url] = kept.encode()
        return _keys[url]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, purpose: str, text: str) -> bytes:
    return hmac.new(key, f"{purpose}:{text}".encode(), hashlib.sha256).digest()


def signed_token(ctx: Context, purpose: str, text: str, *, conn: Connection | None = None) -> str:
    """A link's token: `text` and its HMAC-SHA256 for `purpose` (`unsubscribe`, `approval`), by
    CRMFLOW_SECRET_KEY or the key the server keeps (read on `conn` when the caller is inside a
    transaction). The links of every purpose are signed here."""
    return f"{_b64(text.encode())}.{_b64(_signature(_key(ctx, conn), purpose, text))}"


def text_of_token(ctx: Context, purpose: str, token: str) -> str | None:
    """The text a token of `purpose` carries, or None when it was changed, cut short or not
    made by this server for that purpose."""
    if len(token) > MAX_TOKEN_CHARS:  # a link of ours is far shorter: not decoded at all
        return None
    encoded, _, signature = token.partition(".")
    try:
        text = _unb64(encoded).decode()
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    if not text or not hmac.compare_digest(given, _signature(_key(ctx), purpose, text)):
        return None
    # One spelling per token: the decoder skips characters outside the alphabet and ignores
    # spare bits, so "a!b.c" would carry the same text as "ab.c" (and, being another string,
    # pass for an approval link not used yet: store.approval_links keeps the token's hash).
    if _b64(text.encode()) != encoded or _b64(given) != signature:
        return None
    return text


def unsubscribe_token(ctx: Context, address: str) -> str:
    """The token of the unsubscribe link of `address`: the address and its signature."""
    return signed_token(ctx, "unsubscribe", normalise_address(address))


def unsubscribe_url(ctx: Context, address: str) -> str:
    return f"{ctx.settings.public_base_url}/u/{unsubscribe_token(ctx, address)}"


_BAD_LINK = (
    "this unsubscribe link is not valid (it was changed or cut short): open the whole link "
    "from the email, or reply to the email to ask to be removed"
)


def address_of_token(ctx: Context, token: str) -> str:
    """The address a token unsubscribes; CrmflowError (400) for a token not made here."""
    address = text_of_token(ctx, "unsubscribe", token)
    if address is None:
        raise CrmflowError(_BAD_LINK)
    return address


def unsubscribe(ctx: Context, token: str) -> str:
    """Put the token's address on the list (`unsubscribed`); the address. Unsubscribing
    twice keeps the first time."""
    address = address_of_token(ctx, token)
    with ctx.engine.begin() as conn:
        add_suppression(
            conn, address, reason="unsubscribed", at=ctx.now(), source="unsubscribe link"
        )
    return address


# --- The link in the message ------------------------------------------------------------------


def _first_address(payload: EmailPayload) -> str | None:
    found = [address for _, address in getaddresses(list(payload.to)) if address]
    return found[0] if found else None


def with_unsubscribe_link(
    ctx: Context, payload: EmailPayload, html: str | None, address: str | None = None
) -> tuple[EmailPayload, str | None]:
    """The payload (and its html part) with `{{ unsubscribe_url }}` made the link of `address`
    (the recipient it goes to), by default of its first To address."""
    texts = [payload.body or "", html or ""]
    if not any(UNSUBSCRIBE_URL_MARKER in text for text in texts):
        return payload, html
    address = address or _first_address(payload)
    url = unsubscribe_url(ctx, address) if address else ""
    body = payload.body.replace(UNSUBSCRIBE_URL_MARKER, url) if payload.body else payload.body
    html = html.replace(UNSUBSCRIBE_URL_MARKER, url) if html else html
    return payload.model_copy(update={"body": body}), html


def unsubscribe_headers(
    ctx: Context, payload: EmailPayload, address: str | None = None
) -> list[tuple[str, str]]:
    """A marketing email's List-Unsubscribe (the link of `address`, the recipient it goes to,
    by default its first To address) and List-Unsubscribe-Post (one click, RFC 8058); a
    transactional one gets neither."""
    address = address or _first_address(payload)
    if payload.category != "marketing" or address is None:
        return []
    return [
        ("List-Unsubscribe", f"<{unsubscribe_url(ctx, address)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]


def add_unsubscribe_headers(
    ctx: Context, message: EmailMessage, payload: EmailPayload, address: str | None = None
) -> None:
    """`unsubscribe_headers` set on `message`."""
    for name, value in unsubscribe_headers(ctx, payload, address):
        message[name] = value


# --- What the list means for a message -------------------------------------------------------


def blocks(suppression: Suppression, category: str) -> bool:
    """Whether the entry stops an email of `category`: every entry stops a marketing email; a
    transactional one is stopped by a hard bounce or an admin's entry, not by unsubscribing."""
    return category == "marketing" or suppression.reason != "unsubscribed"


def because(suppression: Suppression, zone: tzinfo) -> str:
    """Why an address gets nothing, as the history says it (the day in `zone`, the
    organisation's)."""
    day = suppression.at.astimezone(zone).date().isoformat()
    who = suppression.address
    if suppression.reason == "unsubscribed":
        return f"{who} unsubscribed on {day}"
    if suppression.reason == "hard_bounce":
        return f"{who} bounced on {day} ({suppression.source})"
    return f"{who} was put on the suppression list on {day} ({suppression.source})"


# --- Admin ------------------------------------------------------------------------------------


def list_page(
    ctx: Context, actor: Actor, *, after: str | None = None, limit: int = 100
) -> tuple[list[Suppression], str | None]:
    """The list by address, `limit` entries after `after`, and the `after` of the next page
    (None: no more)."""
    require_admin(actor, "read the suppression list")
    size = page_size(ctx, limit)
    with read_connection(ctx.engine) as conn:
        rows = list_suppressions(conn, after=after, limit=size + 1)
    shown = rows[:size]
    return shown, shown[-1].address if len(rows) > size and shown else None


def _checked(address: str) -> str:
    try:
        validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInputError(
            "the address", [Problem("address", f"{address!r} is not an email address: {exc}")]
        ) from None
    return normalise_address(address)


def add(ctx: Context, actor: Actor, address: str, *, note: str = "") -> dict[str, Any]:
    """Put `address` on the list by hand (reason `admin`); says whether it was there."""
    require_admin(actor, "change the suppression list")
    bare = _checked(address)
    source = f"added by {actor.username}" + (f": {note}" if note else "")
    with ctx.engine.begin() as conn:
        added = add_suppression(conn, bare, reason="admin", at=ctx.now(), source=source)
    return {"address": bare, "added": added}


def remove(ctx: Context, actor: Actor, address: str) -> dict[str, Any]:
    """Take `address` off the list: flows email it again. NotFoundError when it is not on it."""
    require_admin(actor, "change the suppression list")
    bare = normalise_address(address)
    with ctx.engine.begin() as conn:
        if not remove_suppression(conn, bare):
            raise NotFoundError(
                f"{bare!r} is not on the suppression list (`crmflow suppressions list`)"
            )
    return {"address": bare, "removed": True}
