"""A `crmflow worker` in a process of its own learns of new work at once, on SQLite too.

The worker sleeps up to LISTENING_MAX_IDLE (20 s) when idle; a record created in another process
(here the test's, as the API or the CLI would) that enters a flow must be moved within a second:
on PostgreSQL by NOTIFY, on SQLite by the worker's watch of the database's commits
(`store.wakeups.CommitWatcher`). Before that watch, a SQLite worker found it at its next idle
look, up to 5 s later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.store.database import create_db_engine
from crmflow.store.schema import record_history, worker_heartbeats
from crmflow.store.wakeups import CommitWatcher
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


def test_a_worker_process_moves_a_record_created_in_another_process_within_a_second(
    ctx: Context, admin: Actor
) -> None:
    ctx.clock = lambda: datetime.now(UTC) - timedelta(seconds=1)
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_DATABASE_URL"] = ctx.settings.database_url
    exe = str(Path(sys.executable).parent / "crmflow")
    worker = subprocess.Popen(
        [exe, "worker", "--no-dispatch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def started() -> bool:
            with ctx.engine.connect() as conn:
                return bool(
                    conn.execute(sa.select(sa.func.count(worker_heartbeats.c.name))).scalar()
                )

        assert eventually(started, 60), "the worker never started"
        # Its first round found nothing: it sleeps now (up to 20 s), well past a second.
        time.sleep(1.5)
        created = time.monotonic()
        rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
        assert eventually(lambda: history(ctx, rid) == ["Welcomed Pop"], 1.0), (
            f"not moved within a second: {history(ctx, rid)}"
        )
        took = time.monotonic() - created
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert took < 1.0
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(record_history)).scalar() == 1


def test_the_commit_watcher_wakes_on_another_connections_commit_and_not_on_reads(
    ctx: Context, admin: Actor
) -> None:
    if ctx.engine.dialect.name != "sqlite":
        return  # PostgreSQL workers LISTEN instead
    woken = threading.Event()
    watcher = CommitWatcher(ctx.engine, woken.set, every=0.005)
    try:
        records.list_records(ctx, "contact")  # a read is not a commit
        time.sleep(0.05)
        assert not woken.is_set()
        assert watcher.reads >= 2  # it did look
        records.create_record(ctx, admin, "contact", {"last_name": "Pop"})
        assert woken.wait(1.0)
    finally:
        watcher.close()


def test_a_worker_at_rest_pays_one_query_for_a_commit_that_brings_no_work(
    ctx: Context, admin: Actor
) -> None:
    """SQLite: every commit of another connection wakes the watch; the worker asks one query
    whether it brought work (`work_signs`) and goes back to sleep, or runs a round if it did.

    One query per change the watch sees. A commit is one change, or two when it is the first
    after a checkpoint copied the whole WAL back (see `CommitWatcher`): which one the heartbeat
    below is depends on when the checkpoint thread last ran."""
    if ctx.engine.dialect.name != "sqlite":
        return  # PostgreSQL workers are woken by NOTIFY, sent only with work
    ctx.clock = lambda: datetime.now(UTC) - timedelta(seconds=1)
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    statements: list[str] = []
    sa.event.listen(ctx.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    worker = Worker(ctx, name="rest")
    thread = threading.Thread(target=worker.run)
    thread.start()
    other = create_db_engine(ctx.settings.database_url)
    try:
        assert eventually(lambda: worker.rounds >= 1, 10)
        time.sleep(0.5)  # asleep now, for 20 s
        watch = worker._watcher
        assert watch is not None
        rounds, before, seen, looked = worker.rounds, len(statements), watch.changes, worker.looks
        with other.begin() as conn:  # a commit that makes no work: another loop's heartbeat
            at = datetime.now(UTC)
            beat = {"name": "dispatcher-1", "kind": "dispatcher", "started_at": at, "beat_at": at}
            conn.execute(worker_heartbeats.insert().values(beat))
        assert eventually(
            lambda: watch.changes > seen and worker.looks - looked >= watch.changes - seen, 5
        )
        time.sleep(0.3)  # a look or round more would come by now
        assert worker.rounds == rounds
        changes = watch.changes - seen
        asked = [" ".join(s.split())[:40] for s in statements[before:]]
        looks = [s for s in asked if not s.startswith("BEGIN")]
        assert changes in (1, 2)
        assert len(looks) == changes, asked
        assert all(s.startswith("SELECT (SELECT max(record_changes.id)") for s in looks), asked

        rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id
        assert eventually(lambda: history(ctx, rid) == ["Welcomed Pop"], 1.0)
        # The round is counted once it ends (after the batch's commit, which history shows).
        assert eventually(lambda: worker.rounds > rounds, 1.0)
    finally:
        worker.stop()
        thread.join(timeout=10)
        other.dispose()
