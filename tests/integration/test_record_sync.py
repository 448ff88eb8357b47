"""An existing CRM keeps crmflow's records in sync (issue 10): one record upserted by its
external id, and batches of changes with bad lines reported by number; synced records trigger
flows like any other. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
)
from crmflow.services import flows, record_sync, records
from crmflow.services.context import Actor, Context
from crmflow.store import records as stored_records
from crmflow.worker import run_once
from tests.conftest import FrozenClock
from tests.integration.helpers import history

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers: [{type: record_created}]
steps:
  - key: hello
    actions: [{type: history, message: "welcome {{ record.last_name }}"}]
"""


def batch(*changes: object) -> bytes:
    return b"".join(
        (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n" for c in changes
    )


def test_an_upsert_by_external_id_creates_then_changes_the_same_record(
    ctx: Context, manager: Actor, member: Actor
) -> None:
    made = record_sync.upsert_external(ctx, manager, "contact", "crm-1", {"last_name": "Pop"})
    assert made.created and made.record.external_id == "crm-1"
    assert made.record.owner == manager.username

    changed = record_sync.upsert_external(
        ctx, manager, "contact", "crm-1", {"email": "ana@example.org"}, owner=member.username
    )
    assert not changed.created and changed.record.id == made.record.id
    assert changed.record.data == {"last_name": "Pop", "email": "ana@example.org"}
    assert (changed.record.version, changed.record.owner) == (2, member.username)
    assert record_sync.get_external(ctx, "contact", "crm-1") == changed.record

    with pytest.raises(PreconditionFailedError):
        record_sync.upsert_external(ctx, manager, "contact", "crm-1", {}, if_version=1)
    with pytest.raises(NotFoundError, match="no contact record has the external id 'crm-2'"):
        record_sync.get_external(ctx, "contact", "crm-2")
    with pytest.raises(InvalidInputError, match="last_name"):
        record_sync.upsert_external(ctx, manager, "contact", "crm-2", {"email": "x@example.org"})
    kinds = [c.kind for c in records.record_changes(ctx, made.record.id).items]
    assert kinds == ["created", "updated"]


def test_a_batch_applies_its_good_lines_and_reports_the_bad_ones_by_number(
    ctx: Context, manager: Actor, member: Actor
) -> None:
    record_sync.upsert_external(ctx, manager, "contact", "old", {"last_name": "Old"})
    body = batch(
        {"op": "upsert", "external_id": "a", "data": {"last_name": "Ana"}},
        {"op": "upsert", "external_id": "b", "data": {"first_name": "no last name"}},  # 2
        b"{not json",  # 3
        {"op": "upsert", "external_id": "a", "data": {"email": "ana@example.org"}},
        {"op": "delete", "external_id": "old"},
        {"op": "delete", "external_id": "never-seen"},
        {"op": "merge", "external_id": "c", "data": {}},  # 7
        {"op": "upsert", "external_id": "d", "data": {"last_name": "D"}, "owner": "ghost"},  # 8
        {"op": "upsert", "external_id": "e", "data": {"last_name": "E"}, "owner": "andrei"},
        {"op": "upsert", "external_id": "a", "data": {"email": "ana@example.org"}},
    )
    report = record_sync.apply_changes(ctx, manager, "contact", body)
    assert report.as_dict() | {"errors": None} == {
        "type": "contact",
        "read": 10,
        "created": 2,
        "updated": 1,
        "unchanged": 1,
        "deleted": 1,
        "absent": 1,
        "rejected": 4,
        "errors": None,
        "errors_not_listed": 0,
    }
    assert [e.line for e in report.errors] == [2, 3, 7, 8]
    assert "last_name" in str(report.errors[0]) and "no user named 'ghost'" in str(report.errors[3])
    synced = {r.external_id: r for r in records.list_records(ctx, "contact").items}
    assert set(synced) == {"a", "e"}
    assert synced["a"].data == {"last_name": "Ana", "email": "ana@example.org"}
    assert synced["e"].owner == member.username

    # A replay of the same batch changes nothing more.
    again = record_sync.apply_changes(ctx, manager, "contact", body)
    assert (again.created, again.updated, again.unchanged, again.absent) == (0, 0, 4, 2)


def test_a_batch_deletes_several_records_at_once_each_with_its_deleted_event(
    ctx: Context, manager: Actor
) -> None:
    made = batch(*({"external_id": k, "data": {"last_name": k}} for k in ("x", "y", "z")))
    assert record_sync.apply_changes(ctx, manager, "contact", made).created == 3
    ids = {r.external_id: r.id for r in records.list_records(ctx, "contact").items}
    gone = batch({"op": "delete", "external_id": "x"}, {"op": "delete", "external_id": "z"})
    assert record_sync.apply_changes(ctx, manager, "contact", gone).deleted == 2
    assert [r.external_id for r in records.list_records(ctx, "contact").items] == ["y"]
    for key in ("x", "z"):
        kinds = [c.kind for c in records.record_changes(ctx, ids[key]).items]
        assert kinds == ["created", "deleted"]


def test_a_batch_is_bounded_and_only_managers_send_it(
    ctx: Context, manager: Actor, member: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PermissionDeniedError):
        record_sync.apply_changes(ctx, member, "contact", b"")
    monkeypatch.setattr(record_sync, "MAX_CHANGES", 2)
    three = batch(*({"external_id": str(i), "data": {"last_name": "X"}} for i in range(3)))
    with pytest.raises(InvalidInputError, match="more than 2 changes"):
        record_sync.apply_changes(ctx, manager, "contact", three)
    assert records.list_records(ctx, "contact").items == []


def test_a_synced_record_enters_a_flow_triggered_by_creation(
    ctx: Context, admin: Actor, manager: Actor, clock: FrozenClock
) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    clock.advance(minutes=1)
    body = batch({"op": "upsert", "external_id": "crm-9", "data": {"last_name": "Synced"}})
    assert record_sync.apply_changes(ctx, manager, "contact", body).created == 1
    run_once(ctx)
    record = record_sync.get_external(ctx, "contact", "crm-9")
    assert history(ctx, record.id)[-1] == "welcome Synced"


def test_a_record_given_the_same_external_id_meanwhile_is_a_conflict_not_a_crash(
    ctx: Context, manager: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_sync.upsert_external(ctx, manager, "contact", "crm-1", {"last_name": "First"})
    # As if another sender created crm-1 between this sender's lookup and its insert.
    monkeypatch.setattr(stored_records, "find_by_external_ids", lambda *_a, **_k: {})
    with pytest.raises(ConflictError, match="send the change again"):
        record_sync.upsert_external(ctx, manager, "contact", "crm-1", {"last_name": "Second"})
    body = batch({"external_id": "crm-1", "data": {"last_name": "Third"}})
    with pytest.raises(ConflictError):
        record_sync.apply_changes(ctx, manager, "contact", body)
    assert [r.data["last_name"] for r in records.list_records(ctx, "contact").items] == ["First"]
