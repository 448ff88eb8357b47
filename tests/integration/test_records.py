"""Records: CRUD with change events, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.store import records as store
from crmflow.store.wakeups import on_work_committed
from crmflow.worker import run_once
from tests.conftest import FrozenClock


def test_a_created_record_belongs_to_its_creator_and_leaves_an_event(
    ctx: Context, member: Actor
) -> None:
    rec = records.create_record(
        ctx, member, "contact", {"first_name": "Ana", "last_name": "Popescu", "email": None}
    )
    assert rec.owner_id == member.id
    assert rec.owner == member.username
    assert rec.data == {"first_name": "Ana", "last_name": "Popescu"}
    assert records.get_record(ctx, rec.id).as_dict()["owner"] == member.username
    (event,) = records.record_changes(ctx, rec.id).items
    assert event.kind == "created"
    assert event.before is None
    assert event.after == {**rec.data, "_owner_id": member.id}
    assert (event.actor_id, event.actor, event.at) == (member.id, member.username, ctx.now())


def test_bad_values_are_refused_naming_the_field(ctx: Context, member: Actor) -> None:
    with pytest.raises(InvalidInputError) as exc:
        records.create_record(
            ctx, member, "contact", {"last_name": "X", "emial": "a@b.com", "newsletter": "yes"}
        )
    paths = {p.path for p in exc.value.problems}
    assert paths == {"emial", "newsletter"}
    assert "unknown field" in str(exc.value)
    with pytest.raises(NotFoundError, match=r"no record type 'donor'.*contact"):
        records.create_record(ctx, member, "donor", {"name": "x"})
    assert records.list_records(ctx, "contact").items == []


def test_owner_users_and_references_must_exist(
    ctx: Context, admin: Actor, member: Actor, manager: Actor
) -> None:
    company = records.create_record(ctx, admin, "company", {"name": "Acme"})
    contact = records.create_record(
        ctx,
        admin,
        "contact",
        {"last_name": "Rossi", "company": company.id, "manager": manager.username},
        owner=member.username,
    )
    assert contact.owner_id == member.id
    assert contact.data["manager"] == manager.id  # usernames are stored as ids
    with pytest.raises(InvalidInputError, match="owner: no user named 'ghost'"):
        records.create_record(ctx, admin, "contact", {"last_name": "X"}, owner="ghost")
    with pytest.raises(InvalidInputError, match="manager: no user named 'nobody'"):
        records.create_record(ctx, admin, "contact", {"last_name": "X", "manager": "nobody"})
    with pytest.raises(InvalidInputError, match="manager: no user with id 9999"):
        records.create_record(ctx, admin, "contact", {"last_name": "X", "manager": 9999})
    with pytest.raises(InvalidInputError, match="company: no company with id 9999"):
        records.create_record(ctx, admin, "contact", {"last_name": "X", "company": 9999})
    with pytest.raises(InvalidInputError, match=f"record {contact.id} is a contact, not a company"):
        records.create_record(ctx, admin, "contact", {"last_name": "X", "company": contact.id})


def test_updates_are_partial_and_only_real_changes_leave_events(
    ctx: Context, member: Actor, manager: Actor
) -> None:
    rec = records.create_record(
        ctx, member, "contact", {"last_name": "Rossi", "status": "lead", "email": "a@b.com"}
    )
    assert isinstance(ctx.clock, FrozenClock)
    ctx.clock.advance(hours=1)
    updated = records.update_record(ctx, member, rec.id, {"status": "client", "email": None})
    assert updated.data == {"last_name": "Rossi", "status": "client"}
    assert updated.updated_at > rec.updated_at
    again = records.update_record(ctx, member, rec.id, {"status": "client"})
    assert again.updated_at == updated.updated_at
    records.update_record(ctx, member, rec.id, {}, owner=manager.username)
    events = records.record_changes(ctx, rec.id).items
    assert [e.kind for e in events] == ["created", "updated", "updated"]
    assert events[1].before is not None and events[1].before["status"] == "lead"
    assert events[1].after is not None and events[1].after["status"] == "client"
    assert events[1].changed_fields == ["email", "status"]
    assert events[2].changed_fields == ["_owner_id"]
    with pytest.raises(InvalidInputError, match="may not be cleared"):
        records.update_record(ctx, member, rec.id, {"last_name": None})
    with pytest.raises(NotFoundError):
        records.update_record(ctx, member, 9999, {"status": "client"})


def test_members_may_not_delete_and_deleted_records_keep_their_history(
    ctx: Context, member: Actor, manager: Actor
) -> None:
    rec = records.create_record(ctx, member, "contact", {"last_name": "Rossi"})
    with pytest.raises(PermissionDeniedError, match="only managers and admins"):
        records.delete_record(ctx, member, rec.id)
    records.delete_record(ctx, manager, rec.id)
    with pytest.raises(NotFoundError):
        records.get_record(ctx, rec.id)
    events = records.record_changes(ctx, rec.id).items
    assert [e.kind for e in events] == ["created", "deleted"]
    assert events[1].before == {"last_name": "Rossi", "_owner_id": member.id}
    assert events[1].actor == manager.username
    with pytest.raises(NotFoundError):
        records.record_changes(ctx, 9999)


def test_lists_and_the_change_feed_page_by_id(ctx: Context, admin: Actor) -> None:
    made = [records.create_record(ctx, admin, "contact", {"last_name": f"n{i}"}) for i in range(5)]
    records.create_record(ctx, admin, "company", {"name": "Acme"})
    first = records.list_records(ctx, "contact", limit=2)
    assert [r.id for r in first.items] == [r.id for r in made[:2]]
    second = records.list_records(ctx, "contact", after=first.next_after, limit=2)
    third = records.list_records(ctx, "contact", after=second.next_after, limit=2)
    assert [r.data["last_name"] for r in second.items + third.items] == ["n2", "n3", "n4"]
    assert third.next_after is None
    with pytest.raises(NotFoundError):
        records.list_records(ctx, "donor")
    with pytest.raises(InvalidInputError, match="limit"):
        records.list_records(ctx, "contact", limit=0)

    feed = records.change_feed(ctx, limit=4)
    rest = records.change_feed(ctx, after=feed.next_after)
    events = feed.items + rest.items
    assert [e.record_type for e in events] == ["contact"] * 5 + ["company"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert rest.next_after is None


TWO_WRITES = """\
schema_version: 1
key: two-writes
name: Two writes
record_type: contact
triggers: [{type: manual}]
steps:
  - key: later
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: update_record
        values: {first_name: Written, email: null}
      - type: set_status
        status: client
"""


def test_a_flows_writes_go_the_way_of_any_record_change(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    """Two actions of one step change the record: one new version, one event per change, each
    starting where the one before ended (None clearing a field)."""
    rec = records.create_record(
        ctx, admin, "contact", {"first_name": "Ana", "last_name": "Pop", "email": "a@b.org"}
    )
    flows.create_flow(ctx, admin, TWO_WRITES)
    flows.change_status(ctx, admin, "two-writes", LifecycleAction.START)
    runs.start_record(ctx, admin, "two-writes", rec.id)
    clock.advance(hours=1)
    run_once(ctx)
    after = records.get_record(ctx, rec.id)
    assert after.version == rec.version + 1
    assert after.data == {"first_name": "Written", "last_name": "Pop", "status": "client"}
    created, first, second = records.record_changes(ctx, rec.id).items
    assert first.before == created.after
    assert first.changed_fields == ["email", "first_name"]
    assert second.before == first.after
    assert second.changed_fields == ["status"]
    assert second.after == {**after.data, "_owner_id": admin.id}


def test_a_change_computed_from_a_stale_read_writes_nothing(ctx: Context, admin: Actor) -> None:
    """The one write of a record change (whoever makes it: an edit, a flow's batch) compares and
    sets the version it read, so a concurrent write is never overwritten; a change that is
    written wakes idle workers at commit (it may start flows), one that is refused does not."""
    rec = records.create_record(ctx, admin, "contact", {"last_name": "Pop"})
    with ctx.engine.connect() as conn:
        stale = store.find_record(conn, rec.id)
    assert stale is not None
    records.update_record(ctx, admin, rec.id, {"first_name": "Ana"})
    woken: list[str] = []
    on_work_committed(ctx.engine, lambda: woken.append("wake"))

    def write(record: store.StoredRecord) -> None:
        change = store.RecordUpdate(
            record, store.merged(record.data, {"status": "lead"}), record.owner_id
        )
        with ctx.engine.begin() as conn:
            store.update_records(conn, [change], actor_id=admin.id, now=ctx.now())

    with pytest.raises(ConflictError, match=f"record {rec.id} changed while"):
        write(stale)
    assert records.get_record(ctx, rec.id).data == {"last_name": "Pop", "first_name": "Ana"}
    assert len(records.record_changes(ctx, rec.id).items) == 2
    assert woken == []
    with ctx.engine.connect() as conn:
        fresh = store.find_record(conn, rec.id)
    assert fresh is not None
    write(fresh)
    assert woken == ["wake"]
    assert records.get_record(ctx, rec.id).version == 3


def test_none_clears_a_field_and_stored_values_hold_no_null() -> None:
    assert store.merged({"a": 1, "b": 2}, {"a": None, "c": 3, "d": None}) == {"b": 2, "c": 3}
    assert store.without_nulls({"a": None, "b": 0, "c": ""}) == {"b": 0, "c": ""}
