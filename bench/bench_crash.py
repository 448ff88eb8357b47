"""Crash safety at size: `crmflow worker` processes on PostgreSQL killed with SIGKILL at random
moments and restarted while they run N enrollments; at the end every enrollment has finished,
no step ran twice and the outbox holds exactly one row per expected email.

The flow sends an email, waits (a timed step, a day later), sends a second email, writes a
history entry and ends. Phase 1 runs the first step of every enrollment (the wait is a day so
that no timer falls due by itself while phase 1 runs, however slow the machine: phase 1 counts
the enrollments waiting at that step, and with a minute's wait they moved on before all had
arrived, a timeout seen once on a loaded machine); then the test moves every pending timer to
now (time passing, as a frozen clock would jump); phase 2 runs the rest. During both phases
a chaos loop SIGKILLs a random worker every 1 to 3 s and starts a new one. A killed worker's
batch is rolled back by PostgreSQL and free at once (no lease to wait for).

`tests/integration/test_crash.py` runs this with a smaller N (within a test's time);
`make bench` runs it with 10,000:

    python -m bench.bench_crash [--enrollments N] [--workers K]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from bench.common import fresh_database
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows as flow_service
from crmflow.services.context import Context
from crmflow.services.users import actor_by_username

__all__ = ["FLOW", "CrashReport", "main", "prepare", "run", "run_with_chaos", "verify"]

KILL_EVERY = (1.0, 3.0)  # seconds between two kills, drawn uniformly
BATCH_SIZE = 50
FLOW = """\
schema_version: 1
key: crash
name: Crash
record_type: contact
owner: system
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
        subject: "Later {{ record.first_name }}"
        body: "Hi again"
  - key: note
    actions:
      - type: history
        message: "note ran"
  - key: done
    type: end
"""
EMAILS_PER_ENROLLMENT = 2
# The `note` step's history lines: one per enrollment when every step ran once (the workers'
# dispatchers also write a line per email they deliver or catch, which are not counted here).
_NOTES = "select count(*) from record_history where message = 'note ran'"
STEP_RUNS_PER_ENROLLMENT = 4  # hello, later, note, done


@dataclass
class CrashReport:
    enrollments: int
    seconds: float
    kills: int
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return (
            f"{'crash safety (SIGKILL)':<28} postgres enrollments={self.enrollments:,}  "
            f"kills={self.kills}  {self.seconds:.1f}s  {verdict}"
        )


def prepare(ctx: Context, count: int) -> None:
    """The flow (started) and `count` contacts, each with an enrollment due now."""
    admin = actor_by_username(ctx, "system")
    view = flow_service.create_flow(ctx, admin, FLOW)
    flow_service.change_status(ctx, admin, view.key, LifecycleAction.START)
    with ctx.engine.begin() as conn:
        flow_id = conn.execute(sa.text("select id from flows where key = 'crash'")).scalar_one()
        conn.execute(
            sa.text(
                "insert into records (type, data, created_at, updated_at) "
                "select 'contact', jsonb_build_object('last_name', 'N' || i, "
                "'first_name', 'F' || i, 'email', 'c' || i || '@example.org'), now(), now() "
                "from generate_series(1, :n) as i"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "insert into enrollments (flow_id, flow_version, record_id, status, entered_at,"
                " due_at, updated_at) "
                "select :f, 1, id, 'active', now(), now(), now() from records "
                "where type = 'contact'"
            ),
            {"f": flow_id},
        )
        conn.execute(sa.text("analyze"))


class _Workers:
    """`crmflow worker` processes, killed and restarted by `chaos`."""

    def __init__(self, url: str, logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        self.env["CRMFLOW_DATABASE_URL"] = url
        self.exe = str(Path(sys.executable).parent / "crmflow")
        self.logs = logs
        self.running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.started = 0
        self.kills = 0

    def start(self) -> None:
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        self.started += 1
        command = [self.exe, "worker", "--batch-size", str(BATCH_SIZE)]
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        self.running.append((process, log))

    def kill_one(self, rng: random.Random) -> None:
        process, log = self.running.pop(rng.randrange(len(self.running)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
        self.kills += 1

    def describe(self) -> str:
        """Each running worker: alive or its exit code, and the end of its log."""
        lines = []
        for process, log in self.running:
            log.flush()
            tail = Path(log.name).read_text(errors="replace").splitlines()[-5:]
            state = "alive" if process.poll() is None else f"exited {process.returncode}"
            lines.append(f"worker pid {process.pid} {state}: " + " | ".join(tail))
        return "\n".join(lines)

    def stop_all(self) -> None:
        for process, _ in self.running:
            process.send_signal(signal.SIGTERM)
        for process, log in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self.running = []


def _count(ctx: Context, sql: str) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def _sessions(ctx: Context) -> str:
    """The bench database's other sessions that are not idle: what each waits for."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select pid, state, wait_event_type, wait_event, left(query, 120) "
                "from pg_stat_activity where datname = current_database() "
                "and pid <> pg_backend_pid() and state <> 'idle'"
            )
        ).all()
    return "\n".join("session " + " ".join(str(v) for v in row) for row in rows)


def _chaos_until(
    ctx: Context, workers: _Workers, rng: random.Random, done_sql: str, target: int, limit: float
) -> None:
    deadline = time.monotonic() + limit
    done = last_kill = _count(ctx, done_sql)
    while done < target:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{done} of {target} done after {limit:.0f}s\n{workers.describe()}\n"
                f"{_sessions(ctx)}"
            )
        # A worker takes about 2 s to start (imports), longer on a busy machine: killing more
        # often than that would mostly kill workers that never claimed anything. So a kill
        # comes at a random moment, but only once some work was done since the last one.
        time.sleep(rng.uniform(*KILL_EVERY))
        done = _count(ctx, done_sql)
        if done > last_kill:
            workers.kill_one(rng)
            workers.start()
            last_kill = done


def _timers_due_now(ctx: Context) -> None:
    """Time passes: every enrollment waiting for the timed step is due now (column and state)."""
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.text(
                "update enrollments set due_at = now() - interval '1 second', "
                "state = jsonb_set(state, '{due_at}', "
                "to_jsonb(to_char((now() - interval '1 second') at time zone 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'))) '
                "where step_key = 'later' and status in ('active', 'waiting')"
            )
        )
        conn.execute(sa.text("notify crmflow_due"))


def run_with_chaos(
    ctx: Context, count: int, *, workers: int = 3, seed: int = 7, limit: float = 600
) -> CrashReport:
    """Run the `count` enrollments of `prepare` with `workers` processes under SIGKILL chaos."""
    rng = random.Random(seed)
    url = ctx.engine.url.render_as_string(hide_password=False)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as logs:
        pool = _Workers(url, Path(logs))
        try:
            for _ in range(workers):
                pool.start()
            waiting = (
                "select count(*) from enrollments where step_key = 'later' "
                "and status in ('active', 'waiting')"
            )
            _chaos_until(ctx, pool, rng, waiting, count, limit)
            _timers_due_now(ctx)
            _chaos_until(ctx, pool, rng, _NOTES, count, limit)
            finished = "select count(*) from enrollments where status = 'finished'"
            deadline = time.monotonic() + 60
            while _count(ctx, finished) < count and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            pool.stop_all()
    report = CrashReport(count, time.monotonic() - started, pool.kills)
    report.problems = verify(ctx, count)
    return report


def verify(ctx: Context, count: int) -> list[str]:
    """What is wrong at the end (nothing, when every guarantee held)."""
    checks: list[tuple[str, str, int]] = [
        (
            "finished enrollments",
            "select count(*) from enrollments where status = 'finished'",
            count,
        ),
        ("enrollments", "select count(*) from enrollments", count),
        (
            "step runs",
            "select count(*) from step_runs",
            STEP_RUNS_PER_ENROLLMENT * count,
        ),
        (
            "(enrollment, step) pairs that ran more than once",
            "select count(*) from (select 1 from step_runs group by enrollment_id, step_key"
            " having count(*) > 1) as twice",
            0,
        ),
        ("history rows", _NOTES, count),
        (
            "enrollments with other than one history row",
            "select count(*) from (select 1 from record_history where message = 'note ran'"
            " group by enrollment_id having count(*) <> 1) as odd",
            0,
        ),
        (
            "outbox emails",
            "select count(*) from outbox where kind = 'email'",
            EMAILS_PER_ENROLLMENT * count,
        ),
        (
            "(enrollment, step) pairs with other than one email",
            "select count(*) from (select 1 from outbox group by enrollment_id, step_key"
            " having count(*) <> 1) as odd",
            0,
        ),
        (
            "enrollments still leased",
            "select count(*) from enrollments where lease_owner is not null",
            0,
        ),
    ]
    problems: list[str] = []
    for what, sql, expected in checks:
        got = _count(ctx, sql)
        if got != expected:
            problems.append(f"{what}: {got}, expected {expected}")
    return problems


def run(count: int, workers: int = 3) -> CrashReport:
    """On a fresh PostgreSQL database: `count` enrollments under chaos."""
    with fresh_database("postgres") as ctx:
        prepare(ctx, count)
        return run_with_chaos(ctx, count, workers=workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--enrollments", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    report = run(args.enrollments, args.workers)
    print(report.line(), flush=True)
    if report.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
