"""The `create_record` action: a related record (an event, a project...) created by a step, in
the step's transaction, with its `created` change event like any other record.

The new record belongs to the owner of the record the flow runs on (whoever handles the contact
handles the appointment), or to the acting user when that record has no owner. With
`invitation: ics` an .ics invitation for the new event is put into the outbox as an email
attachment, to the record's email address; the dispatcher sends it, nothing is sent here. Its
UID and SEQUENCE are kept (`store.invitations`): moving or cancelling the event later sends the
next version (`services.invitations`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.engine.commands import CreateRecord, idempotency_key
from crmflow.engine.recordtypes import RecordType
from crmflow.errors import InvalidInputError
from crmflow.services.context import Actor, Context
from crmflow.services.invitations import Invitation, event_uid, invitation_email
from crmflow.services.record_types import catalog_in
from crmflow.services.records import LinkResolver
from crmflow.store import records as store
from crmflow.store.database import Connection
from crmflow.store.invitations import ACTIVE, add_invitations
from crmflow.store.records import NewRecord, StoredRecord

__all__ = ["Created", "create_related_records", "invitation_key"]

Fail = Callable[[Any, str], None]


def invitation_key(command: CreateRecord) -> str:
    """The outbox idempotency key of the invitation a create_record action sends."""
    return idempotency_key(command.enrollment_id, command.step_run, f"{command.ref}:invitation")


@dataclass(frozen=True)
class Created:
    command: CreateRecord
    record_id: int


@dataclass
class _Pending:
    command: CreateRecord
    source_id: int
    data: dict[str, Any]
    owner_id: int | None


def create_related_records(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    items: Sequence[tuple[CreateRecord, int]],
    fail: Fail,
    *,
    now: datetime,
) -> tuple[list[Created], list[dict[str, Any]]]:
    """Create the records of (command, record the flow runs on) pairs.

    Returns what was created and the outbox rows of their invitations (for the caller's
    idempotent outbox insert). A command whose values do not fit its record type fails with the
    type's own messages and creates nothing. Set-based: one query for the source records, one
    link check per record type, one INSERT of the records and one of their change events.
    """
    if not items:
        return [], []
    sources = store.find_records(conn, {source for _, source in items})
    types = catalog_in(conn)
    by_type: dict[str, list[_Pending]] = {}
    for command, source_id in items:
        source = sources.get(source_id)
        rtype = types.get(command.record_type)
        if source is None:
            fail(command, f"record {source_id} no longer exists")
            continue
        if rtype is None:
            fail(command, f"there is no record type {command.record_type!r} any more")
            continue
        values = dict(command.values)
        if command.link_field and command.link_to is not None:
            values[command.link_field] = command.link_to
        try:
            data = rtype.normalise(
                values, zone=ctx.zone, max_field_chars=ctx.settings.max_field_chars
            )
        except InvalidInputError as exc:
            fail(command, "; ".join(str(p) for p in exc.problems))
            continue
        data = store.without_nulls(data)
        owner = source.owner_id if source.owner_id is not None else actor.id
        by_type.setdefault(rtype.key, []).append(_Pending(command, source_id, data, owner))
    created: list[Created] = []
    invitations: list[tuple[_Pending, int]] = []
    for type_key, pending in by_type.items():
        good = _resolve_links(conn, types[type_key], pending, fail)
        if not good:
            continue
        ids = store.insert_records(
            conn,
            type_key,
            [NewRecord(p.data, p.owner_id) for p in good],
            actor_id=actor.id,
            now=now,
        )
        for p, record_id in zip(good, ids, strict=True):
            created.append(Created(p.command, record_id))
            if p.command.invitation == "ics":
                invitations.append((p, record_id))
    messages = _invitations(conn, ctx, invitations, sources, fail, now=now)
    return created, messages


def _resolve_links(
    conn: Connection, rtype: RecordType, pending: list[_Pending], fail: Fail
) -> list[_Pending]:
    """The pending records whose user and reference fields point at existing users and records
    (usernames become ids, as for any record)."""
    resolver = LinkResolver(rtype)
    if not resolver.user_fields and not resolver.ref_fields:
        return pending
    _, problems = resolver.resolve(conn, [(p.data, p.owner_id) for p in pending], None)
    good = []
    for p, found in zip(pending, problems, strict=True):
        if found:
            fail(p.command, "; ".join(str(problem) for problem in found))
        else:
            good.append(p)
    return good


def _invitations(
    conn: Connection,
    ctx: Context,
    items: list[tuple[_Pending, int]],
    sources: dict[int, StoredRecord],
    fail: Fail,
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """Outbox rows of the .ics invitations: to the email of the record the flow runs on, from
    the new event's owner (its ORGANIZER; the sender of emails when the owner has no address).
    Each invitation's UID and SEQUENCE 0 are stored, so that moving or cancelling the event
    later sends its next version (`services.invitations`). A record without an email address
    fails the action: the event exists, but nobody can be invited, and the step run says so."""
    if not items:
        return []
    owners = store.owner_contacts(conn, {p.owner_id for p, _ in items if p.owner_id is not None})
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for p, record_id in items:
        source = sources[p.source_id].data
        problem = ""
        if not source.get("email"):
            problem = f"record {p.source_id} has no email address"
        elif not p.data.get("start"):
            problem = "it has no start"
        if problem:
            fail(
                p.command,
                f"the {p.command.record_type} was created (record {record_id}) but no invitation "
                f"was sent: {problem}",
            )
            continue
        owner = owners.get(p.owner_id) if p.owner_id is not None else None
        key = invitation_key(p.command)
        invitation = _invitation(p, source, owner, key, ctx.settings.mail_from, now=now)
        run = (p.command.enrollment_id, p.command.step_key, p.command.step_run)
        rows.append(invitation_email(invitation, key, record_id=p.source_id, run=run, now=now))
        kept.append(_stored(invitation, record_id, p, run, now=now))
    add_invitations(conn, kept)
    return rows


def _invitation(
    p: _Pending, source: dict[str, Any], owner: Any, key: str, sender: str, *, now: datetime
) -> Invitation:
    """The .ics invitation to the new event: the record the flow runs on (`source`) is its
    attendee, the event's owner (a row with `.email` and `.display_name`, or None) organises,
    or `sender` (the address emails come from) when the owner has no email address."""
    has_email = owner is not None and bool(owner.email)
    return Invitation(
        uid=event_uid(key),
        stamp=now,
        start=datetime.fromisoformat(str(p.data["start"])),
        end=datetime.fromisoformat(str(p.data["end"])) if p.data.get("end") else None,
        summary=str(p.data.get("title") or p.command.record_type),
        location=str(p.data.get("location") or ""),
        attendee_email=str(source["email"]),
        attendee_name=" ".join(
            str(source[k]) for k in ("first_name", "last_name") if source.get(k)
        ),
        organizer_email=owner.email if has_email else sender,
        organizer_name=(owner.display_name or "") if has_email else "",
    )


def _stored(
    inv: Invitation, record_id: int, p: _Pending, run: tuple[int, str, int], *, now: datetime
) -> dict[str, Any]:
    """The `invitations` row of a new invitation (SEQUENCE 0)."""
    enrollment_id, step_key, step_run = run
    return {
        "record_id": record_id,
        "uid": inv.uid,
        "sequence": inv.sequence,
        "status": ACTIVE,
        "attendee_record_id": p.source_id,
        "attendee_email": inv.attendee_email,
        "attendee_name": inv.attendee_name,
        "organizer_email": inv.organizer_email,
        "organizer_name": inv.organizer_name,
        "enrollment_id": enrollment_id,
        "step_key": step_key,
        "step_run": step_run,
        "updated_at": now,
    }
