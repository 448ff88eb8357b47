"""Crash safety: `crmflow worker` processes on PostgreSQL, killed with SIGKILL at random moments
and restarted, never lose, repeat or double-send a step (DESIGN principles 3 and 4).

The driver is `bench/bench_crash.py` (also run by `make bench`); here it runs the issue's 10,000
enrollments on the session's PostgreSQL database (about 30 s on a shared 2-core machine).
"""

from __future__ import annotations

from bench.bench_crash import prepare, run_with_chaos
from crmflow.services.context import Context

ENROLLMENTS = 10_000


def test_workers_killed_at_random_moments_finish_every_enrollment_exactly_once(
    postgres_ctx: Context,
) -> None:
    # PostgreSQL only (postgres_ctx): SQLite has a single writer and no worker processes to kill.
    prepare(postgres_ctx, ENROLLMENTS)
    report = run_with_chaos(postgres_ctx, ENROLLMENTS, workers=3, limit=240)
    assert report.kills > 0, "the chaos loop killed no worker: nothing was tested"
    assert report.problems == [], report.line()
