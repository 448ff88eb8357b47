"""An appointment's invitation after it was sent (issue 10): moving the event sends the next
version (same UID, SEQUENCE one more, METHOD:REQUEST), cancelling or deleting it sends a
METHOD:CANCEL, and a change the invitation does not show sends nothing. The .ics is read back
with icalendar, as a calendar program reads it (SQLite and PostgreSQL, frozen clock)."""

from __future__ import annotations

from typing import Any

import icalendar
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from crmflow.store.schema import records as records_table
from crmflow.worker import run_once
from tests.conftest import FrozenClock
from tests.integration.test_actions import APPOINTMENT, _contact, _flow


def _invitations(ctx: Context) -> list[tuple[str, icalendar.Calendar, icalendar.Component]]:
    """(subject, calendar, event) of each invitation email in the outbox, oldest first."""
    with ctx.engine.connect() as conn:
        rows = list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))
    out = []
    for row in rows:
        [attachment] = row.payload["attachments"]
        calendar = icalendar.Calendar.from_ical(attachment["content"])
        [event] = calendar.walk("VEVENT")
        assert attachment["content_type"].startswith(f"text/calendar; method={calendar['METHOD']}")
        assert row.payload["to"] == ["claire@example.org"]
        out.append((str(row.payload["subject"]), calendar, event))
    return out


def _booked(ctx: Context, admin: Actor, clock: FrozenClock) -> int:
    """A contact's appointment, made by the flow, with its first invitation; the event's id."""
    _flow(ctx, admin, APPOINTMENT)
    runs.start_record(ctx, admin, "appointment", _contact(ctx, admin))
    clock.advance(hours=1)
    assert run_once(ctx) == 1
    with ctx.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(records_table.c.id).where(records_table.c.type == "event")
            ).scalar_one()
        )


def _update(ctx: Context, admin: Actor, event_id: int, **values: Any) -> None:
    records.update_record(ctx, admin, event_id, values)


def test_moving_the_appointment_sends_the_next_sequence_and_cancelling_it_a_cancel(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    event_id = _booked(ctx, admin, clock)
    [(_, first_calendar, first)] = _invitations(ctx)
    assert (str(first_calendar["METHOD"]), first.decoded("SEQUENCE")) == ("REQUEST", 0)
    uid = str(first["UID"])

    _update(ctx, admin, event_id, status="confirmed")  # not shown in the invitation: nothing
    assert len(_invitations(ctx)) == 1

    _update(ctx, admin, event_id, start="2026-12-03T15:00", end="2026-12-03T16:30")
    subject, calendar, moved = _invitations(ctx)[-1]
    assert subject == "Updated: Meeting with Claire, Martin & co"
    assert (str(calendar["METHOD"]), str(moved["UID"]), moved.decoded("SEQUENCE")) == (
        "REQUEST",
        uid,
        1,
    )
    assert moved.to_ical().decode().count("DTSTART:20261203T140000Z") == 1  # 15:00 in Paris
    assert "DTEND:20261203T153000Z" in moved.to_ical().decode()

    _update(ctx, admin, event_id, location="Salle 3")
    assert _invitations(ctx)[-1][2].decoded("SEQUENCE") == 2

    _update(ctx, admin, event_id, status="cancelled")
    subject, calendar, cancel = _invitations(ctx)[-1]
    assert subject == "Cancelled: Meeting with Claire, Martin & co"
    assert (str(calendar["METHOD"]), str(cancel["STATUS"])) == ("CANCEL", "CANCELLED")
    assert (str(cancel["UID"]), cancel.decoded("SEQUENCE")) == (uid, 3)
    assert str(cancel["ORGANIZER"]) == "mailto:crmflow@localhost"  # the owner has no email

    # Cancelled: a later change (or its deletion) sends nothing more.
    _update(ctx, admin, event_id, start="2026-12-04T15:00")
    records.delete_record(ctx, admin, event_id)
    assert len(_invitations(ctx)) == 4


def test_deleting_the_appointment_cancels_its_invitation(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    event_id = _booked(ctx, admin, clock)
    records.delete_record(ctx, admin, event_id)
    [_, (subject, calendar, cancel)] = _invitations(ctx)
    assert subject.startswith("Cancelled: ")
    assert (str(calendar["METHOD"]), cancel.decoded("SEQUENCE")) == ("CANCEL", 1)


def test_an_event_created_by_hand_has_no_invitation_to_follow(ctx: Context, admin: Actor) -> None:
    event = records.create_record(
        ctx, admin, "event", {"title": "Call", "start": "2026-12-01T10:00"}
    )
    _update(ctx, admin, event.id, start="2026-12-02T10:00")
    records.delete_record(ctx, admin, event.id)
    assert _invitations(ctx) == []


def test_the_invitation_of_a_test_run_and_its_next_versions_go_to_the_test_address(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    text = APPOINTMENT.replace("steps:", "test_recipients: [qa@example.org]\nsteps:")
    _flow(ctx, admin, text)
    runs.start_record(ctx, admin, "appointment", _contact(ctx, admin), test=True)
    clock.advance(hours=1)
    assert run_once(ctx) == 1
    with ctx.engine.connect() as conn:
        event_id = conn.execute(
            sa.select(records_table.c.id).where(records_table.c.type == "event")
        ).scalar_one()
    _update(ctx, admin, event_id, start="2026-12-03T15:00")
    with ctx.engine.connect() as conn:
        rows = list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))
    assert [(r.test, r.payload["to"], r.payload["subject"]) for r in rows] == [
        (True, ["qa@example.org"], "[TEST] Invitation: Meeting with Claire, Martin & co"),
        (True, ["qa@example.org"], "[TEST] Updated: Meeting with Claire, Martin & co"),
    ]


RESCHEDULE = """\
schema_version: 1
key: reschedule
name: Reschedule
record_type: event
triggers: [{type: manual}]
steps:
  - key: move
    actions:
      - type: update_record
        values: {start: "2026-12-05T09:00"}
"""


def test_a_flow_that_moves_the_appointment_sends_the_next_version(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    event_id = _booked(ctx, admin, clock)
    flows.create_flow(ctx, admin, RESCHEDULE)
    flows.change_status(ctx, admin, "reschedule", LifecycleAction.START)
    runs.start_record(ctx, admin, "reschedule", event_id)
    subject, calendar, moved = _invitations(ctx)[-1]
    assert subject.startswith("Updated: ") and str(calendar["METHOD"]) == "REQUEST"
    assert moved.decoded("SEQUENCE") == 1
    assert "DTSTART:20261205T080000Z" in moved.to_ical().decode()
