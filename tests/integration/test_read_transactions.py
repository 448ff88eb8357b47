"""Readers are never blocked by a writer, and a worker's batch holds its write transaction for a
bounded time (SQLite and PostgreSQL).

On SQLite every write transaction takes the database's one write lock (BEGIN IMMEDIATE); reads
go through `read_connection`, a deferred BEGIN that takes no lock. These tests hold a write
transaction open on another connection, as a long worker batch does, and check that what the
API reads still answers at once; and that a batch past its time limit commits what it moved
and leaves the rest, intact, to the next batch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.engine.transition import advance
from crmflow.runner import evaluate_batch
from crmflow.services import enrollments as runs
from crmflow.services import flows, queries, records, run_views, users
from crmflow.services.context import Actor, Context
from crmflow.services.users import ensure_system_user
from crmflow.store.database import read_connection
from crmflow.store.enrollments import lock
from crmflow.store.schema import enrollments, outbox, record_history
from crmflow.store.schema import records as records_table
from crmflow.worker import run_batch, run_once
from tests.conftest import FrozenClock
from tests.integration.helpers import count_rows

WAITING = """\
schema_version: 1
key: later
name: Later
record_type: contact
owner: system
reentry: {mode: always}
triggers:
  - type: manual
steps:
  - key: wait
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: history
        message: "waited for {{ record.first_name }}"
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "One day later"
  - key: done
    type: end
"""


def _contact(ctx: Context, admin: Actor, name: str) -> int:
    return records.create_record(
        ctx, admin, "contact", {"first_name": name, "last_name": "Martin", "email": "c@ex.org"}
    ).id


def _started_flow(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WAITING)
    flows.change_status(ctx, admin, "later", LifecycleAction.START)


@contextmanager
def _writer_holding_the_lock(ctx: Context, record_id: int) -> Iterator[None]:
    """A write transaction left open on its own connection, as a long batch leaves it: on
    SQLite it holds the write lock (BEGIN IMMEDIATE), on PostgreSQL the record's row lock."""
    with ctx.engine.connect() as writer:
        writer.begin()
        writer.execute(
            records_table.update()
            .where(records_table.c.id == record_id)
            .values(data={"first_name": "Uncommitted", "last_name": "X", "email": "x@ex.org"})
        )
        try:
            yield
        finally:
            writer.rollback()


def _timed_in_thread(
    reads: dict[str, Callable[[], Any]], *, wait: float
) -> tuple[dict[str, float], dict[str, Any], BaseException | None]:
    """Run `reads` one after the other in a thread (a blocked read must not hang the test past
    `wait` seconds); how long each took, what each returned, and the first error."""
    took: dict[str, float] = {}
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for name, read in reads.items():
                started = time.monotonic()
                results[name] = read()
                took[name] = time.monotonic() - started
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=wait)
    return took, results, errors[0] if errors else None


def test_every_read_answers_at_once_while_a_writer_holds_its_transaction_open(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started_flow(ctx, admin)
    rid = _contact(ctx, admin, "Claire")
    runs.start_record(ctx, admin, "later", rid)
    queries.save_query(
        ctx,
        admin,
        name="claires",
        record_type="contact",
        filter={"field": "first_name", "op": "=", "value": "Claire"},
    )
    token = users.create_token(ctx, admin, "system").token
    reads: dict[str, Callable[[], Any]] = {
        "get_record": lambda: records.get_record(ctx, rid).data["first_name"],
        "list_records": lambda: len(records.list_records(ctx, "contact").items),
        "record_changes": lambda: len(records.record_changes(ctx, rid).items),
        "authenticate_token": lambda: users.authenticate_token(ctx, token).username,
        "list_users": lambda: len(users.list_users(ctx)),
        "get_flow": lambda: flows.get_flow(ctx, admin, "later").key,
        "list_flows": lambda: len(flows.list_flows(ctx, admin)),
        "flow_progress": lambda: run_views.flow_progress(ctx, admin, "later").as_dict(),
        "record_status": lambda: len(run_views.record_status(ctx, admin, rid).enrollments),
        "count_query": lambda: queries.count_query(ctx, "claires"),
        "preview_query": lambda: len(queries.preview_query(ctx, "claires").items),
    }

    with _writer_holding_the_lock(ctx, rid):
        took, results, error = _timed_in_thread(reads, wait=10)

    assert error is None, f"a read failed while a writer held its transaction: {error!r}"
    assert set(took) == set(reads), f"reads still waiting for the writer: {set(reads) - set(took)}"
    slow = {name: round(t, 2) for name, t in took.items() if t >= 1.0}
    assert not slow, f"reads that waited for the writer (seconds): {slow}"
    # Each read saw what was committed, not the writer's uncommitted change.
    assert results["get_record"] == "Claire"
    assert results["count_query"] == 1
    assert results["preview_query"] == 1


def test_a_write_waits_for_the_writer_on_sqlite_so_read_then_write_loses_nothing(
    ctx: Context, admin: Actor
) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL serialises writers of one row with its row lock (FOR UPDATE)")
    rid = _contact(ctx, admin, "Claire")
    done = threading.Event()

    def second_writer() -> None:
        records.update_record(ctx, admin, rid, {"first_name": "Second"})
        done.set()

    with _writer_holding_the_lock(ctx, rid):
        thread = threading.Thread(target=second_writer, daemon=True)
        thread.start()
        # The second writer waits for the write lock (BEGIN IMMEDIATE), it does not read a
        # snapshot and write over the first one's change.
        assert not done.wait(0.5), "a write began while another write transaction was open"
    thread.join(timeout=10)
    assert done.is_set()
    assert records.get_record(ctx, rid).data["first_name"] == "Second"


def test_a_read_connection_refuses_to_write_on_sqlite_and_leaves_the_pool_writable(
    ctx: Context, admin: Actor
) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL a read connection is a plain connection (MVCC)")
    rid = _contact(ctx, admin, "Claire")
    with (
        pytest.raises(sa.exc.OperationalError, match="readonly"),
        read_connection(ctx.engine) as conn,
    ):
        conn.execute(records_table.delete().where(records_table.c.id == rid))
    # The pooled connection is writable again for the next writer.
    for _ in range(3):
        records.update_record(ctx, admin, rid, {"first_name": "Written"})
    assert records.get_record(ctx, rid).data["first_name"] == "Written"


def test_a_read_connection_sees_one_snapshot_on_sqlite(ctx: Context, admin: Actor) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL reads at READ COMMITTED; a snapshot there needs REPEATABLE READ")
    _contact(ctx, admin, "Claire")
    count = sa.select(sa.func.count()).select_from(records_table)
    with read_connection(ctx.engine) as conn:
        before = conn.execute(count).scalar_one()
        _contact(ctx, admin, "Paul")  # committed by another connection meanwhile
        assert conn.execute(count).scalar_one() == before
    with read_connection(ctx.engine) as conn:
        assert conn.execute(count).scalar_one() == before + 1


def _history_per_record(ctx: Context, ids: list[int]) -> dict[int, int]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(record_history.c.record_id, sa.func.count())
            .where(record_history.c.record_id.in_(ids))
            .group_by(record_history.c.record_id)
        ).all()
    found = {int(r[0]): int(r[1]) for r in rows}
    return {rid: found.get(rid, 0) for rid in ids}


def _batch_limit_only(ctx: Context, monkeypatch: pytest.MonkeyPatch, batch_ms: int) -> None:
    """Set the batch's time limit to `batch_ms` while one record's run of steps keeps a budget
    of a minute: these tests are about where a batch is cut, and the per-record budget (derived
    from the same setting, see Context.evaluation_limits) would otherwise cut every record's
    chain after its first step as well."""
    limits = replace(ctx.evaluation_limits, call_time_limit_ms=60_000)
    ctx.settings = ctx.settings.model_copy(update={"batch_time_limit_ms": batch_ms})
    monkeypatch.setattr(type(ctx), "evaluation_limits", property(lambda _self: limits))


def test_a_batch_past_its_time_limit_commits_what_it_moved_and_leaves_the_rest_due(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _started_flow(ctx, admin)
    ids = [_contact(ctx, admin, f"C{i}") for i in range(30)]
    for rid in ids:
        runs.start_record(ctx, admin, "later", rid)
    clock.advance(days=1)
    # No time at all: each batch takes one record and stops (the least a batch does).
    _batch_limit_only(ctx, monkeypatch, 0)
    system = ensure_system_user(ctx)

    first = run_batch(ctx, system, now=clock.current, owner="w", limit=500)

    assert first.claimed == len(ids)
    assert first.moved == 1
    assert first.deferred == len(ids) - 1
    # What it moved is committed; the rest is untouched, due, and not leased to anyone.
    assert sum(_history_per_record(ctx, ids).values()) == 1
    assert count_rows(ctx, outbox) == 1
    with ctx.engine.connect() as conn:
        leased = conn.execute(
            sa.select(sa.func.count())
            .select_from(enrollments)
            .where(enrollments.c.lease_owner.is_not(None))
        ).scalar_one()
        waiting = conn.execute(
            sa.select(sa.func.count())
            .select_from(enrollments)
            .where(enrollments.c.step_key == "wait", enrollments.c.status == "active")
        ).scalar_one()
    assert leased == 0
    assert waiting == len(ids) - 1

    # Later batches move the rest: every record once, none lost, none twice.
    assert run_once(ctx) == len(ids) - 1
    assert _history_per_record(ctx, ids) == dict.fromkeys(ids, 1)
    assert count_rows(ctx, outbox) == len(ids)
    assert count_rows(ctx, enrollments, status="finished") == len(ids)


def test_a_batch_within_its_time_limit_moves_everything_at_once(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _started_flow(ctx, admin)
    ids = [_contact(ctx, admin, f"C{i}") for i in range(10)]
    for rid in ids:
        runs.start_record(ctx, admin, "later", rid)
    clock.advance(days=1)
    ctx.settings = ctx.settings.model_copy(update={"batch_time_limit_ms": 60_000})

    result = run_batch(ctx, ensure_system_user(ctx), now=clock.current, owner="w", limit=500)

    assert (result.claimed, result.moved, result.deferred) == (len(ids), len(ids), 0)


def test_a_cut_never_separates_enrollments_of_one_record_in_one_flow(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _started_flow(ctx, admin)
    claire, paul = _contact(ctx, admin, "Claire"), _contact(ctx, admin, "Paul")
    # Enrollment ids in order: Claire, Paul, Claire again (re-entry: always).
    for rid in (claire, paul, claire):
        runs.start_record(ctx, admin, "later", rid)
    clock.advance(days=1)
    _batch_limit_only(ctx, monkeypatch, 0)
    system = ensure_system_user(ctx)

    first = run_batch(ctx, system, now=clock.current, owner="w", limit=500)

    # Past the limit from the start: Claire's first enrollment moves (a batch always moves
    # one), Paul's waits, and Claire's second is moved with her first, not cut from it.
    assert (first.moved, first.deferred) == (2, 1)
    assert _history_per_record(ctx, [claire, paul]) == {claire: 2, paul: 0}
    second = run_batch(ctx, system, now=clock.current, owner="w", limit=500)
    assert (second.claimed, second.moved, second.deferred) == (1, 1, 0)
    assert _history_per_record(ctx, [claire, paul]) == {claire: 2, paul: 1}
    assert run_batch(ctx, system, now=clock.current + timedelta(seconds=1), owner="w").claimed == 0


def _sqlite_path(ctx: Context) -> str:
    database = ctx.engine.url.database
    assert database is not None
    return database


def test_a_batch_evaluates_its_templates_before_it_takes_the_write_lock_on_sqlite(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL a batch locks only its own rows: readers and writers go on")
    _started_flow(ctx, admin)
    ids = [_contact(ctx, admin, f"C{i}") for i in range(5)]
    for rid in ids:
        runs.start_record(ctx, admin, "later", rid)
    clock.advance(days=1)
    lock_free_at_evaluation: list[bool] = []

    def advance_probing_the_lock(*args: Any, **kwargs: Any) -> Any:
        # Could another writer take the write lock while this enrollment is evaluated?
        probe = sqlite3.connect(_sqlite_path(ctx), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            lock_free_at_evaluation.append(True)
        except sqlite3.OperationalError:
            lock_free_at_evaluation.append(False)
        finally:
            probe.close()
        return advance(*args, **kwargs)

    monkeypatch.setattr("crmflow.runner.evaluation.advance", advance_probing_the_lock)
    reads_of_rows: list[int] = []

    def counted_lock(*args: Any, **kwargs: Any) -> Any:
        reads_of_rows.append(1)
        return lock(*args, **kwargs)

    monkeypatch.setattr("crmflow.store.enrollments.lock", counted_lock)

    result = run_batch(ctx, ensure_system_user(ctx), now=clock.current, owner="w")

    assert result.moved == len(ids)
    # Each enrollment evaluated once, outside the write transaction; the write reused it.
    assert lock_free_at_evaluation == [True] * len(ids)
    # Nothing was committed in between (the probes rolled back): the rows were read once.
    assert len(reads_of_rows) == 1
    assert _history_per_record(ctx, ids) == dict.fromkeys(ids, 1)


def test_what_changed_between_evaluation_and_write_is_not_written_from_a_stale_snapshot(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL a batch evaluates under its row locks (no snapshot to check)")
    _started_flow(ctx, admin)
    renamed, cancelled, untouched = (_contact(ctx, admin, n) for n in ("Claire", "Paul", "Ana"))
    enrollment_of = {
        rid: runs.start_record(ctx, admin, "later", rid).id
        for rid in (renamed, cancelled, untouched)
    }
    clock.advance(days=1)

    def evaluate_then_someone_writes(*args: Any, **kwargs: Any) -> Any:
        evaluated = evaluate_batch(*args, **kwargs)
        # Between the snapshot and the batch's write transaction, a person renames one record
        # and cancels another one's run.
        records.update_record(ctx, admin, renamed, {"first_name": "Claudia"})
        runs.cancel_enrollment(ctx, admin, enrollment_of[cancelled], "by hand")
        return evaluated

    monkeypatch.setattr("crmflow.worker.evaluate_batch", evaluate_then_someone_writes)

    result = run_batch(ctx, ensure_system_user(ctx), now=clock.current, owner="w")

    assert (result.claimed, result.moved, result.deferred) == (3, 2, 1)
    with ctx.engine.connect() as conn:
        messages = dict(
            conn.execute(
                sa.select(record_history.c.record_id, record_history.c.message).where(
                    record_history.c.message.like("waited for %")
                )
            ).all()
        )
        cancelled_status = conn.execute(
            sa.select(enrollments.c.status).where(enrollments.c.id == enrollment_of[cancelled])
        ).scalar_one()
    # The renamed record was evaluated again, with its new name; the cancelled run stays
    # cancelled (not moved on from what the snapshot said); the untouched one moved as read.
    assert messages == {renamed: "waited for Claudia", untouched: "waited for Ana"}
    assert cancelled_status == "cancelled"
    assert run_once(ctx) == 0
