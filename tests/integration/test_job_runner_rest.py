"""Idle cost (issue 14), the background jobs' runner (`crmflow worker`, `crmflow serve`): at rest
it makes no statement between wake-ups and at most one per wake-up, and a job another process
submits (LISTEN crmflow_jobs on PostgreSQL, the commit watch on SQLite) runs at once, not at
its safety look 20 s later. On SQLite and PostgreSQL.

Another process is played by a second engine on the same database: the in-process wake-up
(`on_job_submitted`) is by engine, so only the signal through the database can wake the runner.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa

from crmflow.services import jobs
from crmflow.services.context import Actor, Context
from crmflow.settings import Settings
from tests.integration.helpers import eventually

_THREAD = "jobs-at-rest"


class _Counted:
    """The runner's statements (on its own thread), each with the wake-ups counted before it."""

    def __init__(self, ctx: Context, runner: _Runner) -> None:
        self.statements: list[tuple[int, str]] = []

        def made(*args: object) -> None:
            if threading.current_thread().name == _THREAD:
                self.statements.append((runner.wakeups, " ".join(str(args[2]).split())))

        sa.event.listen(ctx.engine, "before_cursor_execute", made)


class _Runner(jobs.JobRunner):
    """A JobRunner that counts its wake-ups (the test's own wake() calls)."""

    wakeups = 0

    def wake(self) -> None:
        self.wakeups += 1
        super().wake()


@contextmanager
def _running(runner: jobs.JobRunner) -> Iterator[None]:
    thread = threading.Thread(target=runner.run, daemon=True, name=_THREAD)
    thread.start()
    try:
        yield
    finally:
        runner.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


@contextmanager
def _other_process(ctx: Context) -> Iterator[Context]:
    other = Context.from_settings(
        Settings(database_url=ctx.engine.url.render_as_string(hide_password=False))
    )
    other.clock = ctx.clock
    try:
        yield other
    finally:
        other.engine.dispose()


def _csv(rows: int) -> bytes:
    lines = ["first_name,last_name,email"] + [f"C,N{i},c{i}@example.org" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_an_idle_runner_makes_no_statement_between_wake_ups_and_one_at_each(
    ctx: Context,
) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    runner = _Runner(ctx, name="resting")  # the default: woken, its safety look after 20 s
    counted = _Counted(ctx, runner)
    with _running(runner):
        assert eventually(lambda: len(counted.statements) >= 1, 10)  # its first look
        time.sleep(0.3)
        rested = len(counted.statements)
        time.sleep(jobs.IDLE_SECONDS + 0.5)  # longer than the old poll's period
        assert len(counted.statements) == rested, counted.statements[rested:]  # no polling
        for _ in range(5):
            runner.wake()
            time.sleep(0.2)
    woken = [(n, sql) for n, sql in counted.statements if n >= 1]
    per_wakeup = Counter(n for n, _ in woken)
    assert sorted(per_wakeup) == [1, 2, 3, 4, 5], woken
    assert max(per_wakeup.values()) == 1, woken  # one statement a wake-up: the look
    assert all(sql.startswith("SELECT jobs.id") for _, sql in woken), woken
    assert runner.finished == 0


def test_a_job_another_process_submits_runs_at_once(ctx: Context, manager: Actor) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    runner = jobs.JobRunner(ctx, name="woken")
    with _running(runner):
        time.sleep(0.5)  # at rest, in its 20 s sleep
        with _other_process(ctx) as web:
            job = jobs.submit_import(
                web, manager, type_key="contact", filename="p.csv", content=_csv(3), fmt="csv"
            )
        started = time.monotonic()
        # Well within the 20 s safety sleep: woken by the NOTIFY / the commit seen.
        assert eventually(lambda: jobs.get_job(ctx, manager, job.id).state == "done", 10.0)
        took = time.monotonic() - started
    done = jobs.get_job(ctx, manager, job.id)
    assert done.report is not None and done.report.imported == 3
    assert took < jobs.LISTENING_IDLE_SECONDS / 2, took
