"""The change feed is cut by the batch time limit (issue 8): a runaway flow entered by many
changed records holds no write transaction much longer than settings.batch_time_limit_ms, and
every change is still consumed once, in order. A cut between chunks of changes in one
transaction changes nothing that a batch boundary would not (SQLite and PostgreSQL, frozen
clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views, triggers
from crmflow.services.context import Actor, Context
from crmflow.services.triggers import change_feed
from crmflow.store.schema import enrollments, feed_cursors, notifications, record_changes
from tests.conftest import FrozenClock
from tests.integration.helpers import history

ACTION_LIMIT_MS = 10
BATCH_LIMIT_MS = 200

# Each record's greeting loops 9 x 9,999 times: within the loop budget, and far more than
# ACTION_LIMIT_MS of work, so that every record that enters spends its whole time budget.
RUNAWAY = """\
schema_version: 1
key: runaway
name: Runaway
record_type: contact
triggers: [{type: record_created}]
steps:
  - key: greet
    actions:
      - type: history
        message: >-
          {% for i in range(9) %}{% for j in range(9999) %}{% endfor %}{% endfor %}Hello
"""

# Two waits in a row, each passed by a change of the email.
TWO_WAITS = """\
schema_version: 1
key: two-waits
name: Two waits
record_type: contact
triggers: [{type: manual}]
steps:
  - key: first
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: first-seen
    actions: [{type: history, message: "first change heard"}]
  - key: second
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: second-seen
    actions: [{type: history, message: "second change heard"}]
"""

# Entered by a creation, then waits for a change of the email.
WELCOME_WAIT = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers: [{type: record_created}]
steps:
  - key: wait
    type: wait
    fields: [email]
    timeout: {amount: 30, unit: days}
  - key: seen
    actions: [{type: history, message: "email change heard"}]
"""

# Entered again by every update: the loop guard stops it past 10 starts in a day.
AGAIN = """\
schema_version: 1
key: again
name: Again
record_type: contact
reentry: {mode: always}
triggers: [{type: record_updated}]
steps:
  - key: note
    actions: [{type: history, message: "again"}]
"""


def _flow(ctx: Context, admin: Actor, text: str) -> None:
    key = text.split("key: ", 1)[1].split("\n", 1)[0]
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, name: str) -> int:
    values = {"first_name": name, "last_name": "Martin", "email": f"{name.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", values).id


def _entered(ctx: Context, flow_key: str) -> list[tuple[int, str]]:
    """(record id, status) of the flow's enrollments, in the order they were made."""
    with ctx.engine.connect() as conn:
        flow_id = conn.execute(sa.text("select id from flows where key = :k"), {"k": flow_key})
        rows = conn.execute(
            sa.select(enrollments.c.record_id, enrollments.c.status)
            .where(enrollments.c.flow_id == flow_id.scalar_one())
            .order_by(enrollments.c.id)
        )
        return [(int(r.record_id), str(r.status)) for r in rows]


def _timed_transactions(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The wall-clock time of each of the feed's write transactions, as they happen."""
    seconds: list[float] = []
    ingest_batch: Callable[..., Any] = change_feed._ingest_batch

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return ingest_batch(*args, **kwargs)
        finally:
            seconds.append(time.monotonic() - started)

    monkeypatch.setattr(change_feed, "_ingest_batch", timed)
    return seconds


def _chunks_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk of the feed holds one change: each change is its own chunk boundary."""
    monkeypatch.setattr(change_feed, "FIRST_CHUNK", 1)
    monkeypatch.setattr(change_feed, "_GROWTH", 1)


def test_a_runaway_flow_entered_by_many_records_holds_no_transaction_past_the_limit(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.settings = ctx.settings.model_copy(
        update={"action_time_limit_ms": ACTION_LIMIT_MS, "batch_time_limit_ms": BATCH_LIMIT_MS}
    )
    _flow(ctx, admin, RUNAWAY)
    clock.advance(minutes=1)
    ids = [_contact(ctx, admin, f"C{i}") for i in range(100)]
    transactions = _timed_transactions(monkeypatch)

    assert triggers.ingest_changes(ctx) == len(ids)

    # 100 records at 10 ms each would hold one transaction for 1 s or more; cut, each lasts
    # about the limit (the last chunk, sized to the time left, may pass it by a record or two;
    # the margin is for a loaded machine).
    assert len(transactions) >= 4
    assert max(transactions) < (BATCH_LIMIT_MS + 400) / 1000, transactions
    # Every change consumed once, in order: each record entered once, in the order created.
    assert _entered(ctx, "runaway") == [(rid, "finished") for rid in ids]
    assert triggers.ingest_changes(ctx) == 0
    with ctx.engine.connect() as conn:
        cursor = conn.execute(
            sa.select(feed_cursors.c.position).where(feed_cursors.c.name == change_feed.FEED)
        ).scalar_one()
        assert cursor == conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar_one()
    # The greetings really ran into their time budget: the flow's records failed that action.
    [view] = run_views.record_status(ctx, admin, ids[-1]).enrollments
    [greeting] = view.step_runs[-1].actions
    assert greeting["status"] == "failed"
    assert f"over its time budget of {ACTION_LIMIT_MS} ms" in greeting["detail"]


def test_an_enrollment_woken_by_two_chunks_of_one_transaction_hears_both_changes(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin, TWO_WAITS)
    claire = _contact(ctx, admin, "Claire")
    runs.start_record(ctx, admin, "two-waits", claire)
    clock.advance(minutes=1)
    records.update_record(ctx, admin, claire, {"email": "claire@example.com"})
    records.update_record(ctx, admin, claire, {"email": "claire@example.net"})
    _chunks_of_one(monkeypatch)
    transactions = _timed_transactions(monkeypatch)

    triggers.ingest_changes(ctx)

    # One transaction, two chunks: the enrollment was locked and moved twice, the second time
    # from the state the first chunk wrote.
    assert len(transactions) == 1
    assert history(ctx, claire) == ["first change heard", "second change heard"]
    assert _entered(ctx, "two-waits") == [(claire, "finished")]


def test_records_entered_by_an_earlier_chunk_hear_only_changes_made_after_they_entered(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin, WELCOME_WAIT)
    clock.advance(minutes=1)
    claire = _contact(ctx, admin, "Claire")
    # Made before the feed ran, so before Claire entered: not news to her enrollment, though
    # it is handled in a later chunk of the transaction that made her enter.
    records.update_record(ctx, admin, claire, {"email": "claire@example.com"})
    _chunks_of_one(monkeypatch)

    triggers.ingest_changes(ctx)

    assert _entered(ctx, "welcome") == [(claire, "waiting")]
    assert history(ctx, claire) == []
    clock.advance(minutes=1)
    records.update_record(ctx, admin, claire, {"email": "claire@example.net"})
    triggers.ingest_changes(ctx)
    assert history(ctx, claire) == ["email change heard"]
    assert _entered(ctx, "welcome") == [(claire, "finished")]


def _loop_guard_outcome(ctx: Context, admin: Actor, clock: FrozenClock, name: str) -> Any:
    """Twelve updates of one new contact through the feed: what the loop guard made of them
    (its enrollments' statuses, the reasons kept, the notifications written)."""
    rid = _contact(ctx, admin, name)
    clock.advance(seconds=1)
    for i in range(12):
        records.update_record(ctx, admin, rid, {"last_name": f"Martin {i}"})
    triggers.ingest_changes(ctx)
    reasons = [
        d.reason.replace(f"record {rid} ", "record <it> ")
        for d in triggers.entry_decisions_for(ctx, admin, flow_key="again")
        if d.record_id == rid
    ]
    with ctx.engine.connect() as conn:
        told = conn.execute(
            sa.select(sa.func.count())
            .select_from(notifications)
            .where(notifications.c.record_id == rid)
        ).scalar_one()
    # Sorted: one batch writes the guard's cancelled starts before the admitted ones.
    return sorted(s for r, s in _entered(ctx, "again") if r == rid), reasons, told


def test_the_loop_guard_counts_the_entries_of_earlier_chunks_as_one_batch_does(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin, AGAIN)
    clock.advance(minutes=1)
    in_one_chunk = _loop_guard_outcome(ctx, admin, clock, "Ana")
    _chunks_of_one(monkeypatch)
    chunk_by_chunk = _loop_guard_outcome(ctx, admin, clock, "Paul")

    statuses, reasons, told = chunk_by_chunk
    assert statuses.count("finished") == 10  # ten starts in a day, then the guard
    assert "cancelled" in statuses
    assert reasons and all(r.startswith("loop guard: flow 'again'") for r in reasons)
    assert told > 0
    assert chunk_by_chunk == in_one_chunk


def test_a_feed_cut_after_every_change_consumes_each_once_in_order_across_a_gap(
    ctx: Context, admin: Actor, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin, AGAIN.replace("record_updated", "record_created"))
    clock.advance(minutes=1)
    first = [_contact(ctx, admin, f"A{i}") for i in range(3)]
    # A change whose transaction rolled back: on PostgreSQL its id is gone for good, a gap
    # that the cursor may pass only once no transaction that could hold it is running.
    with ctx.engine.connect() as conn, conn.begin() as rolled_back:
        conn.execute(
            record_changes.insert().values(
                record_id=first[0], record_type="contact", kind="updated", at=clock.current
            )
        )
        rolled_back.rollback()
    second = [_contact(ctx, admin, f"B{i}") for i in range(3)]
    ctx.settings = ctx.settings.model_copy(update={"batch_time_limit_ms": 0})
    _chunks_of_one(monkeypatch)
    transactions = _timed_transactions(monkeypatch)

    # The gap holds the feed while any transaction of the server that began before it runs
    # (other databases' included): ingest until the six are in, as the worker would.
    consumed, give_up = 0, time.monotonic() + 30
    while consumed < 6 and time.monotonic() < give_up:
        consumed += triggers.ingest_changes(ctx)

    assert consumed == 6
    assert len(transactions) >= 6  # one change each (and any wait for the gap)
    assert _entered(ctx, "again") == [(rid, "finished") for rid in first + second]
    assert triggers.ingest_changes(ctx) == 0
