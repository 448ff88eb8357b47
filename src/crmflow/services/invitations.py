"""Calendar invitations of appointments: the first one, and the versions that follow.

A flow's `create_record` with `invitation: ics` creates an event record and invites the record
the flow runs on (`services.related_records`); the invitation's UID, attendee, organizer and
SEQUENCE are kept in `invitations` (`store.invitations`). Afterwards, whoever changes the event
(the API, the CLI, an import, a sync, a flow's update_record):

- a new start, end, location or title sends the attendee the next version (METHOD:REQUEST, the
  same UID, SEQUENCE one more), which moves the event in their calendar;
- the event's `status` set to `cancelled`, or the event record deleted, sends METHOD:CANCEL
  (STATUS:CANCELLED, SEQUENCE one more), which removes it; later changes send nothing.

"Cancelled" is the appointment's own state: a run that is cancelled does not cancel an
appointment it already created (the event is a record of the CRM, kept like any other).

Every message goes through the outbox, as the run's that created the event (its enrollment and
step), each with an idempotency key of its own (UID and SEQUENCE): nothing is sent here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from crmflow.engine.commands import message_id
from crmflow.engine.invitations import Invitation, event_uid, ics_text
from crmflow.services.test_mode import as_tests
from crmflow.store import invitations as store
from crmflow.store.database import Connection
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.records import RecordUpdate, StoredRecord

__all__ = [
    "ICS_FILENAME",
    "Invitation",
    "event_uid",
    "follow_deletes",
    "follow_updates",
    "ics_text",
    "invitation_email",
]

ICS_FILENAME = "invitation.ics"
# The fields of an appointment its invitation shows: a change of one sends a new version.
SHOWN = ("start", "end", "location", "title")
CANCELLED_STATUS = "cancelled"


def _subject(inv: Invitation) -> str:
    if inv.cancelled:
        return f"Cancelled: {inv.summary}"
    return f"Invitation: {inv.summary}" if inv.sequence == 0 else f"Updated: {inv.summary}"


def _body(inv: Invitation) -> str:
    when = inv.start.strftime("%Y-%m-%d %H:%M")
    if inv.cancelled:
        return f"Cancelled: {inv.summary}, {when} (UTC)."
    if inv.sequence == 0:
        return f"You are invited: {inv.summary}, {when} (UTC)."
    return f"The appointment changed: {inv.summary}, {when} (UTC)."


def invitation_email(
    inv: Invitation, key: str, *, record_id: int, run: tuple[int, str, int], now: datetime
) -> dict[str, Any]:
    """The outbox row of the email carrying `inv` to its attendee: `key` is its idempotency
    key, `record_id` the record the flow runs on (the attendee), `run` the (enrollment, step
    key, step run) whose messages it belongs to."""
    enrollment_id, step_key, step_run = run
    payload: dict[str, Any] = {
        # An EmailPayload (engine/commands.py) as JSON, with the invitation attached.
        "channel": "email",
        "message_id": message_id(key),
        "from_address": None,
        "to": [inv.attendee_email],
        "cc": [],
        "bcc": [],
        "reply_to": None,
        "subject": _subject(inv),
        "body": _body(inv),
        "template": None,
        "variables": {},
        "archive": True,
        "record_id": record_id,
        # An invitation the appointment calls for: no unsubscribe link, sent after an
        # unsubscribe too (not to an address that bounced).
        "category": "transactional",
        "attachments": [
            {
                "filename": ICS_FILENAME,
                "content_type": f"text/calendar; method={inv.method}; charset=UTF-8",
                "content": ics_text(inv),
            }
        ],
    }
    return {
        "enrollment_id": enrollment_id,
        "step_key": step_key,
        "step_run": step_run,
        "idempotency_key": key,
        "kind": "email",
        "payload": payload,
        "status": "pending",
        "not_before": now,
        "attempts": 0,
        "created_at": now,
    }


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _version(
    row: Any, data: Mapping[str, Any], *, sequence: int, cancelled: bool, now: datetime
) -> Invitation | None:
    """The invitation `row` describes, with the event's values `data`; None when the event has
    no start any more (nothing a calendar could show)."""
    start = _time(data.get("start"))
    if start is None:
        return None
    return Invitation(
        uid=row.uid,
        stamp=now,
        start=start,
        end=_time(data.get("end")),
        summary=str(data.get("title") or "Appointment"),
        location=str(data.get("location") or ""),
        attendee_email=row.attendee_email,
        attendee_name=row.attendee_name,
        organizer_email=row.organizer_email,
        organizer_name=row.organizer_name,
        sequence=sequence,
        cancelled=cancelled,
    )


def _send(
    conn: Connection,
    versions: list[tuple[Any, Mapping[str, Any], bool]],
    *,
    now: datetime,
) -> None:
    """Next versions of invitations (stored row, the event's values, cancelled?): their outbox
    rows and their new SEQUENCE, in the caller's transaction."""
    rows: list[dict[str, Any]] = []
    changes: list[tuple[int, int, str]] = []
    for row, data, cancelled in versions:
        sequence = int(row.sequence) + 1
        inv = _version(row, data, sequence=sequence, cancelled=cancelled, now=now)
        if inv is None:
            continue
        run = (int(row.enrollment_id), str(row.step_key), int(row.step_run))
        key = f"invitation:{row.uid}:{sequence}"
        rows.append(
            invitation_email(inv, key, record_id=int(row.attendee_record_id), run=run, now=now)
        )
        status = store.CANCELLED if cancelled else store.ACTIVE
        changes.append((int(row.record_id), sequence, status))
    insert_ignoring_duplicates(conn, as_tests(conn, rows))  # a test run's: to its testers
    store.set_sequences(conn, changes, now=now)


def follow_updates(conn: Connection, updates: Sequence[RecordUpdate], *, now: datetime) -> None:
    """After record updates: the invited appointments among them that moved get their next
    version, those whose status became `cancelled` a CANCEL. Records without a start before or
    after (every contact, company...) cost nothing: the table is only read for appointments."""
    first: dict[int, Mapping[str, Any]] = {}
    last: dict[int, Mapping[str, Any]] = {}
    for u in updates:
        if "start" in u.record.data or "start" in u.data:
            first.setdefault(u.record.id, u.record.data)
            last[u.record.id] = u.data
    changed = {
        rid
        for rid, after in last.items()
        if any(first[rid].get(k) != after.get(k) for k in (*SHOWN, "status"))
    }
    if not changed:
        return
    versions: list[tuple[Any, Mapping[str, Any], bool]] = []
    for rid, row in sorted(store.active_invitations(conn, changed).items()):
        before, after = first[rid], last[rid]
        if after.get("status") == CANCELLED_STATUS:
            versions.append((row, after, True))
        elif any(before.get(k) != after.get(k) for k in SHOWN):
            versions.append((row, after, False))
    _send(conn, versions, now=now)


def follow_deletes(conn: Connection, gone: Sequence[StoredRecord], *, now: datetime) -> None:
    """After records are deleted: the invited appointments among them are cancelled."""
    data = {r.id: r.data for r in gone if "start" in r.data}
    if not data:
        return
    found = store.active_invitations(conn, data)
    _send(conn, [(row, data[rid], True) for rid, row in sorted(found.items())], now=now)
