"""The soak: a million enrollments whose timers come due over an hour of virtual time, run by the
worker's batches; memory sampled through the run (flat?) and timer lateness p50/p99.

Set-up (not timed, in this process): `--enrollments` contacts enter bench_timers' flow (a step
with nothing to do, then `ring`, a timed step writing a history line); one `run_once` takes
them all to `ring`; each timer is then moved to a due time drawn uniformly over `--seconds` of
virtual time (3,600 by default: an hour).

The soak runs in a child process of its own (its memory is the soak's, not the set-up's), as
the worker's loop does it, on a virtual clock: the worker's `run_batch` claims what is due at
the clock's `now`, moves it and commits, batch after batch; while it works the clock runs at
the speed of the real one (the wall clock, or with `--cpu` the process's CPU time, steadier on a
loaded machine); when nothing is due the worker sleeps as `Worker` does, until the next due time
(one query, `work_signs`) and at least 50 ms (`Worker._until_due`), and the clock skips that
sleep. So lateness is what the worker's own work and its idle rule make it, without waiting an
hour: lateness = the virtual time of the commit of the batch that ran a timer minus its due
time; "early" counts step runs whose start came before their due time (must be 0).

Memory is sampled every 1% of the virtual hour: resident memory (VmRSS) and tracemalloc's
current size (first, last, max) and tracemalloc's peak; tracemalloc slows the process (the
clock with it: lateness under it is pessimistic), `--no-tracemalloc` leaves it off.

    python -m bench.bench_soak [--enrollments N] [--seconds S] [--backend sqlite|postgres]
                               [--cpu] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.bench_memory import rss_mb
from bench.bench_steps import create_flow, enroll_all, fill_contacts
from bench.bench_timers import FLOW
from bench.common import fresh_database
from crmflow.services.context import Context
from crmflow.services.users import ensure_system_user
from crmflow.settings import Settings
from crmflow.store.schema import enrollments, step_runs
from crmflow.store.wakeups import work_signs
from crmflow.worker import DEFAULT_BATCH, run_batch, run_once

__all__ = ["AIM_P99", "ENROLLMENTS", "SoakResult", "main", "run", "soak"]

AIM_P99 = 0.5  # seconds of virtual time
ENROLLMENTS = 1_000
SECONDS = 3_600.0
MIN_SLEEP = 0.05  # the worker's shortest idle sleep (Worker._until_due)
SAMPLES = 100  # memory samples over the virtual hour
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIRST_DUE = START + timedelta(minutes=1)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prepare(ctx: Context, count: int, seconds: float, *, seed: int = 14) -> None:
    """`count` enrollments waiting at `ring`, due uniformly over `seconds` from FIRST_DUE."""
    fill_contacts(ctx, count, now=START)
    enroll_all(ctx, create_flow(ctx, FLOW), now=START)
    if run_once(ctx, now=START) != count:
        raise RuntimeError("the enrollments did not all reach the timed step")
    rng = random.Random(seed)
    if ctx.engine.dialect.name == "postgresql":
        state = "jsonb_set(state, '{due_at}', to_jsonb(cast(:iso as text)))"
    else:
        state = "json_set(state, '$.due_at', :iso)"
    statement = sa.text(
        f"update enrollments set due_at = :due, state = {state} where id = :eid"
    ).bindparams(sa.bindparam("due", type_=enrollments.c.due_at.type))
    with ctx.engine.connect() as conn:
        ids = [int(i) for i in conn.execute(sa.select(enrollments.c.id)).scalars()]
    for i in range(0, len(ids), 10_000):
        rows = []
        for eid in ids[i : i + 10_000]:
            due = FIRST_DUE + timedelta(seconds=rng.uniform(0, seconds))
            rows.append({"eid": eid, "due": due, "iso": _iso(due)})
        with ctx.engine.begin() as conn:
            conn.execute(statement, rows)
    if ctx.engine.dialect.name == "postgresql":
        with ctx.engine.begin() as conn:
            conn.execute(sa.text("analyze enrollments"))


class VirtualClock:
    """Runs at the speed of `tick` (seconds) from `start`; `skip` jumps over an idle sleep."""

    def __init__(self, start: datetime, tick: Callable[[], float]) -> None:
        self.base = start
        self.tick = tick
        self.mark = tick()

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.tick() - self.mark)

    def skip(self, seconds: float) -> None:
        self.base += timedelta(seconds=seconds)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def soak(ctx: Context, seconds: float, *, cpu: bool = False, trace: bool = True) -> dict[str, Any]:
    """The worker's batches through the virtual hour; the figures as a dict (JSON-able)."""
    with ctx.engine.connect() as conn:
        lo, hi = conn.execute(
            sa.select(sa.func.min(enrollments.c.id), sa.func.max(enrollments.c.id))
        ).one()
        due = array("d", [math.nan]) * (int(hi) - int(lo) + 1)
        for eid, at in conn.execute(
            sa.select(enrollments.c.id, enrollments.c.due_at).where(
                enrollments.c.step_key == "ring", enrollments.c.due_at.is_not(None)
            )
        ):
            due[int(eid) - lo] = at.timestamp()
    timers = sum(1 for d in due if not math.isnan(d))
    if trace:
        tracemalloc.start()
    clock = VirtualClock(FIRST_DUE, time.process_time if cpu else time.perf_counter)
    ctx.clock = clock.now
    system = ensure_system_user(ctx)
    rss: list[float] = []
    traced: list[float] = []

    def sample() -> None:
        rss.append(rss_mb())
        if trace:
            traced.append(tracemalloc.get_traced_memory()[0] / 2**20)

    every = timedelta(seconds=seconds / SAMPLES)
    next_sample = FIRST_DUE
    # Each batch's `now` and its commit, virtual: arrays (16 bytes a batch), so that what the
    # bench keeps does not count as the worker's memory.
    batch_nows, batch_commits = array("d"), array("d")
    moved = batches = wakes = 0
    began = time.perf_counter()
    while moved < timers:
        now = clock.now()
        if now >= next_sample:
            sample()
            next_sample = now + every
        result = run_batch(ctx, system, now=now, owner="soak", limit=DEFAULT_BATCH)
        if result.claimed:
            batch_nows.append(now.timestamp())
            batch_commits.append(clock.now().timestamp())
            moved += result.moved
            batches += 1
            continue
        # Idle: sleep until the next due time, at least MIN_SLEEP (the worker's own rule).
        wakes += 1
        next_due = work_signs(ctx.engine).next_due
        if next_due is None:
            break
        clock.skip(max(MIN_SLEEP, (next_due - clock.now()).total_seconds()))
    wall = time.perf_counter() - began
    virtual = (clock.now() - FIRST_DUE).total_seconds()
    sample()
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else math.nan
    if trace:
        tracemalloc.stop()
    commits = dict(zip(batch_nows, batch_commits, strict=True))
    lateness = array("d")
    early = unmatched = 0
    with ctx.engine.connect() as conn:
        ran = conn.execution_options(yield_per=10_000).execute(
            sa.select(step_runs.c.enrollment_id, step_runs.c.started_at).where(
                step_runs.c.step_key == "ring"
            )
        )
        for eid, started in ran:
            wanted = due[int(eid) - lo]
            committed = commits.get(started.timestamp())
            if committed is None:
                unmatched += 1
                continue
            early += started.timestamp() < wanted
            lateness.append(committed - wanted)
    ordered = sorted(lateness)
    return {
        "timers": timers,
        "moved": moved,
        "ran": len(lateness) + unmatched,
        "unmatched": unmatched,
        "early": early,
        "batches": batches,
        "wakes": wakes,
        "wall": wall,
        "virtual": virtual,
        "p50": _percentile(ordered, 0.5),
        "p99": _percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else math.nan,
        "rss": rss,
        "traced": traced,
        "peak": peak,
    }


@dataclass
class SoakResult:
    backend: str
    enrollments: int
    seconds: float
    clock: str
    setup: float
    figures: dict[str, Any]

    @property
    def problems(self) -> list[str]:
        f = self.figures
        found = []
        if f["ran"] != self.enrollments or f["moved"] != self.enrollments:
            found.append(f"{f['ran']} ring step runs, {f['moved']} moved of {self.enrollments}")
        if f["unmatched"]:
            found.append(f"{f['unmatched']} step runs started at no batch's time")
        if f["early"]:
            found.append(f"{f['early']} timers ran early")
        return found

    def lines(self) -> list[str]:
        f = self.figures
        verdict = "ok" if f["p99"] < AIM_P99 and not self.problems else "ABOVE AIM"
        rss, traced = f["rss"], f["traced"]
        memory = f"RSS first={rss[0]:.0f} last={rss[-1]:.0f} max={max(rss):.0f} MB"
        if traced:
            memory += (
                f"  tracemalloc current first={traced[0]:.1f} last={traced[-1]:.1f} "
                f"max={max(traced):.1f} MB peak={f['peak']:.1f} MB"
            )
        return [
            f"{'soak, timers over an hour':<28} {self.backend:<8} "
            f"enrollments={self.enrollments:>9,} over {self.seconds:g}s virtual  "
            f"lateness p50={f['p50']:.3f}s p99={f['p99']:.3f}s max={f['max']:.3f}s "
            f"(aim p99 < {AIM_P99}s, {verdict})  early={f['early']}  "
            f"({self.clock} clock)",
            f"{'  soak memory':<28} {self.backend:<8} {memory}  ({len(rss)} samples)",
            f"{'  soak time':<28} {self.backend:<8} {f['wall']:.1f}s real for "
            f"{f['virtual']:.0f}s virtual ({f['virtual'] / max(f['wall'], 1e-9):.1f}x real "
            f"time), {f['batches']:,} batches, {f['wakes']:,} idle wakes; "
            f"set-up {self.setup:.1f}s"
            + ("" if not self.problems else "  PROBLEMS: " + "; ".join(self.problems)),
        ]


def run(
    backend: str,
    count: int,
    seconds: float = SECONDS,
    *,
    cpu: bool = False,
    trace: bool = True,
    child: bool = True,
) -> SoakResult:
    """On a fresh database: the set-up here, the soak in a child process (`child=False`: in
    this one, for a quick check; its memory figures then include the set-up's)."""
    with fresh_database(backend) as ctx:
        began = time.perf_counter()
        prepare(ctx, count, seconds)
        setup = time.perf_counter() - began
        if child:
            url = ctx.engine.url.render_as_string(hide_password=False)
            command = [sys.executable, "-m", "bench.bench_soak", "--child", url]
            command += ["--seconds", str(seconds)]
            command += ["--cpu"] if cpu else []
            command += [] if trace else ["--no-tracemalloc"]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            if done.returncode != 0:
                raise RuntimeError(f"the soak process failed: {done.stderr[-2000:]}")
            figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            figures = soak(ctx, seconds, cpu=cpu, trace=trace)
    return SoakResult(backend, count, seconds, "cpu" if cpu else "wall", setup, figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--enrollments", type=int, default=ENROLLMENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="virtual time (an hour)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cpu", action="store_true", help="the clock runs with CPU time")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        ctx = Context.from_settings(Settings(database_url=args.child))
        figures = soak(ctx, args.seconds, cpu=args.cpu, trace=not args.no_tracemalloc)
        print(json.dumps(figures))
        return
    result = run(
        args.backend, args.enrollments, args.seconds, cpu=args.cpu, trace=not args.no_tracemalloc
    )
    for line in result.lines():
        print(line, flush=True)
    if result.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
