"""An existing CRM keeps crmflow's records in sync, by the ids it knows them by (issue 10).

A record may carry an external id, unique per record type (`records.external_id`). An existing
CRM upserts one record by it (`upsert_external`, `PUT /api/records/{type}/external/{id}`), reads
it back (`get_external`), or sends a batch of changes (`apply_changes`, `POST
/api/records/{type}/changes`, `crmflow records sync`): JSON Lines, one change per line,

    {"op": "upsert", "external_id": "crm-42", "data": {"last_name": "Pop"}, "owner": "maria"}
    {"op": "delete", "external_id": "crm-17"}

An upsert creates the record when no record of the type has that external id (its data must
then be a whole record: required fields given), else it changes the fields it gives (null clears
one; the fields it leaves out keep their value) and the owner if it names one. A delete of an id
that no record has is counted as already absent (a replayed batch does no harm). A bad line is
reported with its number and the reasons, and the other lines are applied; the batch is one
transaction, at most MAX_CHANGES lines (and the request's body cap), each line held to the caps
of an import's JSONL line (`import_rows.jsonl_rows`). Lines naming one external id apply in
order, each seeing the one before.

Every change goes through the write of every record change (`store.records`: insert_records,
update_records, delete_records, with their change events and `mark_work`), so synced records
trigger flows like any other. Writes are set-based: one query finds the batch's records (locked),
one resolves its users and references, and the changes are written a segment at a time, a
segment being a run of lines that name each external id once (one INSERT, one UPDATE
executemany, one DELETE).

Who may sync: a manager or an admin with a token, or a sender that signs the body the Standard
Webhooks way with the server's `CRMFLOW_SYNC_SECRET` (`authenticate_sync`); its changes are
made as the `system` user.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crmflow.engine.recordtypes import RecordType
from crmflow.errors import AuthenticationError, InvalidInputError, NotFoundError, Problem
from crmflow.services import invitations, users
from crmflow.services.context import Actor, Context
from crmflow.services.import_rows import EXTERNAL_ID_COLUMN, external_id_of, jsonl_rows
from crmflow.services.imports import MAX_LISTED_ERRORS, RowError
from crmflow.services.permissions import require_manager
from crmflow.services.preconditions import ExpectedVersion, require_version
from crmflow.services.record_types import record_type_in
from crmflow.services.records import LinkResolver, RecordView, change_of, refuse, view_in
from crmflow.services.webhook_signatures import Signature, read_signature, signed_with
from crmflow.store import records as store
from crmflow.store.database import Connection, read_connection
from crmflow.store.records import EXTERNAL_ID_CHARS, NewRecord, RecordUpdate, StoredRecord

__all__ = [
    "EXTERNAL_ID_CHARS",
    "MAX_CHANGES",
    "SYNC_SIGNING",
    "Signature",
    "SyncReport",
    "Upserted",
    "apply_changes",
    "authenticate_sync",
    "get_external",
    "upsert_external",
]

# A batch is one transaction: a bounded one. Send more changes in several batches.
MAX_CHANGES = 10_000
SYNC_SIGNING = (
    "sign the body the Standard Webhooks way with the server's CRMFLOW_SYNC_SECRET: headers "
    "webhook-id, webhook-timestamp (Unix seconds) and webhook-signature 'v1,<base64 of "
    'HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>">\' (see docs/integrations.md)'
)
_OPS = ("upsert", "delete")
_KEYS = frozenset({"op", EXTERNAL_ID_COLUMN, "data", "owner"})


@dataclass(frozen=True)
class Upserted:
    """The record an upsert left, and whether it created it."""

    record: RecordView
    created: bool


def _external_id(external_id: str) -> str:
    checked, problems = external_id_of(external_id)
    if problems or checked is None:
        raise InvalidInputError(
            "the external id", problems or [Problem(EXTERNAL_ID_COLUMN, "is empty")]
        )
    return checked


def _not_found(type_key: str, external_id: str) -> NotFoundError:
    return NotFoundError(f"no {type_key} record has the external id {external_id!r}")


def get_external(ctx: Context, type_key: str, external_id: str) -> RecordView:
    """The record of `type_key` whose external id is `external_id`."""
    external_id = _external_id(external_id)
    with read_connection(ctx.engine) as conn:
        record_type_in(conn, type_key)
        found = store.find_by_external_ids(conn, type_key, [external_id]).get(external_id)
        if found is None:
            raise _not_found(type_key, external_id)
        return view_in(conn, found.id)


def upsert_external(
    ctx: Context,
    actor: Actor,
    type_key: str,
    external_id: str,
    values: Mapping[str, Any],
    *,
    owner: str | int | None = None,
    if_version: ExpectedVersion = None,
) -> Upserted:
    """Create the record of `type_key` with this external id, or change the one that has it
    (the fields given; None clears one). With `if_version`, PreconditionFailedError unless the
    record exists at one of those versions (checked on the locked row)."""
    external_id = _external_id(external_id)
    with ctx.engine.begin() as conn:
        rtype = record_type_in(conn, type_key)
        found = store.find_by_external_ids(conn, type_key, [external_id]).get(external_id)
        require_version(
            f"the {type_key} record with external id {external_id!r}",
            found.version if found is not None else 0,
            if_version,
            read_again=f"GET /api/records/{type_key}/external/{external_id}",
        )
        given = rtype.normalise(
            values,
            zone=ctx.zone,
            partial=found is not None,
            max_field_chars=ctx.settings.max_field_chars,
        )
        default_owner = found.owner_id if found is not None else actor.id
        owners, problems = LinkResolver(rtype).resolve(conn, [(given, owner)], default_owner)
        refuse(rtype, problems[0])
        now = ctx.now()
        if found is None:
            new = NewRecord(store.without_nulls(given), owners[0], external_id)
            [record_id] = store.insert_records(conn, type_key, [new], actor_id=actor.id, now=now)
            return Upserted(view_in(conn, record_id), created=True)
        change = change_of(found, given, owners[0])
        if change is not None:
            store.update_records(conn, [change], actor_id=actor.id, now=now)
            invitations.follow_updates(conn, [change], now=now)
        return Upserted(view_in(conn, found.id), created=False)


def authenticate_sync(ctx: Context, body: bytes, signature: Signature, token: str | None) -> Actor:
    """Who sends a batch of changes: the `system` user for a body signed with the server's
    sync secret, else the manager or admin whose token it is."""
    if signature.present:
        secret = ctx.settings.sync_secret
        if not secret:
            raise AuthenticationError(
                "this call is signed, but the server has no CRMFLOW_SYNC_SECRET to check it "
                "with: set it, or send `Authorization: Bearer <token>` of a manager or admin"
            )
        signed = read_signature(signature, now=ctx.now())
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationError("the signed body is not UTF-8") from None
        if not signed_with(secret, signed, text):
            raise AuthenticationError(
                f"the webhook-signature does not match the body; {SYNC_SIGNING}"
            )
        return users.ensure_system_user(ctx)
    if token is None:
        raise AuthenticationError(
            "a batch of changes needs `Authorization: Bearer <token>` of a manager or admin, "
            f"or a signature: {SYNC_SIGNING}"
        )
    actor = users.authenticate_token(ctx, token)
    require_manager(actor, "sync records")
    return actor


@dataclass
class SyncReport:
    """What a batch of changes did: lines read, records created, updated, left unchanged,
    deleted or already absent, and the lines refused with why."""

    type_key: str
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    absent: int = 0  # deletes of an external id no record has
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    errors_not_listed: int = 0

    def add_error(self, line: int, problems: list[Problem]) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(RowError(line, problems))
        else:
            self.errors_not_listed += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_key,
            "read": self.read,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "absent": self.absent,
            "rejected": self.rejected,
            "errors": [e.as_dict() for e in self.errors],
            "errors_not_listed": self.errors_not_listed,
        }


@dataclass
class _Change:
    line: int
    op: str
    external_id: str
    data: dict[str, Any]
    owner: Any
    owner_id: int | None = None


def _read_change(values: dict[str, Any]) -> tuple[_Change | None, list[Problem]]:
    """A line's change, checked for shape (not yet against the record type)."""
    unknown = sorted(set(values) - _KEYS)
    problems = [
        Problem(key, "is not a key of a change", "op, external_id, data, owner") for key in unknown
    ]
    op = values.get("op", "upsert")
    if op not in _OPS:
        problems.append(Problem("op", f"must be upsert or delete, not {op!r}"))
    external_id, external_problems = external_id_of(values.get(EXTERNAL_ID_COLUMN))
    problems += external_problems
    if external_id is None and not external_problems:
        problems.append(Problem(EXTERNAL_ID_COLUMN, "is missing: every change names its record"))
    data = values.get("data", {} if op == "delete" else None)
    if not isinstance(data, dict):
        problems.append(Problem("data", "must be an object of field: value"))
    elif op == "delete" and data:
        problems.append(Problem("data", "a delete takes no data"))
    owner = values.get("owner")
    if owner is not None and type(owner) not in (str, int):
        problems.append(Problem("owner", "must be a username or a user id"))
    if problems or external_id is None or not isinstance(data, dict):
        return None, problems
    return _Change(0, str(op), external_id, data, owner), []


def apply_changes(
    ctx: Context, actor: Actor, type_key: str, body: bytes, *, source: str = "the batch"
) -> SyncReport:
    """Apply a JSON Lines batch of changes to records of `type_key` (see the module's text):
    the good lines in one transaction, the bad ones reported by line number."""
    require_manager(actor, "sync records")
    with read_connection(ctx.engine) as conn:
        rtype = record_type_in(conn, type_key)
    report = SyncReport(type_key)
    changes: list[_Change] = []
    for line, values, unreadable in jsonl_rows(
        io.BytesIO(body), rtype, ctx.settings.max_field_chars
    ):
        report.read += 1
        if report.read > MAX_CHANGES:
            raise InvalidInputError(
                source,
                [
                    Problem(
                        "",
                        f"holds more than {MAX_CHANGES:,} changes (line {line})",
                        "send them in several batches",
                    )
                ],
            )
        if values is None:
            report.add_error(line, unreadable)
            continue
        change, problems = _read_change(values)
        if change is None:
            report.add_error(line, problems)
            continue
        change.line = line
        changes.append(change)
    with ctx.engine.begin() as conn:
        _apply(conn, ctx, actor, rtype, changes, report)
    report.errors.sort(key=lambda error: error.line)  # shape first, then values: in file order
    return report


def _apply(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    rtype: RecordType,
    changes: list[_Change],
    report: SyncReport,
) -> None:
    type_key = rtype.key
    current: dict[str, StoredRecord | None] = dict(
        store.find_by_external_ids(conn, type_key, {c.external_id for c in changes})
    )
    # Check every upsert's values against the type, whole or partial as the record will exist
    # or not when its line applies; then resolve all their users and references at once.
    exists = {external_id: True for external_id in current}
    upserts: list[_Change] = []
    for change in changes:
        if change.op == "delete":
            exists[change.external_id] = False
            continue
        try:
            change.data = rtype.normalise(
                change.data,
                zone=ctx.zone,
                partial=exists.get(change.external_id, False),
                max_field_chars=ctx.settings.max_field_chars,
            )
        except InvalidInputError as exc:
            report.add_error(change.line, list(exc.problems))
            change.op = "refused"
            continue
        exists[change.external_id] = True
        upserts.append(change)
    owners, problems = LinkResolver(rtype).resolve(conn, [(c.data, c.owner) for c in upserts], None)
    for change, owner_id, found in zip(upserts, owners, problems, strict=True):
        if found:
            report.add_error(change.line, found)
            change.op = "refused"
        change.owner_id = owner_id
    segment: _Segment = _Segment(conn, ctx, actor, type_key, current, report)
    for change in changes:
        if change.op == "refused":
            continue
        if change.external_id in segment.named:
            segment.write()
            segment = _Segment(conn, ctx, actor, type_key, current, report)
        segment.add(change)
    segment.write()


class _Segment:
    """Changes naming each external id once: written with one statement per kind."""

    def __init__(
        self,
        conn: Connection,
        ctx: Context,
        actor: Actor,
        type_key: str,
        current: dict[str, StoredRecord | None],
        report: SyncReport,
    ) -> None:
        self.conn, self.ctx, self.actor, self.type_key = conn, ctx, actor, type_key
        self.current = current  # each external id's record as the lines before left it
        self.report = report
        self.named: set[str] = set()
        self.new: list[NewRecord] = []
        self.updates: list[tuple[str, RecordUpdate]] = []
        self.deletes: list[tuple[str, StoredRecord]] = []

    def add(self, change: _Change) -> None:
        self.named.add(change.external_id)
        record = self.current.get(change.external_id)
        if change.op == "delete":
            if record is None:
                self.report.absent += 1
            else:
                self.deletes.append((change.external_id, record))
            return
        if record is None:
            owner_id = change.owner_id if change.owner is not None else self.actor.id
            data = store.without_nulls(change.data)
            self.new.append(NewRecord(data, owner_id, change.external_id))
            return
        owner_id = change.owner_id if change.owner is not None else record.owner_id
        update = change_of(record, change.data, owner_id)
        if update is None:
            self.report.unchanged += 1
        else:
            self.updates.append((change.external_id, update))

    def write(self) -> None:
        conn, now, actor_id = self.conn, self.ctx.now(), self.actor.id
        ids = store.insert_records(conn, self.type_key, self.new, actor_id=actor_id, now=now)
        for new, record_id in zip(self.new, ids, strict=True):
            assert new.external_id is not None
            self.current[new.external_id] = StoredRecord(
                record_id, self.type_key, new.owner_id, dict(new.data), 1
            )
        store.update_records(conn, [u for _, u in self.updates], actor_id=actor_id, now=now)
        invitations.follow_updates(conn, [u for _, u in self.updates], now=now)
        for external_id, update in self.updates:
            record = update.record
            self.current[external_id] = StoredRecord(
                record.id, record.type, update.owner_id, update.data, record.version + 1
            )
        store.delete_records(conn, [r for _, r in self.deletes], actor_id=actor_id, now=now)
        invitations.follow_deletes(conn, [r for _, r in self.deletes], now=now)
        for external_id, _ in self.deletes:
            self.current[external_id] = None
        self.report.created += len(self.new)
        self.report.updated += len(self.updates)
        self.report.deleted += len(self.deletes)
