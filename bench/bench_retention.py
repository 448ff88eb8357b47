"""Pruning old runs' history (services.retention) against the bare batched delete of the same rows.

`--rows` step runs (5 per run, each with two action logs) and one caught email per run, all of
runs that ended 200 days ago, plus as many rows of runs still going (kept); crmflow's path is
`prune(ctx, kinds=("step_runs", "outbox"))` with 1,000 rows per transaction: find the runs,
count their step runs, actions, turns and messages into flow_history_counts and run_summaries,
delete. The baseline deletes the same rows by run id, the same number of runs per transaction,
nothing read or counted. Also printed: the longest transaction of each side (on SQLite, how long
the write lock was held at most), and on PostgreSQL the step runs' two ways side by side: row by
row (the month also holds rows of runs still going, so it is kept) and dropping the month's
partition (the runs still going have their step runs in a later month), each
`prune(ctx, kinds=("step_runs",))` on the same rows:

    python -m bench.bench_retention --rows 100000 --runs 3 --backend both
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from bench.common import Comparison, fresh_database, ratio_main
from crmflow.services.context import Context
from crmflow.services.retention import prune
from crmflow.store.partitions import ensure_months, month_start

__all__ = ["main", "run"]

AIM = 10.0  # counting what goes costs reads the bare delete skips; the lock is what matters
STEPS = 5
BATCH_ROWS = 1000
NOW = datetime(2027, 6, 1, tzinfo=UTC)


ENDED_AT = NOW - timedelta(days=200)


def _fill(ctx: Context, runs: int, *, going_at: datetime = ENDED_AT) -> None:
    """`runs` ended runs (and as many running ones, whose step runs started at `going_at`)
    with their step runs and emails."""
    ended_at = ENDED_AT
    actions = orjson.dumps(
        [
            {"index": 0, "key": None, "type": "update_record", "status": "done", "detail": "x"},
            {"index": 1, "key": None, "type": "send_email", "status": "done", "detail": "y"},
        ]
    ).decode()
    with ctx.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        mark = "?" if ctx.engine.dialect.name == "sqlite" else "%s"
        marks = ", ".join([mark] * 7)
        enroll: list[tuple[Any, ...]] = []
        for i in range(1, 2 * runs + 1):
            over = i <= runs
            enroll.append(
                (
                    i,
                    1,
                    i,
                    "finished" if over else "waiting",
                    ended_at - timedelta(days=1),
                    ended_at if over else None,
                    "s5" if over else "s3",
                )
            )
        cur.executemany(
            "insert into enrollments (id, flow_id, flow_version, record_id, status,"
            " entered_at, finished_at, step_key) values"
            f" ({mark}, {mark}, 1, {mark}, {mark}, {mark}, {mark}, {mark})",
            enroll,
        )
        cur.executemany(
            "insert into step_runs (enrollment_id, run, step_key, step_type, status, reason,"
            f" started_at, finished_at, actions) values ({marks}, {mark}, {mark})",
            [
                (
                    i,
                    r,
                    f"s{r}",
                    "action",
                    "done",
                    "",
                    ended_at if i <= runs else going_at,
                    ended_at if i <= runs else going_at,
                    actions,
                )
                for i in range(1, 2 * runs + 1)
                for r in range(1, STEPS + 1)
            ],
        )
        cur.executemany(
            "insert into outbox (enrollment_id, step_key, step_run, idempotency_key, kind,"
            " payload, status, not_before, created_at, attempts, test, priority) values"
            f" ({marks}, {mark}, {mark}, 0, false, 0)",
            [
                (i, "s1", 1, f"{i}:1:1", "email", "{}", "caught", ended_at, ended_at)
                for i in range(1, 2 * runs + 1)
            ],
        )
    if ctx.engine.dialect.name == "postgresql":  # the statistics autovacuum would have by then
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("analyze enrollments, step_runs, outbox"))


def _empty(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        for table in ("outbox", "step_runs", "enrollments", "flow_history_counts", "run_summaries"):
            conn.execute(sa.text(f"delete from {table}"))


class _Transactions:
    """The wall time of each transaction committed on the engine while it listens."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.times: list[float] = []
        self._began = 0.0

    def __enter__(self) -> _Transactions:
        sa.event.listen(self.engine, "begin", self._begin)
        sa.event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "begin", self._begin)
        sa.event.remove(self.engine, "commit", self._commit)

    def _begin(self, _conn: object) -> None:
        self._began = time.perf_counter()

    def _commit(self, _conn: object) -> None:
        self.times.append(time.perf_counter() - self._began)


def _bare(ctx: Context, runs: int) -> None:
    """Delete the ended runs' step runs, then their messages, `BATCH_ROWS // STEPS` runs per
    transaction for step runs (the same rows per transaction as crmflow's), by id."""
    per = BATCH_ROWS // STEPS
    for table, size in (("step_runs", per), ("outbox", BATCH_ROWS)):
        for start in range(1, runs + 1, size):
            with ctx.engine.begin() as conn:
                conn.execute(
                    sa.text(f"delete from {table} where enrollment_id between :a and :b"),
                    {"a": start, "b": min(start + size - 1, runs)},
                )


def _month_dropped_or_not(ctx: Context, ended: int, runs: int) -> None:
    """PostgreSQL: the step runs of the ended runs pruned row by row, then by dropping their
    month's partition (the same rows; the runs still going a month later in the second)."""
    month = f"step_runs_p{month_start(ENDED_AT):%Y%m}"
    seconds: dict[str, list[float]] = {"rows": [], "drop": []}
    longest: dict[str, list[float]] = {"rows": [], "drop": []}
    for _ in range(runs):
        for way in ("rows", "drop"):
            if way == "drop":
                with ctx.engine.begin() as conn:
                    ensure_months(conn, ENDED_AT, ahead=0)
                _fill(ctx, ended, going_at=NOW - timedelta(days=10))
            else:
                _fill(ctx, ended)
            with _Transactions(ctx.engine) as seen:
                start = time.perf_counter()
                result = prune(ctx, now=NOW, kinds=("step_runs",))
                seconds[way].append(time.perf_counter() - start)
            longest[way].append(max(seen.times))
            assert result.deleted == {"step_runs": ended * STEPS}, result
            assert (month in result.dropped) == (way == "drop"), result.dropped
            _empty(ctx)
            with ctx.engine.begin() as conn:
                conn.execute(sa.text(f"drop table if exists {month}"))
    rows, drop = statistics.median(seconds["rows"]), statistics.median(seconds["drop"])
    print(
        f"prune step runs {ended * STEPS:,} rows postgres: row by row {rows:.3f}s (longest"
        f" transaction {statistics.median(longest['rows']) * 1000:.0f} ms), dropping the month"
        f" {drop:.3f}s (longest transaction {statistics.median(longest['drop']) * 1000:.0f} ms):"
        f" {rows / drop:.1f}x faster",
        flush=True,
    )


def run(backend: str, rows: int, runs: int) -> Comparison:
    ended = max(rows // STEPS, 1)
    ours: list[float] = []
    bare: list[float] = []
    longest_ours: list[float] = []
    longest_bare: list[float] = []
    with fresh_database(backend) as ctx:
        ctx.settings.retention_batch_rows = BATCH_ROWS
        ctx.clock = lambda: NOW
        for _ in range(runs):
            _fill(ctx, ended)
            with _Transactions(ctx.engine) as seen:
                start = time.perf_counter()
                result = prune(ctx, now=NOW, kinds=("step_runs", "outbox"))
                ours.append(time.perf_counter() - start)
            assert result.deleted == {"step_runs": ended * STEPS, "outbox": ended}, result
            longest_ours.append(max(seen.times))
            _empty(ctx)
            _fill(ctx, ended)
            with _Transactions(ctx.engine) as seen:
                start = time.perf_counter()
                _bare(ctx, ended)
                bare.append(time.perf_counter() - start)
            longest_bare.append(max(seen.times))
            _empty(ctx)
        if backend == "postgres":
            _month_dropped_or_not(ctx, ended, runs)
    print(
        f"prune {backend}: longest transaction median {statistics.median(longest_ours) * 1000:.0f}"
        f" ms (bare delete: {statistics.median(longest_bare) * 1000:.0f} ms), "
        f"{ended * (STEPS + 1) / statistics.median(ours):,.0f} rows/s",
        flush=True,
    )
    return Comparison("prune run history", backend, ended * (STEPS + 1), ours, bare)


def main(argv: list[str] | None = None) -> None:
    ratio_main(__doc__, run, AIM, argv)


if __name__ == "__main__":
    main()
