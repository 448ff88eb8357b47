"""Idle cost (issue 14): a worker at rest makes at most one statement per wake-up.

At each wake-up (its due time, the bounded sleep's end, a commit seen on SQLite) an idle worker
looks whether there is work with one statement that also writes its heartbeat when one is due
(`store.wakeups.RestLooks`); the round runs only when the look says there is work, and the
time-based passes (deadlines, pruning) ask the look first. Counted here with SQLAlchemy's
`before_cursor_execute` on the worker's engine, on both backends; SQLite's commit watch reads
`PRAGMA data_version` on the driver's connection, counted apart (`CommitWatcher.reads`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import crmflow.worker as worker_module
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.flow_views import get_flow
from crmflow.store.schema import entry_decisions, worker_heartbeats
from crmflow.worker import Worker
from tests.integration.helpers import eventually, history

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
owner: system
triggers: [{type: record_created}]
steps:
  - key: hello
    actions:
      - type: history
        message: "Welcomed {{ record.last_name }}"
"""
_THREAD = "worker-at-rest"


class _Counted:
    """The worker's statements and wake-ups (ends of its idle sleep), as they happen."""

    def __init__(self, ctx: Context, worker: Worker) -> None:
        self.statements: list[tuple[int, str]] = []  # (the wake-up it came after, the SQL)
        self.wakeups = 0

        def made(*args: object) -> None:
            if threading.current_thread().name == _THREAD:  # not the test's own reads
                self.statements.append((self.wakeups, " ".join(str(args[2]).split())))

        sa.event.listen(ctx.engine, "before_cursor_execute", made)
        nap = worker._nap

        def counted(seconds: float) -> bool:
            go_on = nap(seconds)
            self.wakeups += 1
            return go_on

        worker._nap = counted  # type: ignore[method-assign]


@contextmanager
def _running(worker: Worker) -> Iterator[None]:
    thread = threading.Thread(target=worker.run, daemon=True, name=_THREAD)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _beat_at(ctx: Context, name: str) -> datetime | None:
    with ctx.engine.connect() as conn:
        found: datetime | None = conn.execute(
            sa.select(worker_heartbeats.c.beat_at).where(worker_heartbeats.c.name == name)
        ).scalar()
    return found


def test_an_idle_worker_makes_one_statement_per_wake_up_heartbeat_included(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    # Wake-ups often: the bounded sleep's end every 0.1 s, a heartbeat every 0.3 s.
    monkeypatch.setattr(worker_module, "REST_BEAT_EVERY", 0.3)
    worker = Worker(ctx, max_idle=0.1, name="resting")
    counted = _Counted(ctx, worker)
    with _running(worker):
        assert eventually(lambda: worker.rounds >= 1 and worker.looks >= 1, 10)
        time.sleep(0.3)
        rounds, before, woke = worker.rounds, len(counted.statements), counted.wakeups
        beat_before = _beat_at(ctx, "resting")
        # The time-based passes come due while at rest: they ask the look first (no open
        # task, nothing old enough to prune), and do not run.
        worker._deadlines_at = 0.0
        worker._prune_at = 0.0
        time.sleep(1.5)
        after = [(n, sql) for n, sql in counted.statements[before:] if n > woke]
        made = [sql for _, sql in after]
        assert worker.rounds == rounds  # nothing to do: no round
        assert counted.wakeups - woke >= 5, counted.wakeups - woke
        per_wakeup = Counter(n for n, _ in after)
        assert max(per_wakeup.values()) == 1, after  # one statement after each wake-up
        # One statement each: no BEGIN / COMMIT around it, no second query.
        assert all(s.startswith(("SELECT (SELECT", "INSERT INTO", "WITH beat")) for s in made)
        beats = [s for s in made if "worker_heartbeats" in s]
        assert len(beats) >= 2  # the heartbeat went with the looks ...
        beat_after = _beat_at(ctx, "resting")
        assert beat_before is not None and beat_after is not None and beat_after > beat_before
        # ... and the passes were asked about, and put off.
        assert worker._deadlines_at > time.monotonic() and worker._prune_at > time.monotonic()
        assert any("FROM tasks" in s for s in made) and any("FROM step_runs" in s for s in made)
        if ctx.engine.dialect.name == "sqlite":
            # The commit watch's PRAGMA data_version reads, apart; the worker's own heartbeats
            # (on the watch's connection) did not wake it.
            assert worker._watcher is not None and worker._watcher.reads > 0

        # Work still gets done at once.
        rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
        assert eventually(lambda: history(ctx, rid) == ["Welcomed Pop"], 5.0)


def test_a_look_at_rest_that_finds_history_to_prune_runs_the_pruning_pass(
    ctx: Context, admin: Actor
) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    flows.create_flow(ctx, admin, WELCOME)
    flow_id = get_flow(ctx, admin, "welcome").id
    days = ctx.settings.retention_not_entered_days
    old = datetime.now(UTC) - timedelta(days=days + 1)
    with ctx.engine.begin() as conn:
        conn.execute(
            entry_decisions.insert(),
            [{"flow_id": flow_id, "record_id": 1, "trigger": "manual", "reason": "no", "at": old}],
        )
    worker = Worker(ctx, max_idle=0.1, name="pruning")
    with _running(worker):
        assert eventually(lambda: worker.looks >= 1, 10)
        rounds = worker.rounds
        worker._prune_at = 0.0  # its time has come
        # The pass alone, as a round of its own (counted once it is over).
        assert eventually(lambda: worker.rounds > rounds, 10)
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(entry_decisions)).scalar() == 0
