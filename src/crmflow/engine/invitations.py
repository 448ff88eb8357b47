"""Calendar invitations (RFC 5545 iCalendar, iTIP RFC 5546) for appointments a flow creates.

Pure: the .ics text of one version of one appointment, built with the `icalendar` library (it
escapes, folds at 75 octets and writes UTC times as ...Z). Every time here is UTC.

One appointment keeps one UID for its whole life (derived from the idempotency key of the
action that created it, so a step run retried after a crash invites to the same event), and a
SEQUENCE that starts at 0 and is one more for each later version: a calendar that has the
event replaces it by a higher SEQUENCE. A moved appointment is sent as METHOD:REQUEST again; a
cancelled one as METHOD:CANCEL (STATUS:CANCELLED), which removes it from the attendee's calendar.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import icalendar

__all__ = ["DEFAULT_LENGTH", "Invitation", "event_uid", "ics_text"]

DEFAULT_LENGTH = timedelta(hours=1)  # an appointment without an end
PRODID = "-//crmflow//crmflow//EN"


def event_uid(key: str) -> str:
    """A stable, globally unique UID for the invitation of idempotency key `key`."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@crmflow"


@dataclass(frozen=True)
class Invitation:
    """One version of an appointment's invitation. `organizer_email` is the event owner's
    address (or the sender of emails when the owner has none): iTIP needs an ORGANIZER for a
    REQUEST and a CANCEL."""

    uid: str
    stamp: datetime  # DTSTAMP: when this version was made
    start: datetime
    end: datetime | None
    summary: str
    attendee_email: str
    organizer_email: str
    attendee_name: str = ""
    organizer_name: str = ""
    location: str = ""
    description: str = ""
    sequence: int = 0
    cancelled: bool = False

    @property
    def method(self) -> str:
        return "CANCEL" if self.cancelled else "REQUEST"

    @property
    def effective_end(self) -> datetime:
        """The end, or one hour after the start when there is none (or it is not after it)."""
        if self.end is not None and self.end > self.start:
            return self.end
        return self.start + DEFAULT_LENGTH


def _address(email: str, name: str, **params: str) -> icalendar.vCalAddress:
    import icalendar  # noqa: PLC0415 (about 0.4 s to import: only when an invitation is built)

    address = icalendar.vCalAddress(f"mailto:{email}")
    if name:
        address.params["CN"] = name
    for key, value in params.items():
        address.params[key.upper()] = value
    return address


def ics_text(inv: Invitation) -> str:
    """The VCALENDAR text of `inv`: CRLF line ends, folded, times in UTC."""
    import icalendar  # noqa: PLC0415 (see _address)

    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", inv.method)
    event = icalendar.Event()
    event.add("uid", inv.uid)
    event.add("dtstamp", inv.stamp.astimezone(UTC))
    event.add("dtstart", inv.start.astimezone(UTC))
    event.add("dtend", inv.effective_end.astimezone(UTC))
    event.add("summary", inv.summary)
    if inv.location:
        event.add("location", inv.location)
    if inv.description:
        event.add("description", inv.description)
    event.add("organizer", _address(inv.organizer_email, inv.organizer_name))
    attendee = {"role": "REQ-PARTICIPANT", "partstat": "NEEDS-ACTION", "rsvp": "TRUE"}
    if inv.cancelled:
        attendee = {"role": "REQ-PARTICIPANT"}
    event.add("attendee", _address(inv.attendee_email, inv.attendee_name, **attendee))
    event.add("sequence", inv.sequence)
    event.add("status", "CANCELLED" if inv.cancelled else "CONFIRMED")
    calendar.add_component(event)
    text: bytes = calendar.to_ical()
    return text.decode()
