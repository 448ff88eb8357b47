"""The suppression list at send time (services.suppressions says what it is).

`set_aside_suppressed_in`: when a batch is claimed (in the claim's transaction), its emails to
an address on the list become `suppressed` (not sent), and the record's history says why
("Email to x not sent: x unsubscribed on 2026-12-02"): one query per batch. A marketing email
is stopped by any entry of one of its recipients (To, Cc, Bcc); a transactional one by a hard
bounce or an admin's entry.

`note_hard_bounce`, `note_refused_recipients`: a permanent SMTP refusal (5xx) of a recipient at
RCPT TO puts that address on the list (`hard_bounce`), so no flow emails it again: whether the
message failed (every recipient refused) or went to the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from crmflow.delivery.addresses import addresses_in
from crmflow.errors import DeliveryError
from crmflow.services.context import Context
from crmflow.services.suppressions import because, blocks
from crmflow.store.database import Connection
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import ClaimedMessage, mark_suppressed
from crmflow.store.suppressions import (
    Suppression,
    add_suppression,
    find_suppressions,
    normalise_address,
)

__all__ = [
    "hard_bounced",
    "note_hard_bounce",
    "note_refused_recipients",
    "set_aside_suppressed_in",
]

log = logging.getLogger("crmflow.delivery")


def _recipients(payload: dict[str, Any]) -> list[str]:
    listed = [*payload.get("to", ()), *payload.get("cc", ()), *payload.get("bcc", ())]
    return [normalise_address(a) for _, a in addresses_in(listed) if a]


def _stopping(
    message: ClaimedMessage, found: dict[str, Suppression]
) -> tuple[str, Suppression] | None:
    """The first recipient of `message` whose entry stops it, with the entry."""
    category = str(message.payload.get("category", "marketing"))
    for address in _recipients(message.payload):
        entry = found.get(address)
        if entry is not None and blocks(entry, category):
            return address, entry
    return None


def _stopped(
    conn: Connection, claimed: Sequence[ClaimedMessage]
) -> dict[int, tuple[str, Suppression]]:
    """The emails a suppression stops, by id: (the recipient, the entry): one query."""
    emails = [m for m in claimed if m.kind == "email"]
    if not emails:
        return {}
    found = find_suppressions(conn, [a for m in emails for a in _recipients(m.payload)])
    if not found:
        return {}
    return {m.id: hit for m in emails if (hit := _stopping(m, found)) is not None}


def set_aside_suppressed_in(
    conn: Connection, ctx: Context, claimed: Sequence[ClaimedMessage], *, owner: str
) -> list[ClaimedMessage]:
    """The claimed messages left to send: the emails a suppression stops are marked
    `suppressed` (with why, in `last_error` and the record's history) and left out, on the
    caller's transaction (the dispatcher's claim: one transaction for both)."""
    stopped = _stopped(conn, claimed)
    if not stopped:
        return list(claimed)
    at = ctx.now()
    entries: list[HistoryEntry] = []
    for message in claimed:
        if message.id not in stopped:
            continue
        why = because(stopped[message.id][1], ctx.zone)
        if not mark_suppressed(conn, message.id, owner=owner, reason=why):
            continue  # taken over after its lease ran out: the other dispatcher decides
        to = ", ".join(message.payload.get("to", ()))
        record_id = message.payload.get("record_id")
        if record_id is not None:
            text = f"Email to {to} not sent: {why}"
            entries.append(HistoryEntry(int(record_id), message.enrollment_id, text, at))
        log.info("message %d suppressed: %s", message.id, why)
    insert_history(conn, entries)
    return [m for m in claimed if m.id not in stopped]


# "RCPT TO refused: 550 a@x.org: 550 5.1.1 no such user; b@x.org: 550 ..." (delivery.email)
_REFUSED = re.compile(r"(?:^RCPT TO refused: \d{3} |; )([^\s;:]+@[^\s;:]+): (5\d\d\b[^;]*)")


def hard_bounced(error: DeliveryError) -> dict[str, str]:
    """The addresses a permanent RCPT TO refusal names with a 5xx code, with the reply."""
    if not error.permanent:
        return {}
    return {m.group(1): m.group(2).strip() for m in _REFUSED.finditer(str(error))}


def note_hard_bounce(ctx: Context, message: ClaimedMessage, error: DeliveryError) -> None:
    """Put the addresses a permanent RCPT refusal names on the list (`hard_bounce`)."""
    if message.kind == "email":
        _bounced(ctx, message, hard_bounced(error))


# "250 2.0.0 queued as Q1; refused: a@x.org 550, b@x.org 451" (delivery.email: some refused)
_PARTLY = re.compile(r"([^\s,;]+@[^\s,;]+) (5\d\d)\b")


def note_refused_recipients(ctx: Context, message: ClaimedMessage, reply: str) -> None:
    """A message the server took for some recipients and refused for good (5xx at RCPT TO)
    for others: those others are put on the list (`hard_bounce`)."""
    if message.kind != "email" or "; refused: " not in reply:
        return
    refused = reply.split("; refused: ", 1)[1]
    found = {m.group(1): f"{m.group(2)} at RCPT TO" for m in _PARTLY.finditer(refused)}
    _bounced(ctx, message, found)


def _bounced(ctx: Context, message: ClaimedMessage, addresses: dict[str, str]) -> None:
    # Only the message's own recipients: the server's reply texts are in what was parsed too.
    ours = set(_recipients(message.payload))
    addresses = {a: r for a, r in addresses.items() if normalise_address(a) in ours}
    if not addresses:
        return
    with ctx.engine.begin() as conn:
        for address, reply in addresses.items():
            source = f"{reply[:200]}, message {message.id}"
            add_suppression(conn, address, reason="hard_bounce", at=ctx.now(), source=source)
    log.info("message %d: %s put on the suppression list (hard bounce)", message.id, addresses)
