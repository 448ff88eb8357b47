"""A worker's memory with a large backlog of pending timers, against the same worker with none.

The database holds `--timers` enrollments due a year from now (1,000,000 by default) and a
trickle of work due now (2,000 enrollments of a 3-step flow, so that batches, the engine and
its caches run too). A worker runs in a child process for `--seconds` (its loop at most
50 ms idle, so that a few minutes are thousands of loops) and reports its resident memory
(VmRSS, from /proc/self/status) before its loop, after a fifth of the run ("start": the due work
done and the caches filled), at the end, and the peak. The
baseline is the same child on a database with the same trickle and no backlog: the ratio says
whether memory grows with the backlog; start and end say whether it grows with time.

    python -m bench.bench_memory [--timers N] [--seconds S] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from bench.bench_steps import create_flow, fill_contacts
from bench.common import fresh_database
from crmflow.services.context import Context, system_clock
from crmflow.settings import Settings
from crmflow.store.schema import enrollments, records
from crmflow.store.types import UTCDateTime
from crmflow.worker import Worker

__all__ = ["AIM_MB", "MemoryResult", "main", "run"]

AIM_MB = 300.0
TRICKLE = 2_000
FLOW = """\
schema_version: 1
key: trickle
name: Trickle
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: touch
    actions:
      - type: update_record
        values: {status: prospect}
  - key: note
    actions:
      - type: history
        message: "Hello {{ record.first_name }}"
  - key: done
    type: end
"""


def rss_mb() -> float:
    """This process's resident memory in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _child(url: str, seconds: float) -> None:
    """The worker under test: runs for `seconds`, prints its RSS as JSON at the end."""

    ctx = Context.from_settings(Settings(database_url=url))
    runner = Worker(ctx, max_idle=0.05, name="bench-memory")
    samples: list[float] = []
    began = time.monotonic()
    warm: list[float] = []  # the first sample after a fifth of the run: caches filled

    def sample() -> None:
        while not runner.stopping:
            samples.append(rss_mb())
            if not warm and time.monotonic() - began > seconds / 5:
                warm.append(samples[-1])
            time.sleep(0.5)

    thread = threading.Thread(target=runner.run)
    thread.start()
    threading.Thread(target=sample, daemon=True).start()
    time.sleep(seconds)
    runner.stop()
    thread.join()
    samples.append(rss_mb())
    start = warm[0] if warm else samples[0]
    print(
        json.dumps({"first": samples[0], "start": start, "end": samples[-1], "peak": max(samples)})
    )


def _backlog(ctx: Context, timers: int, trickle: int) -> None:
    """`timers` enrollments that enter their flow a year from now (set-up, not timed)."""
    flow_id = create_flow(ctx, FLOW)
    now = system_clock()
    fill_contacts(ctx, trickle + timers, now=now)
    later = now + timedelta(days=365)
    columns = ["flow_id", "flow_version", "record_id", "status", "entered_at", "due_at"]
    with ctx.engine.begin() as conn:
        for due, where in (
            (now, records.c.id <= trickle),
            (later, records.c.id > trickle),
        ):
            at = sa.bindparam(None, now, type_=UTCDateTime())
            when = sa.bindparam(None, due, type_=UTCDateTime())
            conn.execute(
                enrollments.insert().from_select(
                    [*columns, "updated_at"],
                    sa.select(
                        sa.literal(flow_id),
                        sa.literal(1),
                        records.c.id,
                        sa.literal("active"),
                        at,
                        when,
                        at,
                    ).where(where),
                )
            )
        if ctx.engine.dialect.name == "postgresql":
            conn.execute(sa.text("analyze"))


@dataclass
class MemoryResult:
    backend: str
    timers: int
    seconds: float
    ours: dict[str, float]
    baseline: dict[str, float]

    def line(self) -> str:
        verdict = "ok" if self.ours["peak"] < AIM_MB else "ABOVE AIM"
        return (
            f"{'worker memory':<28} {self.backend:<8} pending={self.timers:>9,}  "
            f"RSS first={self.ours['first']:.0f} MB start={self.ours['start']:.0f} MB "
            f"end={self.ours['end']:.0f} MB "
            f"peak={self.ours['peak']:.0f} MB (aim < {AIM_MB:g} MB, {verdict})  "
            f"baseline (no backlog) peak={self.baseline['peak']:.0f} MB  "
            f"ratio={self.ours['peak'] / self.baseline['peak']:.2f}x  over {self.seconds:g}s"
        )


def _measure(backend: str, timers: int, seconds: float, trickle: int) -> dict[str, float]:
    with fresh_database(backend) as ctx:
        _backlog(ctx, timers, trickle)
        url = ctx.engine.url.render_as_string(hide_password=False)
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_memory", "--child", url, "--seconds", str(seconds)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
            timeout=seconds + 120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the worker process failed: {done.stderr[-2000:]}")
        with ctx.engine.connect() as conn:
            finished = conn.execute(
                sa.select(sa.func.count())
                .select_from(enrollments)
                .where(enrollments.c.status == "finished")
            ).scalar_one()
        if finished != trickle:
            raise RuntimeError(f"the worker finished {finished} of {trickle} due enrollments")
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def run(backend: str, timers: int, seconds: float, trickle: int = TRICKLE) -> MemoryResult:
    ours = _measure(backend, timers, seconds, trickle)
    baseline = _measure(backend, 0, seconds, trickle)
    return MemoryResult(backend, timers, seconds, ours, baseline)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.seconds)
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(run(backend, args.timers, args.seconds).line(), flush=True)


if __name__ == "__main__":
    main()
