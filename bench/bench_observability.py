"""What watching costs: bench_steps' 5-step flow (a wait between the first step and the other
four) run by `run_once` with the metrics and the run keys of the logs as shipped, against the
same run with those calls replaced by no-ops, in the same process, alternating (each side
first every other run), each run on a fresh database.

Measured: the runner's per-batch tally (`metrics.observe_moved`), the failed-step log pass
(`logs.log_failed_steps`), the per-run context variable (`logs.in_run`) and the batch's
duration and size (`metrics.observe_batch`). Printed: the medians and their ratio (1.00: free).

    python -m bench.bench_observability [--rows N] [--runs N] [--backend sqlite|postgres] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from bench.bench_steps import BATCH, START, create_flow, enroll_all, fill_contacts
from bench.common import fresh_database, timed
from crmflow import worker
from crmflow.runner import batch
from crmflow.worker import run_once

__all__ = ["main", "run"]

# --cpu: the process's CPU time instead of the wall time (SQLite works in this process; on a
# loaded machine the CPU time is the steadier figure).
_CPU: list[bool] = []


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


@contextmanager
def _unobserved() -> Iterator[None]:
    """The observability calls of the runner and the worker replaced by no-ops."""
    names = [(batch, n) for n in ("observe_moved", "log_failed_steps", "in_run", "left_run")]
    saved = [(module, n, getattr(module, n)) for module, n in [*names, (worker, "observe_batch")]]
    for module, name, _ in saved:
        setattr(module, name, _nothing)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def _once(backend: str, rows: int) -> float:
    with fresh_database(backend) as ctx:
        ctx.clock = lambda: START
        fill_contacts(ctx, rows)
        enroll_all(ctx, create_flow(ctx))

        def go() -> None:
            first = run_once(ctx, now=START, limit=BATCH)
            second = run_once(ctx, now=START + timedelta(days=1), limit=BATCH)
            if first != rows or second != rows:
                raise RuntimeError(f"moved {first} then {second}, expected {rows} twice")

        cpu = time.process_time()
        wall = timed(go)
        return wall if not _CPU else time.process_time() - cpu


def run(backend: str, rows: int, runs: int) -> tuple[list[float], list[float]]:
    watched: list[float] = []
    bare: list[float] = []
    for i in range(runs):
        # Each goes first every other run: the second of a pair may pay for the first's
        # leftovers (garbage, the file cache), which must not count for one side only.
        if i % 2:
            with _unobserved():
                bare.append(_once(backend, rows))
        watched.append(_once(backend, rows))
        if not i % 2:
            with _unobserved():
                bare.append(_once(backend, rows))
    return watched, bare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cpu", action="store_true", help="CPU time, not wall time (SQLite)")
    args = parser.parse_args(argv)
    _CPU[:] = [True] if args.cpu else []
    watched, bare = run(args.backend, args.rows, args.runs)
    ours, base = statistics.median(watched), statistics.median(bare)
    steps = 5 * args.rows

    def line(what: str, s: float) -> str:
        return f"  {what:<28} {s:7.3f} s  {steps / s:9,.0f} step runs/s"

    load = os.getloadavg()[0]
    clock = "CPU" if args.cpu else "wall"
    print(
        f"observability, {args.backend}, {args.rows} records x 5 steps, {clock} time, "
        f"median of {args.runs}"
    )
    print(line("with metrics and run keys", ours))
    print(line("without (no-ops)", base))
    print(
        f"  ratio {ours / base:.3f}  ({(ours - base) / steps * 1e6:+.2f} us per step run; "
        f"load average {load:.1f})"
    )


if __name__ == "__main__":
    main()
