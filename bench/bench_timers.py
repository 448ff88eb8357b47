"""Timers in real time: how late (never how early) one real `Worker` runs steps that come due.

10,000 enrollments wait at a timed step whose due times are spread evenly over 60 s of real
time from a few seconds after the start. One `Worker` (a thread, the system clock, default
batch size) runs them. Lateness is measured per enrollment from its due time to the commit of
the batch that ran it (so it includes claiming, the engine and the writes); "early" counts step
runs whose start (the engine's `now`) came before their due time, which must be zero.

The baseline is a bare `time.sleep`-until loop in another process on the same schedule at the
same time: what the machine's timers and scheduler give under the same load. The ratio is
crmflow's p99 over the baseline's p99.

    python -m bench.bench_timers [--timers N] [--seconds S] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

import crmflow.worker as worker_module
from bench.bench_steps import create_flow, enroll_all, fill_contacts
from bench.common import fresh_database
from crmflow.services.context import Context, system_clock
from crmflow.store import enrollments as repo
from crmflow.store.schema import enrollments, step_runs
from crmflow.worker import Worker, run_once

__all__ = ["AIM_P99", "TimersResult", "main", "run"]

AIM_P99 = 0.5  # seconds
LEAD = 3.0  # seconds between the set-up and the first due time
FLOW = """\
schema_version: 1
key: timers
name: Timers
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: wait
    actions: []
  - key: ring
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: history
        message: "rang"
"""


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class TimersResult:
    backend: str
    timers: int
    seconds: float
    lateness: list[float]
    baseline: list[float]
    early: int

    def line(self) -> str:
        p50, p99 = _percentile(self.lateness, 0.5), _percentile(self.lateness, 0.99)
        b99 = _percentile(self.baseline, 0.99)
        verdict = "ok" if p99 < AIM_P99 and self.early == 0 else "ABOVE AIM"
        return (
            f"{'timers in real time':<28} {self.backend:<8} timers={self.timers:>7,} over "
            f"{self.seconds:g}s  lateness p50={p50:.3f}s p99={p99:.3f}s "
            f"max={max(self.lateness):.3f}s (aim p99 < {AIM_P99}s, {verdict})  "
            f"early={self.early}  baseline sleep p99={b99:.4f}s  "
            f"ratio p99={p99 / max(b99, 1e-6):.0f}x"
        )


def _due_times(start: datetime, timers: int, seconds: float) -> list[datetime]:
    return [start + timedelta(seconds=seconds * i / timers) for i in range(timers)]


def _sleeper(starts: list[float], out: Any) -> None:
    """The baseline, in its own process: sleep until each due time, note how late it woke."""
    late: list[float] = []
    for due in starts:
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        late.append(time.time() - due)
    out.put(late)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _set_due_times(ctx: Context, due: list[datetime]) -> dict[int, datetime]:
    """Move each waiting enrollment's timer (the column and the state's copy) to `due`."""
    if ctx.engine.dialect.name == "postgresql":
        state = "jsonb_set(state, '{due_at}', to_jsonb(cast(:iso as text)))"
    else:
        state = "json_set(state, '$.due_at', :iso)"
    statement = sa.text(
        f"update enrollments set due_at = :due, state = {state} where id = :eid"
    ).bindparams(sa.bindparam("due", type_=enrollments.c.due_at.type))
    with ctx.engine.begin() as conn:
        ids = conn.execute(sa.select(enrollments.c.id).order_by(enrollments.c.id)).scalars().all()
        plan = dict(zip((int(i) for i in ids), due, strict=True))
        conn.execute(statement, [{"eid": e, "due": at, "iso": _iso(at)} for e, at in plan.items()])
    return plan


def run(backend: str, timers: int, seconds: float) -> TimersResult:
    with fresh_database(backend) as ctx:
        virtual = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        fill_contacts(ctx, timers, now=virtual)
        enroll_all(ctx, create_flow(ctx, FLOW), now=virtual)
        if run_once(ctx, now=virtual) != timers:
            raise RuntimeError("the enrollments did not all reach the timed step")
        start = system_clock() + timedelta(seconds=LEAD)
        plan = _set_due_times(ctx, _due_times(start, timers, seconds))

        # Which enrollments each batch claimed, and when that batch had committed.
        claimed: dict[int, list[int]] = {}
        done: dict[int, float] = {}
        # A batch finds its enrollments with due_ids (looked up on store.enrollments), on both
        # backends; on PostgreSQL in the transaction that moves them.
        original_due = repo.due_ids
        original_batch = worker_module.run_batch

        def noted(ids: list[int]) -> list[int]:
            claimed.setdefault(threading.get_ident(), []).extend(ids)
            return ids

        def due_ids(*args: Any, **kwargs: Any) -> list[int]:
            return noted(original_due(*args, **kwargs))

        def run_batch(*args: Any, **kwargs: Any) -> worker_module.BatchResult:
            result = original_batch(*args, **kwargs)
            finished = time.time()
            for eid in claimed.pop(threading.get_ident(), []):
                done[eid] = finished
            return result

        context = Context(engine=ctx.engine, settings=ctx.settings)  # the real clock
        runner = Worker(context, name="bench-timers")
        queue: Any = multiprocessing.get_context("spawn").Queue()
        sleeper = multiprocessing.get_context("spawn").Process(
            target=_sleeper, args=([at.timestamp() for at in plan.values()], queue)
        )
        repo.due_ids = due_ids
        worker_module.run_batch = run_batch
        thread = threading.Thread(target=runner.run, name="bench-worker")
        try:
            thread.start()
            sleeper.start()
            deadline = time.monotonic() + LEAD + seconds + 30
            while len(done) < timers and time.monotonic() < deadline:
                time.sleep(0.2)
            baseline = queue.get(timeout=LEAD + seconds + 30)
        finally:
            runner.stop()
            thread.join(timeout=30)
            sleeper.join(timeout=30)
            repo.due_ids = original_due
            worker_module.run_batch = original_batch
        if len(done) < timers:
            raise RuntimeError(f"only {len(done)} of {timers} timers ran")
        lateness = [done[e] - at.timestamp() for e, at in plan.items()]
        with ctx.engine.connect() as conn:
            ran = conn.execute(
                sa.select(step_runs.c.enrollment_id, step_runs.c.started_at).where(
                    step_runs.c.step_key == "ring"
                )
            ).all()
        if len(ran) != timers:
            raise RuntimeError(f"{len(ran)} ring step runs for {timers} timers")
        early = sum(1 for e, started in ran if started < plan[e])
        return TimersResult(backend, timers, seconds, lateness, list(baseline), early)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        result = run(backend, args.timers, args.seconds)
        print(result.line(), flush=True)
        print(f"  median lateness {statistics.median(result.lateness):.3f}s", flush=True)


if __name__ == "__main__":
    main()
