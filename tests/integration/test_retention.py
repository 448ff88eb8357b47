"""Bounded history (issue 14): each kind's old rows go and its recent rows stay, in small
batches; what the statistics, a flow's progress and a run's page say is the same after pruning;
an archived flow keeps only its newest not-entered reasons. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from bench import bench_retention
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments, flows, records, users
from crmflow.services.archive import export_history, parse_before
from crmflow.services.context import Actor, Context
from crmflow.services.flow_views import get_flow
from crmflow.services.retention import PruneCursor, prune
from crmflow.services.run_views import enrollment_view, flow_progress
from crmflow.services.stats import flow_stats
from crmflow.store.schema import (
    enrollments as enrollments_table,
)
from crmflow.store.schema import (
    entry_decisions,
    notification_reads,
    notifications,
    outbox,
    record_changes,
    step_runs,
    webhook_receipts,
)
from crmflow.testing import FrozenClock
from crmflow.worker import Worker, run_once
from tests.conftest import make_user
from tests.integration.helpers import count_rows

MAILING = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
controller: system
reentry: {mode: always}
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
  - key: later
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: send_email
        subject: "Later"
        body: "Hi again"
"""


def _contact(ctx: Context, admin: Actor, first: str) -> int:
    values = {"first_name": first, "last_name": "Doe", "email": f"{first.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", values).id


def _run_to_the_end(ctx: Context, clock: FrozenClock, admin: Actor, names: list[str]) -> list[int]:
    """Start a run per name, cancel the first, and let the others finish a day later; their
    emails caught by the mail catcher. The runs' ids."""
    runs = [
        enrollments.start_record(ctx, admin, "welcome", _contact(ctx, admin, n)).id for n in names
    ]
    enrollments.cancel_enrollment(ctx, admin, runs[0], reason="test")
    run_once(ctx)
    Dispatcher(ctx).run_once()
    clock.advance(days=1, minutes=1)
    run_once(ctx)
    Dispatcher(ctx).run_once()
    return runs


def _figures(ctx: Context, admin: Actor) -> tuple[object, ...]:
    stats = flow_stats(ctx, admin, "welcome")
    progress = flow_progress(ctx, admin, "welcome")
    return (progress.as_dict(), stats.entries, stats.exits, stats.actions, stats.messages)


def test_old_runs_history_goes_recent_stays_and_the_figures_do_not_change(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    old = _run_to_the_end(ctx, clock, admin, ["Ana", "Bob", "Cleo"])
    clock.advance(days=170)
    recent = _run_to_the_end(ctx, clock, admin, ["Dan", "Eve"])
    clock.advance(days=20)  # the old runs ended 190 days ago, the recent ones 20 (kept 180)
    ongoing = enrollments.start_record(ctx, admin, "welcome", _contact(ctx, admin, "Fay")).id
    run_once(ctx)
    Dispatcher(ctx).run_once()
    before = _figures(ctx, admin)
    finished_run = enrollment_view_of(ctx, old[1])
    assert finished_run.emails == (2, 2)
    assert count_rows(ctx, step_runs, enrollment_id=old[1]) == 2

    ctx.settings.retention_batch_rows = 10  # several batches: two runs' rows at most in each
    result = prune(ctx)

    assert result.finished
    assert result.deleted["step_runs"] == 1 + 2 + 2  # the cancelled run ran one step
    assert result.deleted["outbox"] == 1 + 2 + 2  # its email was cancelled, the others caught
    for eid in old:
        assert count_rows(ctx, step_runs, enrollment_id=eid) == 0
        assert count_rows(ctx, outbox, enrollment_id=eid) == 0
    for eid in [*recent, ongoing]:
        assert count_rows(ctx, step_runs, enrollment_id=eid) > 0
        assert count_rows(ctx, outbox, enrollment_id=eid) > 0
    assert _figures(ctx, admin) == before
    pruned_run = enrollment_view_of(ctx, old[1])
    assert pruned_run.step_runs == [] and pruned_run.status == "finished"
    assert pruned_run.emails == (2, 2)  # the sequence's progress survives
    # A second pass finds nothing more, and counts nothing twice.
    assert prune(ctx).total == 0
    assert _figures(ctx, admin) == before


def enrollment_view_of(ctx: Context, enrollment_id: int):  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        return enrollment_view(conn, ctx, enrollment_id)


def _at(clock: FrozenClock, days_ago: int) -> datetime:
    return clock() - timedelta(days=days_ago)


def test_each_kind_old_rows_go_recent_rows_stay_and_zero_keeps_forever(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flow_id = get_flow(ctx, admin, "welcome").id
    rid = _contact(ctx, admin, "Ana")
    run_once(ctx)  # the change feed reads the record's creation
    with ctx.engine.begin() as conn:
        conn.execute(record_changes.update().values(at=_at(clock, 100)))
        for days in (40, 35, 5):
            conn.execute(
                entry_decisions.insert().values(
                    flow_id=flow_id,
                    record_id=rid,
                    trigger="manual",
                    reason="no",
                    at=_at(clock, days),
                )
            )
        for days in (400, 2):
            nid = conn.execute(
                notifications.insert().values(
                    target_kind="user",
                    target_ref="system",
                    message=f"{days}",
                    created_at=_at(clock, days),
                )
            ).inserted_primary_key
            assert nid is not None
            conn.execute(
                notification_reads.insert().values(
                    notification_id=nid[0], user_id=admin.id, read_at=_at(clock, days)
                )
            )
        for days in (10, 1):
            conn.execute(
                webhook_receipts.insert().values(
                    hook_key="h",
                    sender="s",
                    webhook_id=f"id{days}",
                    body_sha256="x" * 64,
                    received_at=_at(clock, days),
                )
            )
    # One more change, read by the feed: the newest change always stays (see store.retention).
    records.update_record(ctx, admin, rid, {"last_name": "Roe"})
    run_once(ctx)
    ctx.settings.retention_notifications_days = 0  # kept forever

    result = prune(ctx)

    assert result.deleted == {
        "step_runs": 0,
        "outbox": 0,
        "record_changes": 1,
        "not_entered": 2,
        "archived_not_entered": 0,
        "webhook_receipts": 1,
        "notifications": 0,
        "jobs": 0,
    }
    assert count_rows(ctx, record_changes) == 1
    with ctx.engine.connect() as conn:
        kept = conn.execute(sa.select(entry_decisions.c.at)).scalars().all()
        assert kept == [_at(clock, 5)]
        assert conn.execute(sa.select(webhook_receipts.c.webhook_id)).scalars().all() == ["id1"]
    assert count_rows(ctx, notifications) == 2
    ctx.settings.retention_notifications_days = 365
    assert prune(ctx).deleted["notifications"] == 1
    assert count_rows(ctx, notifications) == 1 and count_rows(ctx, notification_reads) == 1


def test_a_paused_flow_keeps_the_changes_it_has_yet_to_hear(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.PAUSE)
    for name in ("Ana", "Bob", "Cleo"):
        _contact(ctx, admin, name)
    run_once(ctx)
    clock.advance(days=200)
    assert prune(ctx).deleted["record_changes"] == 0  # all after the pause's position
    flows.change_status(ctx, admin, "welcome", LifecycleAction.RESUME)
    _contact(ctx, admin, "Dan")
    run_once(ctx)
    assert prune(ctx).deleted["record_changes"] == 3  # the newest stays


def test_an_archived_flow_keeps_its_newest_not_entered_reasons(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flow_id = get_flow(ctx, admin, "welcome").id
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.ARCHIVE)
    with ctx.engine.begin() as conn:
        conn.execute(
            entry_decisions.insert(),
            [
                {
                    "flow_id": flow_id,
                    "record_id": n,
                    "trigger": "manual",
                    "reason": "archived",
                    "at": clock(),
                }
                for n in range(1, 26)
            ],
        )
    ctx.settings.retention_archived_not_entered = 10
    ctx.settings.retention_batch_rows = 10
    result = prune(ctx)
    assert result.deleted["archived_not_entered"] == 15
    with ctx.engine.connect() as conn:
        kept = conn.execute(sa.select(entry_decisions.c.record_id)).scalars().all()
    assert sorted(kept) == list(range(16, 26))


def test_a_pass_stopped_by_its_time_limit_goes_on_where_it_stopped(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flow_id = get_flow(ctx, admin, "welcome").id
    with ctx.engine.begin() as conn:
        conn.execute(
            entry_decisions.insert(),
            [
                {
                    "flow_id": flow_id,
                    "record_id": n,
                    "trigger": "manual",
                    "reason": "no",
                    "at": _at(clock, 60),
                }
                for n in range(30)
            ],
        )
    ctx.settings.retention_batch_rows = 10
    cursor = PruneCursor()
    stopped = prune(ctx, time_limit=0.0, cursor=cursor)
    assert not stopped.finished and stopped.total == 0
    done = prune(ctx, cursor=cursor)
    assert done.finished and done.deleted["not_entered"] == 30
    assert count_rows(ctx, entry_decisions) == 0


def test_the_archive_export_writes_what_pruning_then_removes(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    old = _run_to_the_end(ctx, clock, admin, ["Ana", "Bob"])
    clock.advance(days=170)
    _run_to_the_end(ctx, clock, admin, ["Dan"])
    clock.advance(days=20)
    ctx.settings.retention_not_entered_days = 0  # kept forever: not exported
    out = io.StringIO()

    exported = export_history(ctx, clock() - timedelta(days=180), out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert exported.total == len(lines)
    assert "not_entered" in exported.skipped
    runs = {(x["row"]["enrollment_id"], x["row"]["run"]) for x in lines if x["kind"] == "step_run"}
    assert runs == {(old[0], 1), (old[1], 1), (old[1], 2)}
    messages = [x["row"] for x in lines if x["kind"] == "message"]
    assert {m["enrollment_id"] for m in messages} == set(old)
    assert {m["status"] for m in messages} == {"caught", "cancelled"}
    first = next(m for m in messages if m["status"] == "caught")
    assert first["payload"]["subject"].startswith("Hello ") and first["created_at"].endswith(
        "+00:00"
    )
    pruned = prune(ctx)
    assert pruned.deleted["step_runs"] == exported.rows["step_run"] == 3
    assert pruned.deleted["outbox"] == exported.rows["message"] == 3
    assert pruned.deleted["record_changes"] == exported.rows["record_change"]


def test_a_date_that_is_not_one_is_refused_with_an_example(ctx: Context) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_before("last tuesday", ctx)
    assert "--before" in str(refused.value.problems[0]) and "2026-01-01" in str(
        refused.value.problems[0]
    )
    assert parse_before("2026-01-01", ctx).isoformat() == "2025-12-31T23:00:00+00:00"  # Paris


def test_the_worker_prunes_in_the_background_a_pass_every_few_minutes(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    flows.create_flow(ctx, admin, MAILING)
    flow_id = get_flow(ctx, admin, "welcome").id
    with ctx.engine.begin() as conn:
        conn.execute(
            entry_decisions.insert(),
            [
                {"flow_id": flow_id, "record_id": n, "trigger": "manual", "reason": "no", "at": at}
                for n, at in enumerate([_at(clock, 60)] * 3 + [_at(clock, 1)])
            ],
        )
    worker = Worker(ctx, name="pruner")
    worker._prune()  # a minute after it started, not at once
    assert count_rows(ctx, entry_decisions) == 4
    worker._prune_at = 0.0
    for _ in range(100):  # rounds of at most PRUNE_TIME_LIMIT each, until the pass is done
        worker._prune()
        if worker._prune_at > time.monotonic():
            break
    assert count_rows(ctx, entry_decisions) == 1
    assert worker._prune_at > time.monotonic() + 200  # the pass is done: the next in 5 minutes


ROUND_ROBIN = """\
schema_version: 1
key: distribute
name: Distribute leads
record_type: contact
triggers: [{type: manual}]
steps:
  - key: assign
    actions:
      - type: assign_owner
        strategy: round_robin
        group: sales
"""


def test_round_robin_goes_on_in_turn_after_its_step_runs_are_pruned(
    ctx: Context, clock: FrozenClock, admin: Actor
) -> None:
    users.create_group(ctx, admin, "sales")
    for name in ("alice", "bob", "carol"):
        make_user(ctx, name, "member")
        users.add_group_member(ctx, admin, "sales", name)
    flows.create_flow(ctx, admin, ROUND_ROBIN)
    flows.change_status(ctx, admin, "distribute", LifecycleAction.START)

    def owners_of(count: int) -> list[str]:
        ids = [_contact(ctx, admin, f"Lead{n}") for n in range(count)]
        for rid in ids:
            enrollments.start_record(ctx, admin, "distribute", rid)
        run_once(ctx)
        return [str(records.get_record(ctx, rid).owner) for rid in ids]

    assert owners_of(4) == ["alice", "bob", "carol", "alice"]
    clock.advance(days=200)
    assert prune(ctx).deleted["step_runs"] == 4
    assert owners_of(2) == ["bob", "carol"]  # the fifth and sixth turns, as if nothing went


def test_the_pruning_benchmark_runs_and_prunes_what_it_filled(backend: str) -> None:
    result = bench_retention.run(backend, 50, 1)
    assert result.rows == 10 * 6  # 10 ended runs: 5 step runs and an email each
    assert result.ratio > 0


def test_runs_are_looked_for_a_range_of_ids_at_a_time_past_runs_still_going(
    ctx: Context, clock: FrozenClock
) -> None:
    bench_retention._fill(ctx, 40)  # runs 1-40 ended 200 days before NOW, 41-80 going
    with ctx.engine.begin() as conn:  # make it runs 61-80 that ended, the others going
        e = enrollments_table.c
        ended = bench_retention.NOW - timedelta(days=200)
        conn.execute(
            enrollments_table.update().where(e.id <= 60).values(status="waiting", finished_at=None)
        )
        conn.execute(
            enrollments_table.update().where(e.id > 60).values(status="finished", finished_at=ended)
        )
    ctx.settings.retention_batch_rows = 10  # 50 runs looked at a time
    clock.set(bench_retention.NOW)
    cursor = PruneCursor()
    result = prune(ctx, kinds=("step_runs",), cursor=cursor)
    assert result.finished and result.deleted["step_runs"] == 20 * bench_retention.STEPS
    with ctx.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.max(step_runs.c.enrollment_id))).scalar()
    assert left == 60 and count_rows(ctx, step_runs) == 60 * bench_retention.STEPS


def test_a_pruning_pass_that_fails_is_tried_again_minutes_later_not_every_round(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(ctx, name="pruner")
    worker._prune_at = 0.0
    calls: list[int] = []

    def broken(*_: object, **__: object) -> None:
        calls.append(1)
        raise RuntimeError("disk full")

    monkeypatch.setattr("crmflow.worker.prune", broken)
    for _ in range(3):
        errors: list[str] = []
        worker._guarded("retention", worker._prune, errors)
    assert errors == [] and len(calls) == 1  # the first round said it; the next ones waited
