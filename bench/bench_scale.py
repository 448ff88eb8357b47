"""Scale-out on PostgreSQL: 1, 2 and 4 `crmflow worker` processes on the same flow, throughput
and its ratio to one worker, and double claims (must be 0).

Each run has a fresh database: `--records` contacts, a saved query that matches them all and
bench_steps' 5-step flow without its wait (update the record, a history entry, a decision, set
the status, end: `bench_steps.INLINE_FLOW`) entered from a start list. K `crmflow worker`
processes (the real command line, `--no-dispatch`: the flow sends nothing) are started and
waited for until each has finished a first round (its heartbeat); then the flow is started
(`flows.change_status`, as `crmflow flows start` does: the start list enters every contact in
one transaction and NOTIFYs the workers). Throughput = records / (the last enrollment's finish,
as written by the workers, minus the moment the start was asked for): end to end, the start
list's transaction included, the processes' start-up not.
The wait of bench_steps' flow is left out: the workers run on the real clock, a day would not
pass.

Double claims are counted three ways, each must be 0: (enrollment, step) pairs with more than
one step run, enrollments with other than one history line of the flow's history step, and the
sum of what the workers say they moved minus the records (a record moved by two workers is
counted twice).

CPU per record: the CPU time the worker processes and the bench database's server processes
took from the start until the last record finished (/proc: PostgreSQL on this machine), over the
records; the median of the runs.

Runs take turns (1, 2, 4 workers, then again), so that the machine's load falls on each alike;
each figure is the median of `--runs`. `--batch` sets the workers' `--batch-size` (default the
worker's default, 500), to measure what a larger batch gives.

    python -m bench.bench_scale [--records N] [--runs N] [--workers 1,2,4] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from bench.bench_steps import INLINE_FLOW, cpu_since, database_cpu, fill_contacts, process_cpu
from bench.common import fresh_database
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows as flow_service
from crmflow.services.context import Context, system_clock
from crmflow.services.queries import save_query
from crmflow.services.users import actor_by_username
from crmflow.store.schema import enrollments, worker_heartbeats

__all__ = ["FLOW", "ScaleResult", "count_double_claims", "main", "run", "run_once_with"]

RECORDS = 20_000
WORKERS = (1, 2, 4)
BATCH = 500  # the worker's default batch size
AIM_TWO_WORKERS = 3_000  # records/s with 2 workers (issue 14)
STARTUP_LIMIT = 120.0  # seconds for the workers to come up (imports on a loaded machine)
QUERY = "scale-all"
FLOW = INLINE_FLOW.replace("key: five-inline", "key: five-scale").replace(
    "triggers: [{type: manual}]", f"triggers: [{{type: start_list, query: {QUERY}}}]"
)
_MOVED = re.compile(r"worker stopped; moved (\d+) enrollment")


def _prepare(ctx: Context, count: int) -> str:
    """The contacts, the saved query and the flow (a draft); the flow's key."""
    fill_contacts(ctx, count)
    admin = actor_by_username(ctx, "system")
    save_query(
        ctx,
        admin,
        name=QUERY,
        record_type="contact",
        filter={"field": "status", "op": "=", "value": "lead"},
    )
    return flow_service.create_flow(ctx, admin, FLOW).key


def _count(ctx: Context, sql: str) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def count_double_claims(ctx: Context) -> dict[str, int]:
    """Each must be 0: steps that ran twice for the same enrollment, and enrollments whose
    history step wrote other than one line."""
    return {
        "steps run twice": _count(
            ctx,
            "select count(*) from (select 1 from step_runs group by enrollment_id, step_key"
            " having count(*) > 1) as twice",
        ),
        "history lines not 1": _count(
            ctx,
            "select count(*) from enrollments e left join (select enrollment_id, count(*) as n"
            " from record_history where message like 'Followed up %' group by enrollment_id)"
            " as h on h.enrollment_id = e.id where coalesce(h.n, 0) <> 1",
        ),
    }


class _Workers:
    """K `crmflow worker` processes, their output in files."""

    def __init__(self, url: str, logs: Path, batch: int = BATCH) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        self.env["CRMFLOW_DATABASE_URL"] = url
        self.env["CRMFLOW_LOG_LEVEL"] = "WARNING"  # failures only: a log line per batch costs
        self.exe = str(Path(sys.executable).parent / "crmflow")
        self.logs = logs
        self.batch = batch
        self.running: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []

    def start(self, count: int) -> None:
        for i in range(count):
            path = self.logs / f"worker-{i}.log"
            log = path.open("wb")
            command = [self.exe, "worker", "--no-dispatch", "--batch-size", str(self.batch)]
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
            self.running.append((process, log, path))

    def stop(self) -> list[str]:
        """SIGTERM each, wait; the output of each."""
        for process, _, _ in self.running:
            process.terminate()
        outputs: list[str] = []
        for process, log, path in self.running:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
            outputs.append(path.read_text(errors="replace"))
        self.running = []
        return outputs

    def cpu(self) -> dict[int, float]:
        """The CPU seconds each running worker process has taken so far."""
        return process_cpu(process.pid for process, _, _ in self.running)

    def died(self) -> str | None:
        for process, _, path in self.running:
            if process.poll() is not None:
                return f"a worker exited with {process.returncode}: {path.read_text()[-2000:]}"
        return None


def _wait_until_up(ctx: Context, workers: _Workers, count: int) -> None:
    """Until `count` workers have done a round (a heartbeat with a success)."""
    deadline = time.monotonic() + STARTUP_LIMIT
    query = (
        sa.select(sa.func.count())
        .select_from(worker_heartbeats)
        .where(worker_heartbeats.c.kind == "worker", worker_heartbeats.c.stopped_at.is_(None))
        .where(worker_heartbeats.c.last_success_at.is_not(None))
    )
    while True:
        if (problem := workers.died()) is not None:
            raise RuntimeError(problem)
        with ctx.engine.connect() as conn:
            if conn.execute(query).scalar_one() >= count:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {count} workers were not up after {STARTUP_LIMIT:.0f}s")
        time.sleep(0.1)


@dataclass
class Run:
    workers: int
    seconds: float
    double_claims: dict[str, int]
    cpu: float  # CPU seconds of the workers and the database's server processes, start to end


def run_once_with(
    ctx: Context, key: str, count: int, workers: int, limit: float = 600, batch: int = BATCH
) -> Run:
    """Start `workers` processes, then the flow; wait until all `count` records finished."""
    url = ctx.engine.url.render_as_string(hide_password=False)
    finished = "select count(*) from enrollments where status = 'finished'"
    with tempfile.TemporaryDirectory() as logs:
        pool = _Workers(url, Path(logs), batch)
        try:
            pool.start(workers)
            _wait_until_up(ctx, pool, workers)
            cpu_before = pool.cpu() | database_cpu(ctx)
            started = system_clock()  # the start list's transaction is part of the time
            flow_service.change_status(
                ctx,
                actor_by_username(ctx, "system"),
                key,
                LifecycleAction.START,
                confirm_count=count,
            )
            deadline = time.monotonic() + limit
            while _count(ctx, finished) < count:
                if (problem := pool.died()) is not None:
                    raise RuntimeError(problem)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{_count(ctx, finished)} of {count} after {limit:.0f}s")
                time.sleep(0.1)
            cpu = cpu_since(cpu_before, pool.cpu() | database_cpu(ctx))
        finally:
            outputs = pool.stop()
    with ctx.engine.connect() as conn:
        last: datetime = conn.execute(sa.select(sa.func.max(enrollments.c.updated_at))).scalar_one()
    claims = count_double_claims(ctx)
    moved = [int(m.group(1)) for text in outputs for m in _MOVED.finditer(text)]
    if len(moved) == workers:  # each said what it moved when it stopped
        claims["moved twice"] = sum(moved) - count
    failures = sum(text.count("failed") for text in outputs)
    if failures:
        claims["worker failure lines"] = failures
    return Run(workers, (last.astimezone(UTC) - started).total_seconds(), claims, cpu)


@dataclass
class ScaleResult:
    records: int
    batch: int = BATCH
    seconds: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[int, list[float]] = field(default_factory=dict)  # CPU seconds per run
    double_claims: dict[str, int] = field(default_factory=dict)  # summed over every run

    def rate(self, workers: int) -> float:
        return self.records / statistics.median(self.seconds[workers])

    def lines(self) -> list[str]:
        one = self.rate(min(self.seconds))
        out = []
        for workers in sorted(self.seconds):
            rate = self.rate(workers)
            aim = ""
            if workers == 2:
                verdict = "ok" if rate >= AIM_TWO_WORKERS else "BELOW AIM"
                aim = f" (aim >= {AIM_TWO_WORKERS:,}/s, {verdict})"
            out.append(
                f"{'scale-out, worker processes':<28} postgres records={self.records:>7,}  "
                f"batch={self.batch}  "
                f"workers={workers}  {rate:,.0f} records/s{aim}  "
                f"ratio to 1 worker={rate / one:.2f}x  "
                f"median {statistics.median(self.seconds[workers]):.2f}s  "
                f"CPU {statistics.median(self.cpu[workers]) / self.records * 1000:.3f} ms/record  "
                f"runs={len(self.seconds[workers])}"
            )
        total = sum(self.double_claims.values())
        detail = ", ".join(f"{k}={v}" for k, v in self.double_claims.items())
        out.append(
            f"{'  double claims':<28} postgres {total} "
            f"({'ok' if total == 0 else 'FAILED'}: {detail})"
        )
        return out


def run(
    records: int, runs: int, workers: tuple[int, ...] = WORKERS, batch: int = BATCH
) -> ScaleResult:
    """`runs` rounds of each worker count, taking turns, each on a fresh PostgreSQL database."""
    result = ScaleResult(records, batch)
    for _ in range(runs):
        for count in workers:
            with fresh_database("postgres") as ctx:
                key = _prepare(ctx, records)
                done = run_once_with(ctx, key, records, count, batch=batch)
            result.seconds.setdefault(count, []).append(done.seconds)
            result.cpu.setdefault(count, []).append(done.cpu)
            for what, n in done.double_claims.items():
                result.double_claims[what] = result.double_claims.get(what, 0) + n
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)), help="e.g. 1,2,4")
    parser.add_argument("--batch", type=int, default=BATCH, help="the workers' --batch-size")
    args = parser.parse_args(argv)
    counts = tuple(int(n) for n in args.workers.split(","))
    result = run(args.records, args.runs, counts, args.batch)
    for line in result.lines():
        print(line, flush=True)
    if sum(result.double_claims.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
