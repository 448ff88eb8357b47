"""Many `crmflow worker` processes on one PostgreSQL database (SQLite has a single writer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from crmflow.services.context import Context
from crmflow.services.users import actor_by_username
from crmflow.store import enrollments as repo
from crmflow.store.schema import outbox, record_history
from crmflow.worker import run_once
from tests.integration.helpers import count_rows as _count
from tests.integration.test_worker import BULK, _flow


def test_two_worker_processes_share_the_work_and_run_every_step_once(
    postgres_ctx: Context, tmp_path: Any
) -> None:
    """Two `crmflow worker` processes on one PostgreSQL database: each enrollment's timed step
    runs once, one outbox row per email, every enrollment finishes, and SIGTERM stops both."""

    # PostgreSQL only (postgres_ctx): SQLite has a single writer by design.
    ctx = postgres_ctx
    admin = actor_by_username(ctx, "system")
    count = 600
    _flow(ctx, admin, BULK)
    real_now = datetime.now(UTC)
    ctx.clock = lambda: real_now - timedelta(hours=1)
    with ctx.engine.begin() as conn:
        flow_id = conn.execute(sa.text("select id from flows where key = 'bulk'")).scalar_one()
        conn.execute(
            sa.text(
                "insert into records (type, data, created_at, updated_at) "
                "select 'contact', jsonb_build_object('last_name', 'N' || i, "
                "'first_name', 'F' || i, 'email', 'c' || i || '@example.org'), now(), now() "
                "from generate_series(1, :n) as i"
            ),
            {"n": count},
        )
        rids = conn.execute(sa.text("select id from records order by id")).scalars().all()
        for rid in rids:
            repo.insert_enrollment(
                conn,
                flow_id=flow_id,
                flow_version=1,
                record_id=rid,
                now=ctx.now(),
                due_at=ctx.now(),
            )
    # Entered an hour ago: the first step ran then, the second is due now, for the workers.
    assert run_once(ctx) == count
    assert _count(ctx, outbox) == count

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["CRMFLOW_DATABASE_URL"] = ctx.settings.database_url
    exe = str(Path(sys.executable).parent / "crmflow")
    workers = [
        subprocess.Popen(
            # The workers alone: their dispatchers would add a history line per email sent.
            [exe, "worker", "--batch-size", "10", "--no-dispatch"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if _count(ctx, record_history) == count:
                break
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=30) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "SIGTERM: finishing the current batch" in err
    moved = [int(err.rsplit("moved ", 1)[1].split()[0]) for _, err in outputs]
    assert sum(moved) == count, outputs
    assert all(m > 0 for m in moved), f"both workers took batches (SKIP LOCKED): {moved}"

    assert _count(ctx, record_history) == count  # the timed step ran once per enrollment
    assert _count(ctx, outbox) == 2 * count  # one row per email
    assert _count(ctx, outbox, kind="email") == 2 * count
    with ctx.engine.connect() as conn:
        statuses = conn.execute(
            sa.text("select status, count(*) from enrollments group by status")
        ).all()
        runs_per = conn.execute(
            sa.text("select count(*) from step_runs where step_key = 'later' and status = 'done'")
        ).scalar_one()
    assert dict(statuses) == {"finished": count}
    assert runs_per == count
