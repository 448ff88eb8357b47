"""Workers run flows on time, durably and once, on SQLite and PostgreSQL, with a frozen clock."""

from __future__ import annotations

import gc
import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crmflow import worker as worker_module
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError
from crmflow.runner import move_batch
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.services.triggers import process_triggers
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store import records as store_records
from crmflow.store.partitions import is_partition
from crmflow.store.schema import (
    metadata,
    notifications,
    outbox,
    record_changes,
    record_history,
    step_runs,
    tasks,
)
from crmflow.worker import Worker, run_batch, run_once
from tests.conftest import FrozenClock, make_user
from tests.integration.helpers import count_rows as _count
from tests.integration.helpers import history as _history

THANKS = """\
schema_version: 1
key: thanks
name: Thank donors
record_type: contact
owner: system
triggers:
  - type: manual
steps:
  - key: thank
    actions:
      - type: send_email
        subject: "Merci {{ record.first_name }} !"
        body: "Bonjour {{ record.first_name }}"
      - type: history
        message: "Thanked {{ record.first_name }}"
      - type: update_record
        values: {status: donor}
  - key: two-days-later
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: send_email
        subject: "Nos projets"
        body: "Grâce à vous"
      - type: history
        message: "News sent"
  - key: approve
    type: approval
    responsibility: {type: user, user: maria}
    message: "Make {{ record.first_name }} a client?"
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse, goto: refused, comment_required: true}
  - key: client
    actions:
      - type: set_status
        status: client
    next: finished
  - key: refused
    actions:
      - type: history
        message: "Refused"
  - key: finished
    type: end
"""


def _flow(ctx: Context, admin: Actor, text: str = THANKS) -> None:
    flows.create_flow(ctx, admin, text)
    flows.change_status(
        ctx, admin, text.split("key: ", 1)[1].split("\n", 1)[0], LifecycleAction.START
    )


def _contact(ctx: Context, admin: Actor, name: str = "Claire") -> int:
    view = records.create_record(
        ctx, admin, "contact", {"first_name": name, "last_name": "Martin", "email": "c@example.org"}
    )
    return view.id


@pytest.fixture(autouse=True)
def maria(ctx: Context) -> Actor:
    return make_user(ctx, "maria", "manager")


def _not_a_partition(obj: Any, name: str | None, kind: str, *_: Any) -> bool:
    """PostgreSQL's monthly partitions (migration 0030) are not tables of the schema: their
    partitioned parents are."""
    table = obj.table.name if kind == "index" else name
    return not (table and is_partition(table))


def test_the_migrations_build_exactly_the_tables_of_the_schema(ctx: Context) -> None:
    with ctx.engine.connect() as conn:
        opts = {"compare_type": True, "include_object": _not_a_partition}
        migration = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(migration, metadata) == []


def test_a_manual_start_runs_the_first_step_and_the_next_one_exactly_when_due(
    ctx: Context, admin: Actor, maria: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    started = runs.start_record(ctx, admin, "thanks", rid)

    # The immediate step ran at the start: email in the outbox, history, the record updated.
    assert started.step == "two-days-later"
    assert started.status == "active"
    assert started.due_at == clock.current + timedelta(days=2)
    assert _history(ctx, rid) == ["Thanked Claire"]
    assert records.get_record(ctx, rid).data["status"] == "donor"
    assert _count(ctx, outbox, enrollment_id=started.id) == 1

    # One second early: nothing moves.
    clock.advance(days=2, seconds=-1)
    assert run_once(ctx) == 0
    assert _history(ctx, rid) == ["Thanked Claire"]

    clock.advance(seconds=1)
    assert run_once(ctx) == 1
    assert _history(ctx, rid) == ["Thanked Claire", "News sent"]
    assert _count(ctx, outbox, enrollment_id=started.id) == 2

    # Now it waits for maria's decision, with a task in her list.
    [status] = run_views.record_status(ctx, admin, rid).enrollments
    assert (status.status, status.step, status.buttons) == (
        "waiting",
        "approve",
        ["validate", "refuse"],
    )
    assert status.emails == (0, 2)  # written, not delivered yet
    Dispatcher(ctx).run_once()
    assert run_views.record_status(ctx, admin, rid).enrollments[0].emails == (2, 2)
    with ctx.engine.connect() as conn:
        task = conn.execute(sa.select(tasks)).one()
    assert (task.assignee_kind, task.assignee_ref, task.status) == ("user", "maria", "open")
    clock.advance(days=30)
    assert run_once(ctx) == 0  # a decision, not time, moves it on

    with pytest.raises(ConflictError, match="comment"):
        runs.decide(ctx, maria, started.id, "approve", "refuse")
    with pytest.raises(ConflictError, match="not at step 'client'"):
        runs.decide(ctx, maria, started.id, "client", "validate")
    done = runs.decide(ctx, maria, started.id, "approve", "validate")
    assert done.status == "finished"
    assert records.get_record(ctx, rid).data["status"] == "client"
    assert _count(ctx, tasks, status="done") == 1
    assert [r.step for r in done.step_runs] == [
        "thank",
        "two-days-later",
        "approve",
        "client",
        "finished",
    ]
    approve = done.step_runs[2]
    assert approve.status == "done"
    assert approve.finished_at == clock.current


def test_a_paused_flow_freezes_its_records_and_resuming_runs_them(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    started = runs.start_record(ctx, admin, "thanks", rid)
    flows.change_status(ctx, admin, "thanks", LifecycleAction.PAUSE, confirm_inside=1)

    clock.advance(days=3)
    assert run_once(ctx) == 0
    with pytest.raises(ConflictError, match="paused"):
        runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, "Ana"))
    [frozen] = run_views.record_status(ctx, admin, rid).enrollments
    assert frozen.step == "two-days-later"
    assert _history(ctx, rid) == ["Thanked Claire"]

    flows.change_status(ctx, admin, "thanks", LifecycleAction.RESUME)
    assert run_once(ctx) == 1
    assert _history(ctx, rid)[-1] == "News sent"
    assert run_views.record_status(ctx, admin, rid).enrollments[0].id == started.id


def test_a_batch_whose_worker_died_is_free_at_once_and_runs_once(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin)
    ids = [
        runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, f"C{i}")).id for i in range(5)
    ]
    clock.advance(days=2)
    system = ensure_system_user(ctx)

    # A worker takes the batch, moves it, and dies before its commit.
    def killed(*args: Any, **kwargs: Any) -> Any:
        move_batch(*args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr("crmflow.worker.move_batch", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_batch(ctx, system, now=clock.current, owner="dead")
    monkeypatch.undo()

    # Nothing of it happened, and its rows are free at once: no lease to wait for.
    assert _count(ctx, outbox) == 5  # the first step's email, nothing of the second
    assert _count(ctx, record_history) == 5
    assert run_once(ctx, owner="other") == 5
    assert run_once(ctx) == 0

    assert _count(ctx, outbox) == 10  # two emails per record, each once
    assert _count(ctx, record_history) == 10
    with ctx.engine.connect() as conn:
        runs_per = conn.execute(
            sa.select(step_runs.c.enrollment_id, sa.func.count()).group_by(
                step_runs.c.enrollment_id
            )
        ).all()
    assert sorted(eid for eid, _ in runs_per) == ids
    assert {count for _, count in runs_per} == {3}  # thank, two-days-later, approve (waiting)


def test_a_batch_in_flight_is_skipped_by_another_worker_which_does_not_wait(
    ctx: Context, admin: Actor, clock: FrozenClock, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch's rows stay locked until its commit: a second worker that looks
    meanwhile takes none of them and does not wait for them; once the first commits, nothing is
    left to take, and each record ran once."""
    if backend != "postgresql":
        pytest.skip("SQLite has a single writer: a second worker waits for the write lock")
    _flow(ctx, admin)
    for i in range(5):
        runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, f"C{i}"))
    runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, "Late"))
    clock.advance(days=2)
    system = ensure_system_user(ctx)
    meanwhile: list[tuple[int, float]] = []

    def and_another_worker(*args: Any, **kwargs: Any) -> Any:
        if not meanwhile:  # the first batch only: the other one just moves
            started = time.monotonic()
            meanwhile.append((0, 0.0))
            other = run_batch(ctx, system, now=clock.current, owner="other", limit=100)
            meanwhile[0] = (other.claimed, time.monotonic() - started)
        return move_batch(*args, **kwargs)

    monkeypatch.setattr("crmflow.worker.move_batch", and_another_worker)
    first = run_batch(ctx, system, now=clock.current, owner="first", limit=5)
    monkeypatch.undo()

    assert first.moved == 5
    # The other worker took the one row the first batch did not hold, and nothing of it.
    [(claimed, seconds)] = meanwhile
    assert claimed == 1
    assert seconds < 30  # it did not wait for the first batch's locks (a generous bound)
    assert run_once(ctx) == 0
    assert _count(ctx, outbox) == 12  # two emails per record, each once
    assert _count(ctx, record_history) == 12


def test_a_batch_runs_without_the_cycle_collector_and_gives_it_back_as_it_found_it(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is off while a batch moves its records (it found nothing to free there and
    cost a fifth of the time), on again afterwards, and left off when the program had it off."""
    _flow(ctx, admin)
    for i in range(3):
        runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, f"C{i}"))
    clock.advance(days=2)
    seen: list[bool] = []
    move = move_batch

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return move(*args, **kwargs)

    monkeypatch.setattr("crmflow.worker.move_batch", watching)
    system = ensure_system_user(ctx)
    assert gc.isenabled()
    assert run_batch(ctx, system, now=clock.current, owner="w").moved == 3
    assert seen == [False]
    assert gc.isenabled()

    clock.advance(days=30)
    runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, "Late"))
    clock.advance(days=2)
    gc.disable()
    try:
        assert run_batch(ctx, system, now=clock.current, owner="w").moved == 1
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_after_the_batch_s_objects_are_freed(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turned on while the batch's rows, states and logs still lived, the collector would scan
    them all once more at its first pass (4% of a worker's time): it comes back once they are
    gone, to find about as few objects as a batch of one record leaves."""
    _flow(ctx, admin)
    system = ensure_system_user(ctx)
    left: list[int] = []  # objects the collector would scan first, when it comes back

    def enable() -> None:
        left.append(len(gc.get_objects(generation=0)))
        gc.enable()

    monkeypatch.setattr(
        "crmflow.worker.gc",
        SimpleNamespace(isenabled=gc.isenabled, disable=gc.disable, enable=enable),
    )
    for size in (1, 60):
        for i in range(size):
            runs.start_record(ctx, admin, "thanks", _contact(ctx, admin, f"C{size}-{i}"))
        clock.advance(days=2)
        gc.collect()
        assert run_batch(ctx, system, now=clock.current, owner="w", limit=100).moved == size
    one, sixty = left
    assert sixty < one + 1_000, left  # before: 834 and 3,606


STAMP = """\
schema_version: 1
key: stamp
name: Stamp
record_type: contact
triggers: [{type: manual}]
steps:
  - key: wait
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: update_record
        values: {first_name: "{{ record.first_name | upper }}"}
      - type: set_status
        status: client
"""


def test_a_batch_writes_its_record_changes_from_the_records_it_read(
    ctx: Context, admin: Actor, clock: FrozenClock, backend: str
) -> None:
    """On SQLite a batch reads its records once: its transaction holds the write lock from its
    start (or nothing was committed since its snapshot), so the record changes are written from
    what it read, not from a second read. PostgreSQL reads them again under a row lock. Either
    way each change lands once, in order, with its version and its change events."""
    _flow(ctx, admin, STAMP)
    ids = [_contact(ctx, admin, f"c{i}") for i in range(3)]
    for rid in ids:
        runs.start_record(ctx, admin, "stamp", rid)
    records.update_record(ctx, admin, ids[0], {"last_name": "Durand"})  # version 2 before
    clock.advance(days=1)
    reads: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        words = statement.lower().split()
        if words[0] == "select" and "from records" in " ".join(words):
            reads.append(statement)

    sa.event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        moved = run_batch(ctx, ensure_system_user(ctx), now=clock.current, owner="w").moved
    finally:
        sa.event.remove(ctx.engine, "before_cursor_execute", seen)
    assert moved == 3
    assert len(reads) == (1 if backend == "sqlite" else 2), reads
    for i, rid in enumerate(ids):
        view = records.get_record(ctx, rid)
        assert (view.data["first_name"], view.data["status"]) == (f"C{i}", "client")
        assert view.version == (3 if i == 0 else 2)  # one write for the two changes
    # Created, then the update_record and the set_status: one event each.
    assert _count(ctx, record_changes, record_id=ids[1]) == 3


def test_a_batch_of_record_changes_looks_up_the_users_it_names_and_refuses_alone_the_unknown(
    ctx: Context, admin: Actor, maria: Actor
) -> None:
    """A batch's changes are checked together: a user named by a change is stored by id, one
    that names nobody is refused alone with its reason, and those that set no user or record
    field (most of a flow's steps) apply as they are."""
    named, unknown, plain = (_contact(ctx, admin, n) for n in ("Ana", "Bo", "Cy"))
    system = ensure_system_user(ctx)
    changes = [
        records.FieldChange(named, {"manager": maria.username, "status": "client"}),
        records.FieldChange(unknown, {"manager": "nobody", "status": "client"}),
        records.FieldChange(plain, {"status": "client"}),
    ]
    with ctx.engine.begin() as conn:
        results = records.update_records_in(conn, ctx, system, changes)
    assert results[0] is None and results[2] is None
    assert results[1] is not None and "manager: no user named 'nobody'" in results[1]
    assert records.get_record(ctx, named).data["manager"] == maria.id
    assert records.get_record(ctx, named).data["status"] == "client"
    assert records.get_record(ctx, unknown).data.get("status") is None  # refused whole
    assert records.get_record(ctx, plain).data["status"] == "client"


def test_record_changes_from_records_no_longer_as_stored_are_refused_whole(
    ctx: Context, admin: Actor
) -> None:
    """Were a caller's records not current after all (a bug), the write's version check refuses
    the whole transaction rather than overwrite the newer change."""
    rid = _contact(ctx, admin)
    records.update_record(ctx, admin, rid, {"last_name": "Durand"})
    system = ensure_system_user(ctx)
    with ctx.engine.begin() as conn:
        [as_read] = store_records.lock_records(conn, {rid}).values()
    records.update_record(ctx, admin, rid, {"last_name": "Bernard"})
    known = store_records.KnownRecords({rid: as_read}, {})
    with pytest.raises(ConflictError), ctx.engine.begin() as conn:
        change = records.FieldChange(rid, {"status": "client"})
        records.update_records_in(conn, ctx, system, [change], known=known)
    view = records.get_record(ctx, rid)
    assert (view.data["last_name"], view.data.get("status")) == ("Bernard", None)


PROMOTE = """\
schema_version: 1
key: promote
name: Promote
record_type: contact
triggers: [{type: manual}]
steps:
  - key: promote
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: set_status
        status: client
"""

WELCOME_CLIENTS = """\
schema_version: 1
key: welcome
name: Welcome clients
record_type: contact
triggers: [{type: status_changed, to: client}]
steps:
  - key: note
    actions:
      - type: history
        message: "Welcome, client"
"""


def test_run_once_reads_the_triggers_while_busy_at_most_every_quarter_second_and_before_it_stops(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_once` reads the change feed and schedules as a busy worker does: not before every
    batch (each look costs some queries), but always before it decides that nothing is left, so
    that what the last batches changed still starts the flows it triggers, in the same call."""
    _flow(ctx, admin, PROMOTE)
    _flow(ctx, admin, WELCOME_CLIENTS)
    ids = [_contact(ctx, admin, f"c{i}") for i in range(6)]
    for rid in ids:
        runs.start_record(ctx, admin, "promote", rid)
    clock.advance(days=1)
    looks: list[float] = []
    process = process_triggers

    def counted(*args: Any, **kwargs: Any) -> int:
        looks.append(time.monotonic())
        return process(*args, **kwargs)

    monkeypatch.setattr("crmflow.worker.process_triggers", counted)
    # 6 batches of one promotion; the welcomes run as the feed starts them (not batched).
    assert run_once(ctx, limit=1) == 6
    # The first look and the one before stopping (a batch found nothing, and the feed one
    # more change), plus at most one per quarter second between them. Before: one look per
    # batch, 8 in all.
    spent = looks[-1] - looks[0]
    assert 2 <= len(looks) <= 3 + int(spent / worker_module.TRIGGERS_EVERY), (len(looks), spent)
    for rid in ids:
        assert "Welcome, client" in _history(ctx, rid)
        assert records.get_record(ctx, rid).data["status"] == "client"


def test_the_same_step_run_written_twice_leaves_one_outbox_row(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    """A step run retried from the same state (a crash after a partial write would do that)
    produces the same idempotency keys: the outbox keeps one row per email."""
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    started = runs.start_record(ctx, admin, "thanks", rid)
    with ctx.engine.connect() as conn:
        row = conn.execute(sa.select(outbox)).one()._asdict()
    row.pop("id")
    with ctx.engine.begin() as conn:
        repo.insert_ignoring_duplicates(conn, [row])
    assert _count(ctx, outbox, enrollment_id=started.id) == 1


def test_actions_that_cannot_be_applied_are_failed_in_the_step_run_not_dropped(
    ctx: Context, admin: Actor
) -> None:
    text = """\
schema_version: 1
key: groups
name: Groups
record_type: contact
triggers: [{type: manual}]
steps:
  - key: segment
    actions:
      - type: add_to_group
        group: donors
      - type: history
        message: "segmented"
"""
    _flow(ctx, admin, text)
    rid = _contact(ctx, admin)
    view = runs.start_record(ctx, admin, "groups", rid)
    [run] = view.step_runs
    assert run.status == "failed"
    assert run.reason == "1 of 2 actions failed; finished: went through the last step"
    failed, done = run.actions
    assert failed["status"] == "failed"
    assert "no list (record group) named 'donors'" in failed["detail"]
    assert done["status"] == "done"
    assert view.status == "finished"


def test_a_follow_up_flow_starts_when_the_first_one_says_and_notifications_are_written(
    ctx: Context, admin: Actor, maria: Actor, clock: FrozenClock
) -> None:
    first = """\
schema_version: 1
key: first
name: First
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hand-over
    actions:
      - type: notify
        users: [maria]
        message: "{{ record.first_name }} moves on"
      - type: start_flow
        flow: second
        delay: {amount: 1, unit: days}
"""
    second = """\
schema_version: 1
key: second
name: Second
record_type: contact
triggers: [{type: follow_up, from_flows: [first]}]
steps:
  - key: note
    actions:
      - type: history
        message: "second flow ran"
"""
    _flow(ctx, admin, second)
    _flow(ctx, admin, first)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "first", rid)
    assert _count(ctx, notifications, target_ref="maria") == 1
    [_, pending] = run_views.record_status(ctx, admin, rid).enrollments
    assert (pending.flow, pending.waiting_for) == ("second", "enters the flow when due")

    clock.advance(hours=23)
    assert run_once(ctx) == 0
    clock.advance(hours=1)
    assert run_once(ctx) == 1
    assert _history(ctx, rid) == ["second flow ran"]
    assert run_views.flow_progress(ctx, admin, "second").finished == 1


BULK = """\
schema_version: 1
key: bulk
name: Bulk
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
  - key: later
    timing: {type: after, amount: 30, unit: minutes}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
      - type: history
        message: "later ran"
  - key: done
    type: end
"""


def test_a_record_deleted_while_in_a_flow_leaves_it_and_the_idle_worker_knows_the_next_due(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    kept = _contact(ctx, admin, "Ana")
    runs.start_record(ctx, admin, "thanks", rid)
    runs.start_record(ctx, admin, "thanks", kept)
    assert repo.next_due(ctx.engine) == clock.current + timedelta(days=2)
    records.delete_record(ctx, admin, rid)
    clock.advance(days=2)
    assert run_once(ctx) == 2
    [gone] = run_views.record_status(ctx, admin, rid).enrollments
    assert (gone.status, gone.end_reason) == ("left", "the record was deleted")
    assert _history(ctx, kept)[-1] == "News sent"
    assert repo.next_due(ctx.engine) is None  # the other one waits for a decision


def test_an_idle_worker_wakes_on_notify_and_stops_after_its_batch(
    ctx: Context, admin: Actor, backend: str
) -> None:
    """An idle worker sleeps (here up to 30 s) but new due work wakes it at once: NOTIFY on
    PostgreSQL, `wake()` in-process (what SQLite's embedded worker relies on)."""

    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    worker = Worker(ctx, max_idle=30.0, name="idle")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.5)  # the worker found nothing and went to sleep
        with ctx.engine.begin() as conn:
            flow_id = conn.execute(sa.text("select id from flows")).scalar_one()
            repo.insert_enrollment(
                conn,
                flow_id=flow_id,
                flow_version=1,
                record_id=rid,
                now=ctx.now(),
                due_at=ctx.now(),
            )
            repo.notify_due(conn)
        if backend != "postgresql":
            worker.wake()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _history(ctx, rid) != ["Thanked Claire"]:
            time.sleep(0.05)
        assert _history(ctx, rid) == ["Thanked Claire"]
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert worker.moved == 1
