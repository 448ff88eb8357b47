"""Enrollments through a 5-step flow in virtual time, against a bare batched write of the same rows.

The flow: update the record; one day later write a history entry (the wait is that step's
timing, a durable timer); decide; set the status; end. One worker (`run_once`) runs what is due
at a frozen `now`, then the clock jumps a day and it runs the rest: 5 step runs per enrollment,
1 on day 0 and 4 on day 1. crmflow's side takes batches (on PostgreSQL `FOR UPDATE SKIP LOCKED`,
in the transaction that moves them), loads enrollments, records and flows in bulk, runs the pure
engine, writes the states, step runs, record updates and history rows, and commits each batch.

The baseline writes what a hand-written batch job would have to write at the least, with the
same batch size and one transaction per batch: per enrollment and per round one UPDATE of
`enrollments` (status, step, due time, the JSON state) and INSERTs into `step_runs` of as many
rows as crmflow wrote, nothing read and nothing computed, handed to the driver's `executemany`
as plain tuples (the cheapest batched write there is, and the way crmflow's worker writes).

With `--parked`, each run also takes the same flow without the wait (`INLINE_FLOW`: all five
steps in the batch that enters the record) and prints the parked path's time as a ratio to it:
what it costs that a step waits (its record written as waiting, then claimed, loaded and moved
again by a later batch), the aim being within 1.5x.

With `--cpu`, both sides are measured in CPU time instead of the wall time, steadier on a machine
that other work loads: this process's, plus on PostgreSQL that of the server processes of the
bench database (on SQLite the database works in this process); the line also gives crmflow's CPU
per record (its two rounds, five step runs).

The aim (issue 14) was set on another machine, where the code of the issue's day gave 13,500 step
runs/s: 30,000/s is that code's rate times ISSUE_DAY_TIMES. `--against DIR` measures it on this
machine: DIR is a checkout of that day's code (`git worktree add DIR 21dd0d8`). Each run is two
child processes, one running the bench in DIR (its own code and bench) and one running it here,
the two taking turns to go first; the line gives both medians and their ratio against
ISSUE_DAY_TIMES.

    python -m bench.bench_steps [--rows N] [--runs N] [--backend sqlite|postgres|both] [--parked]
                                [--cpu] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa

from bench.common import fresh_database, timed
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows as flow_service
from crmflow.services.context import Context
from crmflow.services.users import actor_by_username
from crmflow.store.bulk import Writer
from crmflow.store.schema import enrollments, records, step_runs
from crmflow.store.types import UTCDateTime
from crmflow.worker import run_once

__all__ = [
    "AIM_RATE",
    "CHILD_TIMEOUT",
    "FLOW",
    "INLINE_FLOW",
    "ISSUE_DAY_TIMES",
    "PARKED_AIM",
    "Against",
    "StepsResult",
    "against",
    "cpu_since",
    "create_flow",
    "database_cpu",
    "enroll_all",
    "fill_contacts",
    "main",
    "process_cpu",
    "run",
]

AIM_RATE = 30_000  # step runs per second, SQLite, one worker (issue 14)
# The aim as a ratio to the code of issue 14's day (21dd0d8), which gave 13,500/s where the aim
# was set: what `--against` holds a run on another machine to.
ISSUE_DAY_RATE = 13_500
ISSUE_DAY_TIMES = AIM_RATE / ISSUE_DAY_RATE
# Seconds one child run of `--against` may take (the issue day's code: some 3 minutes at 100,000
# rows here) before it is stopped and the bench fails, rather than waiting on it for ever.
CHILD_TIMEOUT = 3600
PARKED_AIM = 1.5  # the parked path's time at most this many times the inline one's
BATCH = 500  # the worker's default batch size
ROWS = 100_000
ROWS_POSTGRES = 20_000  # fewer by default: a shared machine's PostgreSQL is slower per row
STEPS_PER_ENROLLMENT = 5
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

FLOW = """\
schema_version: 1
key: five-steps
name: Five steps
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: touch
    actions:
      - type: update_record
        values: {status: prospect, first_name: "{{ record.first_name | upper }}"}
  - key: note
    timing: {type: after, amount: 1, unit: days}
    actions:
      - type: history
        message: "Followed up {{ record.first_name }} {{ record.last_name }}"
  - key: route
    type: decision
    branches:
      - if: "record.status == 'prospect'"
        goto: promote
  - key: promote
    actions:
      - type: set_status
        status: client
  - key: done
    type: end
"""

# The same flow without the wait: the five steps run in the batch that enters the record.
INLINE_FLOW = FLOW.replace("key: five-steps", "key: five-inline").replace(
    "    timing: {type: after, amount: 1, unit: days}\n", ""
)


def create_flow(ctx: Context, text: str = FLOW) -> int:
    """Create and start the flow; its id."""
    admin = actor_by_username(ctx, "system")
    view = flow_service.create_flow(ctx, admin, text)
    flow_service.change_status(ctx, admin, view.key, LifecycleAction.START)
    with ctx.engine.connect() as conn:
        flow_id = conn.execute(sa.text("select id from flows where key = :k"), {"k": view.key})
        return int(flow_id.scalar_one())


def fill_contacts(ctx: Context, count: int, *, now: datetime = START) -> None:
    """`count` contacts written by one INSERT ... SELECT (set-up, not timed)."""
    stamp = sa.bindparam("now", now, type_=UTCDateTime())
    if ctx.engine.dialect.name == "postgresql":
        sql = (
            "insert into records (type, data, created_at, updated_at) "
            "select 'contact', jsonb_build_object('first_name', 'F' || i, 'last_name', 'L' || i,"
            " 'email', 'c' || i || '@example.org', 'status', 'lead'), :now, :now "
            "from generate_series(1, :n) as i"
        )
    else:
        sql = (
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < :n) "
            "insert into records (type, data, created_at, updated_at) "
            "select 'contact', json_object('first_name', 'F' || i, 'last_name', 'L' || i,"
            " 'email', 'c' || i || '@example.org', 'status', 'lead'), :now, :now from n"
        )
    with ctx.engine.begin() as conn:
        conn.execute(sa.text(sql).bindparams(stamp), {"n": count})
        if ctx.engine.dialect.name == "postgresql":
            conn.execute(sa.text("analyze records"))


def enroll_all(ctx: Context, flow_id: int, *, now: datetime = START) -> int:
    """Every contact enters `flow_id` at `now`: one INSERT ... SELECT (set-up, not timed)."""
    at = sa.bindparam("at", now, type_=UTCDateTime())
    select = sa.select(
        sa.literal(flow_id), sa.literal(1), records.c.id, sa.literal("active"), at, at, at
    ).where(records.c.type == "contact")
    columns = ["flow_id", "flow_version", "record_id", "status", "entered_at", "due_at"]
    with ctx.engine.begin() as conn:
        count = conn.execute(
            enrollments.insert()
            .execution_options(preserve_rowcount=True)
            .from_select([*columns, "updated_at"], select)
        ).rowcount
        if ctx.engine.dialect.name == "postgresql":
            conn.execute(sa.text("analyze enrollments"))
    return int(count)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pids: Iterable[int]) -> dict[int, float]:
    """The CPU seconds (user + system) each of `pids` has taken so far, as /proc tells (those
    that are gone or not on this machine are left out)."""
    taken: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        taken[pid] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return taken


def database_cpu(ctx: Context) -> dict[int, float]:
    """The CPU seconds taken so far by each server process of `ctx`'s PostgreSQL database
    (PostgreSQL on this machine); {} on SQLite, which works in the caller's process."""
    if ctx.engine.dialect.name != "postgresql":
        return {}
    with ctx.engine.connect() as conn:
        pids = conn.execute(
            sa.text("select pid from pg_stat_activity where datname = current_database()")
        ).scalars()
        return process_cpu(int(p) for p in pids)


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds taken between two readings (a process new since `before` counts whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _measured(fn: Callable[[], None], *, cpu: bool, ctx: Context) -> float:
    """Seconds `fn` took: the wall time, or with `cpu` the CPU time of this process and of the
    database's server processes (PostgreSQL)."""
    if not cpu:
        return timed(fn)
    server = database_cpu(ctx)
    start = time.process_time()
    fn()
    mine = time.process_time() - start
    return mine + cpu_since(server, database_cpu(ctx))


def _count(ctx: Context, table: sa.Table) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _inline(ctx: Context, rows: int) -> Callable[[], None]:
    """INLINE_FLOW: every step in the batch that enters the record, one `run_once`."""

    def go() -> None:
        moved = run_once(ctx, now=START, limit=BATCH)
        if moved != rows:
            raise RuntimeError(f"moved {moved} enrollments, expected {rows}")

    return go


def _ours(ctx: Context, rows: int) -> Callable[[], None]:
    def go() -> None:
        first = run_once(ctx, now=START, limit=BATCH)
        second = run_once(ctx, now=START + timedelta(days=1), limit=BATCH)
        if first != rows or second != rows:
            raise RuntimeError(f"moved {first} then {second} enrollments, expected {rows} twice")

    return go


def _bare_batches(ctx: Context, rows: int, runs_per_round: tuple[int, int]) -> Callable[[], None]:
    """The same number of enrollment UPDATEs and step_runs INSERTs, batch by batch, handed to the
    driver's executemany as plain tuples (the cheapest way to write them, and the way crmflow's
    worker writes them too)."""
    state = orjson.dumps({"status": "active", "step_key": "note", "history": []}).decode()

    def go() -> None:
        with ctx.engine.connect() as conn:
            ids = [
                int(i) for i in conn.execute(sa.select(enrollments.c.id).order_by("id")).scalars()
            ]
        for round_no, at in enumerate((START, START + timedelta(days=1))):
            per = runs_per_round[round_no] // rows
            for i in range(0, len(ids), BATCH):
                chunk = ids[i : i + BATCH]
                with ctx.engine.begin() as conn:
                    writer = Writer(conn)
                    when, due = writer.time(at), writer.time(at + timedelta(days=1))
                    json = writer.json_placeholder
                    writer.executemany(
                        "update enrollments set status = ?, step_key = ?, due_at = ?,"
                        f" state = {json}, updated_at = ?, lease_owner = null,"
                        " lease_until = null where id = ?",
                        [("active", "note", due, state, when, eid) for eid in chunk],
                    )
                    writer.executemany(
                        "insert into step_runs (enrollment_id, run, step_key, step_type, status,"
                        f" reason, started_at, finished_at, actions) values"
                        f" (?, ?, ?, ?, ?, ?, ?, ?, {json})",
                        [
                            (eid, 10 * round_no + k, "step", "action", "done", "", when, when, "[]")
                            for eid in chunk
                            for k in range(per)
                        ],
                    )

    return go


@dataclass
class StepsResult:
    backend: str
    rows: int
    step_runs: int
    ours: list[float]
    baseline: list[float]
    inline: list[float] = field(default_factory=list)  # --parked: INLINE_FLOW's times
    cpu: bool = False  # the times are CPU seconds (this process, PostgreSQL's server), not wall

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.baseline)

    @property
    def parked_ratio(self) -> float:
        """The parked path's time over the inline one's (medians)."""
        return statistics.median(self.ours) / statistics.median(self.inline)

    @property
    def rate(self) -> float:
        return self.step_runs / statistics.median(self.ours)

    def _cpu_note(self) -> str:
        if not self.cpu:
            return ""
        per = statistics.median(self.ours) / self.rows * 1000
        who = "client+server" if self.backend == "postgres" else "one process"
        return f"  (CPU time, {who}: {per:.3f} ms per record)"

    def line(self) -> str:
        rate_aim = ""
        if self.backend == "sqlite":
            rate_aim = f" (aim >= {AIM_RATE:,}/s, " + (
                "ok)"
                if self.rate >= AIM_RATE
                else f"below it here; on a machine other than the issue's, `--against` the"
                f" issue day's code: aim {ISSUE_DAY_TIMES:.2f}x)"
            )
        text = (
            f"{'5-step flow, virtual time':<28} {self.backend:<8} rows={self.rows:>9,}  "
            f"ratio={self.ratio:5.2f}x  "
            f"{self.rate:,.0f} step runs/s{rate_aim}  "
            f"median ours={statistics.median(self.ours):.3f}s "
            f"baseline={statistics.median(self.baseline):.3f}s  runs={len(self.ours)}"
            f"{self._cpu_note()}"
        )
        if not self.inline:
            return text
        inline = statistics.median(self.inline)
        verdict = "ok" if self.parked_ratio <= PARKED_AIM else "ABOVE AIM"
        return text + (
            f"\n{'  parked / inline':<28} {self.backend:<8} rows={self.rows:>9,}  "
            f"ratio={self.parked_ratio:5.2f}x (aim <= {PARKED_AIM:g}x, {verdict})  "
            f"inline={inline:.3f}s ({self.rows / inline:,.0f} records/s, "
            f"{inline / statistics.median(self.baseline):.2f}x bare) "
            f"parked={statistics.median(self.ours):.3f}s "
            f"({self.rows / statistics.median(self.ours):,.0f} records/s)"
        )


def _prepared(ctx: Context, rows: int, text: str = FLOW) -> None:
    fill_contacts(ctx, rows)
    enroll_all(ctx, create_flow(ctx, text))


def run(
    backend: str, rows: int, runs: int, *, parked: bool = False, cpu: bool = False
) -> StepsResult:
    """Each run on a fresh database: crmflow's worker, then the bare batched writes; with
    `parked`, first INLINE_FLOW on a database of its own. With `cpu`, each side's CPU time."""
    result = StepsResult(backend, rows, 0, [], [], cpu=cpu)
    for _ in range(runs):
        if parked:
            with fresh_database(backend) as ctx:
                ctx.clock = lambda: START
                _prepared(ctx, rows, INLINE_FLOW)
                result.inline.append(_measured(_inline(ctx, rows), cpu=cpu, ctx=ctx))
                total = _count(ctx, step_runs)
                if total != STEPS_PER_ENROLLMENT * rows:
                    raise RuntimeError(f"inline: {total} step runs, expected 5 x {rows}")
        with fresh_database(backend) as ctx:
            ctx.clock = lambda: START
            _prepared(ctx, rows)
            result.ours.append(_measured(_ours(ctx, rows), cpu=cpu, ctx=ctx))
            with ctx.engine.connect() as conn:
                first = conn.execute(
                    sa.select(sa.func.count()).select_from(step_runs).where(step_runs.c.run == 1)
                ).scalar_one()
            total = _count(ctx, step_runs)
            if total != STEPS_PER_ENROLLMENT * rows:
                raise RuntimeError(f"{total} step runs, expected {STEPS_PER_ENROLLMENT * rows}")
            result.step_runs = total
        with fresh_database(backend) as ctx:
            _prepared(ctx, rows)
            bare = _bare_batches(ctx, rows, (first, total - first))
            result.baseline.append(_measured(bare, cpu=cpu, ctx=ctx))
    return result


_RATE = re.compile(r"([\d,]+) step runs/s")


@dataclass
class Against:
    """`--against`: the bench's rate with this code and with the issue day's code (a checkout),
    run after run in turn, each in a child process."""

    rows: int
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    @property
    def times(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)

    def line(self) -> str:
        verdict = "ok" if self.times >= ISSUE_DAY_TIMES else "BELOW AIM"
        runs = ", ".join(f"{o:,.0f}/{t:,.0f}" for o, t in zip(self.ours, self.theirs, strict=True))
        return (
            f"{'  against issue day code':<28} {'sqlite':<8} rows={self.rows:>9,}  "
            f"times={self.times:5.2f}x (aim >= {ISSUE_DAY_TIMES:.2f}x, {verdict})  "
            f"medians {statistics.median(self.ours):,.0f} and "
            f"{statistics.median(self.theirs):,.0f} step runs/s  (each run, this/that: {runs})"
        )


def _child_rate(checkout: Path, rows: int) -> float:
    """One run of this bench (SQLite, wall time) in a child process, with the code and bench of
    `checkout`; the step runs per second it printed."""
    env = {**os.environ, "PYTHONPATH": f"{checkout / 'src'}{os.pathsep}{checkout}"}
    argv = [sys.executable, "-m", "bench.bench_steps", "--backend", "sqlite"]
    argv += ["--rows", str(rows), "--runs", "1"]
    try:
        done = subprocess.run(
            argv, cwd=checkout, env=env, capture_output=True, text=True, check=False,
            timeout=CHILD_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the bench in {checkout} took over {CHILD_TIMEOUT} s") from exc
    found = _RATE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the bench in {checkout} failed:\n{done.stdout}{done.stderr}")
    return float(found.group(1).replace(",", ""))


def against(checkout: Path, rows: int, runs: int) -> Against:
    """This code's rate and `checkout`'s, `runs` times each, in turn (the other code first
    every other run, so that neither always runs on the warmer machine)."""
    here = Path(__file__).resolve().parent.parent
    if not (checkout / "src" / "crmflow").is_dir() or not (checkout / "bench").is_dir():
        raise SystemExit(f"--against {checkout}: not a checkout of crmflow (no src/crmflow, bench)")
    result = Against(rows)
    for i in range(runs):
        sides = [(here, result.ours), (checkout, result.theirs)]
        for root, rates in sides if i % 2 == 0 else reversed(sides):
            rates.append(_child_rate(root, rows))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rows", type=int, default=None, help="default: 100,000 on SQLite, 20,000 on PostgreSQL"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--parked",
        action="store_true",
        help="also run the flow without its wait and print the parked path's ratio to it",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="CPU time instead of the wall time, both sides (steadier on a loaded machine): this"
        " process's and, on PostgreSQL, the bench database's server processes'",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="a checkout of the issue day's code (git worktree add DIR 21dd0d8): SQLite only,"
        f" both codes' rates run after run in turn, and their ratio (aim {ISSUE_DAY_TIMES:.2f}x)",
    )
    args = parser.parse_args(argv)
    if args.against is not None and (args.parked or args.cpu or args.backend == "postgres"):
        parser.error("--against measures the wall time on SQLite: leave out --parked, --cpu and"
                     " --backend postgres")  # fmt: skip
    if args.against is not None:
        print(against(args.against.resolve(), args.rows or ROWS, args.runs).line(), flush=True)
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}", flush=True)
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        rows = args.rows or (ROWS if backend == "sqlite" else ROWS_POSTGRES)
        result = run(backend, rows, args.runs, parked=args.parked, cpu=args.cpu)
        print(result.line(), flush=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
