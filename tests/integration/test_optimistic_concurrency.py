"""Optimistic concurrency on SQLite and PostgreSQL: every write path bumps a record's version
(update, the worker's update_record / set_status / assign_owner, import), flows' revision and
saved queries' version; a write that names a stale version is refused with nothing written; and
twenty clients doing read-then-conditional-write on one record lose no update."""

from __future__ import annotations

import io
import threading
from collections import Counter

import pytest

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import PreconditionFailedError
from crmflow.services import enrollments as runs
from crmflow.services import flows, imports, queries, records
from crmflow.services.context import Actor, Context
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user


def _contact(ctx: Context, admin: Actor, **values: object) -> records.RecordView:
    return records.create_record(ctx, admin, "contact", {"last_name": "Martin", **values})


def _version(ctx: Context, record_id: int) -> int:
    return records.get_record(ctx, record_id).version


# -- records: every write path bumps the version ------------------------------------------------


def test_an_update_bumps_the_version_and_a_no_op_does_not(ctx: Context, admin: Actor) -> None:
    record = _contact(ctx, admin)
    assert record.version == 1
    assert record.as_dict()["version"] == 1
    assert records.update_record(ctx, admin, record.id, {"first_name": "Ana"}).version == 2
    # Nothing changed: no change event, so no new version either.
    assert records.update_record(ctx, admin, record.id, {"first_name": "Ana"}).version == 2
    maria = make_user(ctx, "maria", "manager")
    assert records.update_record(ctx, admin, record.id, {}, owner=maria.id).version == 3
    assert _version(ctx, record.id) == 3


WRITES = """\
schema_version: 1
key: writes
name: Writes
record_type: contact
triggers: [{type: manual}]
steps:
  - key: values
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: update_record
        values: {first_name: Written}
  - key: status
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: set_status
        status: client
  - key: owner
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: assign_owner
        strategy: round_robin
        users: [alice]
"""


def test_the_workers_update_record_set_status_and_assign_owner_bump_the_version(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    make_user(ctx, "alice", "member")
    flows.create_flow(ctx, admin, WRITES)
    flows.change_status(ctx, admin, "writes", LifecycleAction.START)
    record = _contact(ctx, admin)
    runs.start_record(ctx, admin, "writes", record.id)
    seen = []
    for _ in range(3):
        clock.advance(hours=1)
        run_once(ctx)
        seen.append(records.get_record(ctx, record.id))
    assert [r.version for r in seen] == [2, 3, 4]
    assert seen[0].data["first_name"] == "Written"
    assert seen[1].data["status"] == "client"
    assert seen[2].owner == "alice"


def test_imported_records_start_at_version_one_and_then_count_their_writes(
    ctx: Context, admin: Actor
) -> None:
    lines = '{"last_name": "Pop"}\n{"last_name": "Ionescu"}\n'
    report = imports.import_records(ctx, admin, "contact", io.StringIO(lines), fmt="jsonl")
    assert report.imported == 2
    page = records.list_records(ctx, "contact")
    assert [r.version for r in page.items] == [1, 1]
    first = page.items[0].id
    assert (
        records.update_record(ctx, admin, first, {"first_name": "Ana"}, if_version=1).version == 2
    )


# -- records: a stale version writes nothing -----------------------------------------------------


def test_an_update_with_a_stale_version_is_refused_and_writes_nothing(
    ctx: Context, admin: Actor
) -> None:
    record = _contact(ctx, admin, first_name="Ana")
    records.update_record(ctx, admin, record.id, {"first_name": "Bea"}, if_version=1)
    with pytest.raises(PreconditionFailedError) as refused:
        records.update_record(ctx, admin, record.id, {"first_name": "Cleo"}, if_version=1)
    assert refused.value.status_code == 412
    message = refused.value.message
    assert f"record {record.id} is at version 2, not 1" in message
    assert "nothing was written" in message
    assert f"crmflow records get {record.id}" in message
    now = records.get_record(ctx, record.id)
    assert (now.version, now.data["first_name"]) == (2, "Bea")
    assert len(records.record_changes(ctx, record.id).items) == 2  # created, Bea: not Cleo

    with pytest.raises(PreconditionFailedError, match="is at version 2, not 1"):
        records.delete_record(ctx, admin, record.id, if_version=1)
    assert _version(ctx, record.id) == 2  # still there
    records.delete_record(ctx, admin, record.id, if_version=2)
    assert records.list_records(ctx, "contact").items == []


def test_any_of_several_versions_matches_and_none_means_any(ctx: Context, admin: Actor) -> None:
    record = _contact(ctx, admin)
    assert records.update_record(ctx, admin, record.id, {"first_name": "A"}, if_version={1, 5})
    with pytest.raises(PreconditionFailedError, match="at version 2, not 3 or 4"):
        records.update_record(ctx, admin, record.id, {"first_name": "B"}, if_version=[4, 3])
    assert records.update_record(ctx, admin, record.id, {"first_name": "C"}).version == 3


# -- flows and saved queries ---------------------------------------------------------------------

DRAFT = """\
schema_version: 1
key: welcome
name: {name}
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: update_record
        values: {{first_name: Hello}}
"""


def test_a_flow_revision_counts_edits_status_changes_and_members(
    ctx: Context, admin: Actor
) -> None:
    make_user(ctx, "alice", "member")
    created = flows.create_flow(ctx, admin, DRAFT.format(name="Welcome"))
    assert (created.revision, created.as_dict()["revision"]) == (1, 1)
    edited = flows.update_flow(ctx, admin, "welcome", DRAFT.format(name="Hi"), if_revision=1)
    assert edited.revision == 2
    with pytest.raises(PreconditionFailedError) as refused:
        flows.update_flow(ctx, admin, "welcome", DRAFT.format(name="Lost"), if_revision=1)
    assert "flow 'welcome' is at revision 2, not 1" in refused.value.message
    assert "crmflow flows show welcome" in refused.value.message
    assert flows.get_flow(ctx, admin, "welcome").name == "Hi"

    assert flows.add_member(ctx, admin, "welcome", "alice").revision == 3
    assert flows.add_member(ctx, admin, "welcome", "alice").revision == 3  # already a member
    assert flows.remove_member(ctx, admin, "welcome", "alice").revision == 4
    with pytest.raises(PreconditionFailedError, match="at revision 4, not 3"):
        flows.change_status(ctx, admin, "welcome", LifecycleAction.START, if_revision=3)
    assert flows.get_flow(ctx, admin, "welcome").status.value == "draft"
    started = flows.change_status(ctx, admin, "welcome", LifecycleAction.START, if_revision=4)
    assert (started.status.value, started.revision) == ("active", 5)

    with pytest.raises(PreconditionFailedError, match="at revision 5, not 4"):
        flows.delete_flow(ctx, admin, "welcome", if_revision=4)


def test_a_saved_query_version_counts_updates_and_a_stale_one_is_refused(
    ctx: Context, admin: Actor
) -> None:
    saved = queries.save_query(
        ctx, admin, name="leads", record_type="contact", filter={}, description="all"
    )
    assert (saved.version, saved.as_dict()["version"]) == (1, 1)
    changed = queries.update_query(ctx, admin, "leads", description="every contact", if_version=1)
    assert changed.version == 2
    with pytest.raises(PreconditionFailedError) as refused:
        queries.update_query(ctx, admin, "leads", description="lost", if_version=1)
    assert "saved query 'leads' is at version 2, not 1" in refused.value.message
    assert queries.get_query(ctx, "leads").description == "every contact"
    with pytest.raises(PreconditionFailedError):
        queries.delete_query(ctx, admin, "leads", if_version=1)
    queries.delete_query(ctx, admin, "leads", if_version=2)
    assert queries.list_queries(ctx).items == []


# -- compare-and-set under concurrency -----------------------------------------------------------

CLIENTS = 20
WRITES_EACH = 5


def test_twenty_clients_doing_read_then_conditional_write_lose_no_update(
    ctx: Context, admin: Actor
) -> None:
    record = _contact(ctx, admin, total_donations=0)
    start = threading.Barrier(CLIENTS)
    done: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            start.wait()
            written = refused = 0
            while written < WRITES_EACH:
                seen = records.get_record(ctx, record.id)
                counter = int(seen.data["total_donations"])
                try:
                    records.update_record(
                        ctx,
                        admin,
                        record.id,
                        {"total_donations": counter + 1},
                        if_version=seen.version,
                    )
                except PreconditionFailedError:
                    refused += 1  # someone wrote first: read again and retry
                    continue
                written += 1
            with lock:
                done["written"] += written
                done["refused"] += refused
        except BaseException as exc:  # reported by the asserts below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert done["written"] == CLIENTS * WRITES_EACH
    final = records.get_record(ctx, record.id)
    # No update lost: the counter says how many writes succeeded, and each was one version.
    assert int(final.data["total_donations"]) == done["written"]
    assert final.version == 1 + done["written"]
    assert len(records.record_changes(ctx, record.id, limit=1000).items) == 1 + done["written"]
