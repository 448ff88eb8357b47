"""The soak: a million enrollments whose timers come due over an hour of virtual time, run by the
worker's batches; memory sampled through the run (flat?) and timer lateness p50/p99.

Set-up (not timed, in this process): `--enrollments` contacts enter bench_timers' flow (a step
with nothing to do, then `ring`, a timed step writing a history line); `run_once` takes the
first to `ring` and the others are made its copies in bulk (the same rows as the worker writes:
tested), each due at a time drawn uniformly over `--seconds` of virtual time (3,600 by default:
an hour). A million takes some minutes on an idle machine.

The soak runs in a child process of its own (its memory is the soak's, not the set-up's), as the
worker's loop does it, on a virtual clock: the worker's `run_batch` claims what is due at the
clock's `now`, moves it and commits, batch after batch; while it works the clock runs at the
speed of the real one (the wall clock, or with `--cpu` the process's CPU time, steadier on a
loaded machine, plus on PostgreSQL the server processes' CPU time for the soak's connections);
when nothing is due the worker sleeps as `Worker` does, until the next due time (one query,
`work_signs`) and at least 50 ms (`Worker._until_due`), and the clock skips that sleep. So
lateness is what the worker's own work and its idle rule make it, without waiting an hour (but a
worker that never idles spends as much CPU time as the window: a million over an hour is an hour
of CPU): lateness = the virtual time of the commit of the batch that ran a timer minus its due
time; "early" counts step runs whose start came before their due time (must be 0).

Memory is sampled every 1% of the virtual hour: resident memory (VmRSS) and tracemalloc's
current size (first, last, max) and tracemalloc's peak; tracemalloc slows the process (the
clock with it: lateness under it is pessimistic), `--no-tracemalloc` leaves it off.

`--until U` stops the soak after U seconds of virtual time (a million over the whole hour takes
an hour of CPU time): the figures are then those of the timers due and run by then.

    python -m bench.bench_soak [--enrollments N] [--seconds S] [--backend sqlite|postgres]
                               [--cpu] [--no-tracemalloc] [--until U]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
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
    """`count` enrollments waiting at `ring`, due uniformly over `seconds` from FIRST_DUE.

    The worker takes the first enrollment to `ring` (`run_once`); the others are then made
    copies of it in bulk, each with its own ids and due time (`_copy_first`): taking a million
    through `wait` by the worker's batches would be most of the set-up's time. `by_worker`
    below does it the slow way (the smoke test compares the two)."""
    fill_contacts(ctx, count, now=START)
    enroll_all(ctx, create_flow(ctx, FLOW), now=START)
    with ctx.engine.begin() as conn:
        first = int(conn.execute(sa.select(sa.func.min(enrollments.c.id))).scalar_one())
        # The others wait, not due, while the worker moves the first.
        conn.execute(sa.update(enrollments).where(enrollments.c.id != first).values(due_at=None))
    if run_once(ctx, now=START) != 1:
        raise RuntimeError("the first enrollment did not reach the timed step")
    _copy_first(ctx, first, _due_times(count, seconds, seed))


def by_worker(ctx: Context, count: int, seconds: float, *, seed: int = 14) -> None:
    """As `prepare`, every enrollment taken to `ring` by the worker (slow: for the test)."""
    fill_contacts(ctx, count, now=START)
    enroll_all(ctx, create_flow(ctx, FLOW), now=START)
    if run_once(ctx, now=START) != count:
        raise RuntimeError("the enrollments did not all reach the timed step")
    pg = ctx.engine.dialect.name == "postgresql"
    state = (
        "jsonb_set(state, '{due_at}', to_jsonb(cast(:iso as text)))"
        if pg
        else "json_set(state, '$.due_at', :iso)"
    )
    statement = sa.text(
        f"update enrollments set due_at = :due, state = {state} where id = :eid"
    ).bindparams(sa.bindparam("due", type_=enrollments.c.due_at.type))
    with ctx.engine.begin() as conn:
        ids = sorted(int(i) for i in conn.execute(sa.select(enrollments.c.id)).scalars())
        rows = [
            {"eid": eid, "due": due, "iso": _iso(due)}
            for eid, due in zip(ids, _due_times(count, seconds, seed), strict=True)
        ]
        conn.execute(statement, rows)


def _due_times(count: int, seconds: float, seed: int) -> list[datetime]:
    """The due times, in the order of the enrollments' ids: uniform over `seconds`."""
    rng = random.Random(seed)
    return [FIRST_DUE + timedelta(seconds=rng.uniform(0, seconds)) for _ in range(count)]


_DUE = sa.Table(
    "soak_due",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("due", enrollments.c.due_at.type),
    sa.Column("iso", sa.Text),
    prefixes=["TEMPORARY"],
)


def _copy_first(ctx: Context, first: int, dues: list[datetime]) -> None:
    """Every other enrollment becomes a copy of `first` as the worker left it (its columns, its
    state with the enrollment's own ids and due time, its step run of `wait`); the n-th
    enrollment by id is due at dues[n]."""
    pg = ctx.engine.dialect.name == "postgresql"
    copied = [
        c.name
        for c in enrollments.c
        if c.name not in {"id", "record_id", "due_at", "state", "flow_id", "entered_at"}
    ]
    if pg:
        state = (
            "t.state || jsonb_build_object("
            "'enrollment_id', e.id, 'record_id', e.record_id, 'due_at', d.iso)"
        )
    else:
        state = (
            "json_set(t.state, "
            "'$.enrollment_id', e.id, '$.record_id', e.record_id, '$.due_at', d.iso)"
        )
    sets = ", ".join(f"{name} = t.{name}" for name in copied)
    # Each enrollment's rank by id (n, from 0) picks its due time d; t is the template.
    update = sa.text(
        f"with ranked as (select id, row_number() over (order by id) - 1 as n from enrollments) "
        f"update enrollments as e set {sets}, due_at = d.due, state = {state} "
        "from ranked join soak_due as d on d.n = ranked.n "
        "cross join (select * from enrollments where id = :first) as t "
        "where e.id = ranked.id"
    )
    runs = sa.text(
        "insert into step_runs (enrollment_id, run, step_key, step_type, status, reason, "
        "started_at, finished_at, actions) "
        "select e.id, s.run, s.step_key, s.step_type, s.status, s.reason, s.started_at, "
        "s.finished_at, s.actions from enrollments as e cross join step_runs as s "
        "where s.enrollment_id = :first and e.id != :first"
    )
    with ctx.engine.begin() as conn:
        _DUE.create(conn)
        conn.execute(
            _DUE.insert(),
            [{"n": n, "due": due, "iso": _iso(due)} for n, due in enumerate(dues)],
        )
        conn.execute(update, {"first": first})
        conn.execute(runs, {"first": first})
        _DUE.drop(conn)
    if pg:
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("vacuum analyze enrollments"))
            conn.execute(sa.text("vacuum analyze step_runs"))


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


class ServerCPU:
    """On PostgreSQL, the CPU time of the server processes that serve `engine`'s connections
    (read from /proc: the server runs on this machine), so that `--cpu` counts the queries'
    work as well as the worker's own: without it, a clock of the worker's CPU time alone would
    stand still while the server claims and writes. Every connection the engine opens from now
    on is followed (the pool is emptied first); a server process that has ended keeps the time
    last read from it, so the sum never goes back."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: dict[int, float] = {}
        self.tick = os.sysconf("SC_CLK_TCK")
        engine.dispose()
        sa.event.listen(engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        self.seen.setdefault(int(dbapi_connection.info.backend_pid), 0.0)

    def __call__(self) -> float:
        for pid in self.seen:
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
            self.seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        return sum(self.seen.values())


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def soak(
    ctx: Context,
    seconds: float,
    *,
    cpu: bool = False,
    trace: bool = True,
    until: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The worker's batches through the virtual hour; the figures as a dict (JSON-able).

    `until`: stop after that many seconds of virtual time (the figures are then those of the
    timers run so far). Timers run before the soak began (a soak resumed on its database) are
    left out of the lateness. `progress`: a line on stderr at each memory sample.

    `cpu`: the clock runs with this process's CPU time, and on PostgreSQL the server's CPU
    time for its connections as well (`ServerCPU`)."""
    server = ServerCPU(ctx.engine) if cpu and ctx.engine.dialect.name == "postgresql" else None
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
    if server is not None:
        tick: Callable[[], float] = lambda: time.process_time() + server()  # noqa: E731
    else:
        tick = time.process_time if cpu else time.perf_counter
    clock = VirtualClock(FIRST_DUE, tick)
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
    stop = None if until is None else FIRST_DUE + timedelta(seconds=until)
    # SIGUSR1 ends the soak after the current batch, with the figures so far.
    stopped: list[int] = []
    if progress:
        signal.signal(signal.SIGUSR1, lambda signum, _frame: stopped.append(signum))
    while moved < timers and not stopped:
        now = clock.now()
        if stop is not None and now >= stop:
            break
        if now >= next_sample:
            sample()
            next_sample = now + every
            if progress:
                print(
                    f"virtual {(now - FIRST_DUE).total_seconds():.0f}s moved {moved} "
                    f"batches {batches} rss {rss[-1]:.0f} MB wall "
                    f"{time.perf_counter() - began:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
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
            if math.isnan(wanted):  # run before this soak began
                continue
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
    until: float | None = None

    @property
    def problems(self) -> list[str]:
        f = self.figures
        found = []
        # Stopped early (`until`): every timer moved has its step run, no more.
        wanted = self.enrollments if self.until is None else f["moved"]
        if f["ran"] != wanted or f["moved"] != wanted:
            found.append(f"{f['ran']} ring step runs, {f['moved']} moved of {wanted}")
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
        stopped = "" if self.until is None else " (stopped there)"
        return [
            f"{'soak, timers over an hour':<28} {self.backend:<8} "
            f"enrollments={self.enrollments:>9,} over {self.seconds:g}s virtual  "
            f"lateness p50={f['p50']:.3f}s p99={f['p99']:.3f}s max={f['max']:.3f}s "
            f"(aim p99 < {AIM_P99}s, {verdict})  early={f['early']}  "
            f"({self.clock} clock)",
            f"{'  soak memory':<28} {self.backend:<8} {memory}  ({len(rss)} samples)",
            f"{'  soak time':<28} {self.backend:<8} {f['wall']:.1f}s real for "
            f"{f['virtual']:.0f}s virtual{stopped} "
            f"({f['virtual'] / max(f['wall'], 1e-9):.1f}x real "
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
    until: float | None = None,
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
            command += [] if until is None else ["--until", str(until)]
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
            figures = soak(ctx, seconds, cpu=cpu, trace=trace, until=until)
    clock = ("cpu+server" if backend == "postgres" else "cpu") if cpu else "wall"
    return SoakResult(backend, count, seconds, clock, setup, figures, until)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--enrollments", type=int, default=ENROLLMENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="virtual time (an hour)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cpu", action="store_true", help="the clock runs with CPU time")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "--until", type=float, help="stop after UNTIL seconds of virtual time (figures so far)"
    )
    # With --child: progress lines on stderr.
    parser.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        ctx = Context.from_settings(Settings(database_url=args.child))
        figures = soak(
            ctx,
            args.seconds,
            cpu=args.cpu,
            trace=not args.no_tracemalloc,
            until=args.until,
            progress=args.progress,
        )
        print(json.dumps(figures))
        return
    result = run(
        args.backend,
        args.enrollments,
        args.seconds,
        cpu=args.cpu,
        trace=not args.no_tracemalloc,
        until=args.until,
    )
    for line in result.lines():
        print(line, flush=True)
    if result.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
