"""Calendar invitations (RFC 5545 iCalendar text) for appointments created by a flow.

Built by hand: one VEVENT is a few lines, and a library would bring time-zone tables we do not
need (every time here is UTC). The UID is derived from the action's idempotency key, so a step
run retried after a crash invites to the same event: a calendar that already has it updates it
instead of showing a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Invitation", "event_uid", "ics_text"]

DEFAULT_LENGTH = timedelta(hours=1)  # an appointment without an end
_LINE_OCTETS = 75  # RFC 5545 3.1: lines longer than this are folded


def event_uid(key: str) -> str:
    """A stable, globally unique UID for the invitation of idempotency key `key`."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@crmflow"


@dataclass(frozen=True)
class Invitation:
    uid: str
    stamp: datetime  # DTSTAMP: when this invitation was made
    start: datetime
    end: datetime | None
    summary: str
    attendee_email: str
    attendee_name: str = ""
    organizer_email: str | None = None
    organizer_name: str = ""
    location: str = ""
    description: str = ""

    @property
    def method(self) -> str:
        # iTIP (RFC 5546) needs an ORGANIZER for a REQUEST; without one the event is published.
        return "REQUEST" if self.organizer_email else "PUBLISH"


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _text(value: str) -> str:
    """A TEXT value escaped (RFC 5545 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
    )


def _param(value: str) -> str:
    """A parameter value (CN=...): quoted, as names often hold commas; quotes are not allowed."""
    return '"' + value.replace('"', "'") + '"'


def _fold(line: str) -> str:
    """Fold at 75 octets without splitting a UTF-8 character (RFC 5545 3.1)."""
    out: list[str] = []
    current = ""
    size = 0
    for char in line:
        width = len(char.encode())
        if size + width > _LINE_OCTETS:
            out.append(current)
            current, size = " ", 1  # a continuation line starts with one space
        current += char
        size += width
    out.append(current)
    return "\r\n".join(out)


def ics_text(inv: Invitation) -> str:
    """The VCALENDAR text, CRLF line ends, folded."""
    end = inv.end if inv.end is not None and inv.end > inv.start else inv.start + DEFAULT_LENGTH
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//crmflow//crmflow//EN",
        "CALSCALE:GREGORIAN",
        f"METHOD:{inv.method}",
        "BEGIN:VEVENT",
        f"UID:{inv.uid}",
        f"DTSTAMP:{_utc(inv.stamp)}",
        f"DTSTART:{_utc(inv.start)}",
        f"DTEND:{_utc(end)}",
        f"SUMMARY:{_text(inv.summary)}",
    ]
    if inv.location:
        lines.append(f"LOCATION:{_text(inv.location)}")
    if inv.description:
        lines.append(f"DESCRIPTION:{_text(inv.description)}")
    if inv.organizer_email:
        cn = f";CN={_param(inv.organizer_name)}" if inv.organizer_name else ""
        lines.append(f"ORGANIZER{cn}:mailto:{inv.organizer_email}")
    cn = f";CN={_param(inv.attendee_name)}" if inv.attendee_name else ""
    lines.append(
        f"ATTENDEE{cn};ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE"
        f":mailto:{inv.attendee_email}"
    )
    # SEQUENCE 0: the first version of the event; a retry re-sends the same one.
    lines += ["SEQUENCE:0", "STATUS:CONFIRMED", "END:VEVENT", "END:VCALENDAR"]
    return "".join(_fold(line) + "\r\n" for line in lines)
