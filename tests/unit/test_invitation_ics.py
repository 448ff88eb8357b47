"""The .ics of an appointment's invitation, read back with the icalendar library as a calendar
program reads it: METHOD, UID, SEQUENCE, times in UTC, organizer and attendee."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import icalendar

from crmflow.engine.invitations import Invitation, event_uid, ics_text

PARIS_WINTER = timezone(timedelta(hours=1))
INVITATION = Invitation(
    uid=event_uid("7:1:book.0:invitation"),
    stamp=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
    start=datetime(2026, 11, 26, 10, 0, tzinfo=PARIS_WINTER),
    end=datetime(2026, 11, 26, 11, 30, tzinfo=PARIS_WINTER),
    summary="Meeting with Claire, Martin & co",
    location="Salle 2; 1er étage",
    attendee_email="claire@example.org",
    attendee_name="Claire Martin",
    organizer_email="maria@example.org",
    organizer_name="Maria Pop",
)


def _event(text: str) -> tuple[icalendar.Calendar, icalendar.Component]:
    calendar = icalendar.Calendar.from_ical(text)
    [event] = calendar.walk("VEVENT")
    return calendar, event


def test_a_first_invitation_is_a_request_at_sequence_0_in_utc() -> None:
    text = ics_text(INVITATION)
    calendar, event = _event(text)
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == INVITATION.uid and INVITATION.uid.endswith("@crmflow")
    assert event.decoded("SEQUENCE") == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    assert "DTSTART:20261126T090000Z\r\n" in text and "DTEND:20261126T103000Z\r\n" in text
    assert event.decoded("DTSTART") == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert str(event["SUMMARY"]) == "Meeting with Claire, Martin & co"
    assert str(event["LOCATION"]) == "Salle 2; 1er étage"
    assert str(event["ORGANIZER"]) == "mailto:maria@example.org"
    assert event["ORGANIZER"].params["CN"] == "Maria Pop"
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:claire@example.org"
    assert (attendee.params["CN"], attendee.params["RSVP"]) == ("Claire Martin", "TRUE")
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))


def test_without_an_end_the_event_lasts_one_hour() -> None:
    _, event = _event(ics_text(Invitation(**{**INVITATION.__dict__, "end": None})))
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(hours=1)


def test_a_later_version_keeps_the_uid_and_a_cancel_says_cancelled() -> None:
    moved = Invitation(
        **{**INVITATION.__dict__, "sequence": 1, "start": datetime(2026, 11, 27, 9, tzinfo=UTC)}
    )
    calendar, event = _event(ics_text(moved))
    assert (str(calendar["METHOD"]), str(event["UID"]), event.decoded("SEQUENCE")) == (
        "REQUEST",
        INVITATION.uid,
        1,
    )
    cancel = Invitation(**{**moved.__dict__, "sequence": 2, "cancelled": True})
    calendar, event = _event(ics_text(cancel))
    assert (str(calendar["METHOD"]), str(event["STATUS"]), event.decoded("SEQUENCE")) == (
        "CANCEL",
        "CANCELLED",
        2,
    )
    assert str(event["UID"]) == INVITATION.uid
