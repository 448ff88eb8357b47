"""How soon a `crmflow worker` in a process of its own hears of new work, and what it costs at rest.

A worker process (`Worker.run()`, as `crmflow worker --no-dispatch` runs it) waits on a fresh
database with one running flow whose trigger is `record_created`. This process then creates a
record (as the API or the CLI would, in another process than the worker) every so often, at a
random moment of the worker's idle sleep, and measures the time from the commit to the flow's
history line on the record (read every 2 ms): the start latency. Then nothing happens for
`--idle` seconds, and the worker's process counts the SQL statements it made in that time (an
event on its engine) and its wake-ups (each end of its idle sleep: its due time, the bounded
sleep's end, a commit seen, a signal): statements per minute at rest, and per wake-up, against
the aim of at most one (issue 14: a look that asks whether there is work and beats the
heartbeat in one statement; the round only when there is work).

Both are measured twice in the same run: as `crmflow worker` runs now ("signal": on SQLite it
watches the database's commits with PRAGMA data_version, on PostgreSQL it LISTENs), and with
the signal from other processes taken away ("poll": the worker finds new work at its next idle
look, at most MAX_IDLE = 5 s later, what a SQLite worker did before). The SQLite watch's own
reads of the pragma are not SQL statements on a table and are counted apart (`pragma/min`).

The dispatcher too (issue 14, `--what dispatcher|both`): `crmflow dispatch` and `crmflow worker`
(its worker and the dispatcher beside it) run as they are, in a process of their own that counts
its statements by thread (the dispatchers' threads apart) and the dispatcher's wake-ups. This
process writes an outbox email (as the API would) at a random moment of their rest and measures
the time from its commit to the mail catcher keeping it; then `--idle` seconds at rest are
counted. `crmflow dispatch` is measured also with its signal taken away ("poll": it looks every
MAX_IDLE = 5 s, as it did before), for the ratio.

    python -m bench.bench_wakeup [--samples N] [--idle S] [--runs N]
                                 [--backend sqlite|postgres|both] [--what worker|dispatcher|both]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import fresh_database
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records
from crmflow.services.context import Context
from crmflow.services.users import actor_by_username
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.schema import outbox, record_history, worker_heartbeats

__all__ = ["WakeupResult", "cli_lines", "email_row", "main", "message_went", "run"]

AIM_LATENCY = 1.0  # seconds, the median start latency across processes
AIM_PER_WAKEUP = 1.0  # statements per wake-up of a worker at rest, at most
FLOW = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
owner: system
triggers: [{type: record_created}]
steps:
  - key: hello
    actions:
      - type: history
        message: "Welcomed {{ record.last_name }}"
"""
MODES = ("poll", "signal")
# The dispatcher's measures: (command, mode); a dispatcher at rest makes at most this many
# statements a wake-up (a look: the next due time).
CLI_RUNS = (("dispatch", "poll"), ("dispatch", "signal"), ("worker", "signal"))


@dataclass
class ModeResult:
    latencies: list[float] = field(default_factory=list)  # seconds, every sample of every run
    queries_per_minute: list[float] = field(default_factory=list)  # one per run
    pragma_per_minute: list[float] = field(default_factory=list)
    wakeups_per_minute: list[float] = field(default_factory=list)
    per_wakeup: list[float] = field(default_factory=list)  # statements per wake-up, per run


@dataclass
class WakeupResult:
    backend: str
    samples: int
    idle: float
    modes: dict[str, ModeResult]

    def line(self) -> str:
        poll, sig = self.modes["poll"], self.modes["signal"]
        before, after = statistics.median(poll.latencies), statistics.median(sig.latencies)
        verdict = "ok" if after <= AIM_LATENCY else "ABOVE AIM"
        return (
            f"{'start latency, other process':<28} {self.backend:<8} samples={len(sig.latencies)}  "
            f"ratio={after / before:5.3f}x of polling (aim median <= {AIM_LATENCY:g} s, "
            f"{verdict})  median signal={after * 1000:.0f} ms (max {max(sig.latencies):.3f} s) "
            f"poll={before * 1000:.0f} ms (max {max(poll.latencies):.3f} s)\n"
            f"{'  idle worker':<28} {self.backend:<8} over {self.idle:.0f} s: "
            f"signal {statistics.median(sig.queries_per_minute):.1f} statements/min "
            f"(+{statistics.median(sig.pragma_per_minute):.0f} PRAGMA data_version/min), "
            f"poll {statistics.median(poll.queries_per_minute):.1f} statements/min\n"
            f"{'  per wake-up at rest':<28} {self.backend:<8} "
            + "  ".join(
                f"{mode} {statistics.median(m.per_wakeup):.2f} statements/wake-up "
                f"({statistics.median(m.wakeups_per_minute):.1f} wake-ups/min, max "
                f"{max(m.per_wakeup):.2f}: {_verdict(max(m.per_wakeup))})"
                for mode, m in (("signal", sig), ("poll", poll))
            )
            + f" (aim <= {AIM_PER_WAKEUP:g})"
        )


def _verdict(per_wakeup: float) -> str:
    return "ok" if per_wakeup <= AIM_PER_WAKEUP else "ABOVE AIM"


def _child(url: str, mode: str, out: str) -> None:
    """The worker's process: run until SIGTERM, then write when each statement was made."""
    import crmflow.worker as worker_module  # noqa: PLC0415 - the child's own set-up
    from crmflow.settings import Settings  # noqa: PLC0415
    from crmflow.store import wakeups  # noqa: PLC0415

    watchers: list[wakeups.CommitWatcher] = []
    if mode == "poll":

        def refused(*_: Any, **__: Any) -> Any:
            raise RuntimeError("no signal from other processes (the benchmark's poll mode)")

        # The names the worker's module looks up when its loop starts.
        worker_module.__dict__["watches_commits"] = lambda _engine: False
        worker_module.__dict__["WorkListener"] = refused
    else:
        made = wakeups.CommitWatcher

        def kept(*args: Any, **kwargs: Any) -> wakeups.CommitWatcher:
            watcher = made(*args, **kwargs)
            watchers.append(watcher)
            return watcher

        worker_module.__dict__["CommitWatcher"] = kept
    ctx = Context.from_settings(Settings(database_url=url))
    stamps: list[float] = []
    sa.event.listen(ctx.engine, "before_cursor_execute", lambda *_: stamps.append(time.time()))
    worker = worker_module.Worker(ctx, name=f"bench-{mode}")
    woke: list[float] = []  # when each idle sleep ended
    nap = worker._nap

    def timed_nap(seconds: float) -> bool:
        go_on = nap(seconds)
        woke.append(time.time())
        return go_on

    worker._nap = timed_nap  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    reads = watchers[0].reads if watchers else 0
    Path(out).write_text(json.dumps({"stamps": stamps, "pragma_reads": reads, "woke": woke}))


def _cli_child(url: str, out: str, command: str, mode: str) -> None:
    """`crmflow <command>` in this process until SIGTERM; then when each statement was made and
    by which thread, and when the dispatchers' and the worker's idle sleeps ended."""
    import threading  # noqa: PLC0415 - the child's own set-up

    import crmflow.delivery.dispatcher as dispatcher_module  # noqa: PLC0415
    from crmflow.cli.main import app  # noqa: PLC0415
    from crmflow.worker import Worker  # noqa: PLC0415

    os.environ["CRMFLOW_DATABASE_URL"] = url
    if mode == "poll":

        def refused(*_: Any, **__: Any) -> Any:
            raise RuntimeError("no signal from other processes (the benchmark's poll mode)")

        dispatcher_module.__dict__["OutboxWatch"] = refused
    stamps: list[tuple[float, str]] = []

    def made(*_: Any) -> None:
        stamps.append((time.time(), _thread_kind(threading.current_thread().name)))

    sa.event.listen(sa.Engine, "before_cursor_execute", made)
    woke: list[tuple[float, str]] = []
    ready = Path(out + ".ready")
    for cls, kind in ((dispatcher_module.Dispatcher, "dispatcher"), (Worker, "worker")):

        def timed_nap(self: Any, seconds: float, _nap: Any = cls._nap, _kind: str = kind) -> bool:
            if _kind == "dispatcher":
                ready.touch()  # at rest
            go_on = bool(_nap(self, seconds))
            woke.append((time.time(), _kind))
            return go_on

        cls._nap = timed_nap  # type: ignore[method-assign]
    try:
        app(args=[command], standalone_mode=False)
    finally:
        Path(out).write_text(json.dumps({"stamps": stamps, "woke": woke}))


def _thread_kind(name: str) -> str:
    """Whose statement: the dispatchers' threads (`crmflow-dispatcher...`, their writers), the
    worker's (the main thread), or another (the background jobs' runner, a listener)."""
    if "dispatch" in name:
        return "dispatcher"
    return "worker" if name == "MainThread" else "other"


def email_row(key: str, now: datetime) -> dict[str, Any]:
    """An outbox email as the API writes one (a test email, a task's): due `now`."""
    from crmflow.engine.commands import EmailPayload, message_id  # noqa: PLC0415

    payload = EmailPayload(
        message_id=message_id(key), to=("a@example.org",), subject=key, body="Hi"
    )
    return {
        "enrollment_id": 1,
        "step_key": "mail",
        "step_run": 1,
        "idempotency_key": key,
        "kind": "email",
        "payload": payload.model_dump(mode="json"),
        "status": "pending",
        "not_before": now,
        "attempts": 0,
        "created_at": now,
    }


def message_went(ctx: Context, key: str) -> bool:
    with ctx.engine.connect() as conn:
        status = conn.execute(
            sa.select(outbox.c.status).where(outbox.c.idempotency_key == key)
        ).scalar()
    return status in ("caught", "delivered")


@dataclass
class CliResult:
    latencies: list[float] = field(default_factory=list)
    per_minute: dict[str, list[float]] = field(default_factory=dict)  # by thread kind, per run
    wakeups_per_minute: list[float] = field(default_factory=list)  # the dispatchers'
    per_wakeup: list[float] = field(default_factory=list)  # the dispatchers', per run


def _cli_one(backend: str, command: str, mode: str, idle: float, into: CliResult) -> None:
    with fresh_database(backend) as ctx, tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "child.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_wakeup", "--cli-child", ctx.settings.database_url,
             out, command, mode],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300  # its imports, on a loaded machine
            while not Path(out + ".ready").exists():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"crmflow {command} did not come to rest")
                time.sleep(0.05)
            rng = random.Random(14)
            for i in range(3):
                time.sleep(rng.uniform(0.5, 2.0))  # somewhere in its rest
                key = f"bench-wakeup:{i}"
                with ctx.engine.begin() as conn:
                    insert_ignoring_duplicates(conn, [email_row(key, datetime.now(UTC))])
                written = time.perf_counter()
                while not message_went(ctx, key):
                    if time.perf_counter() - written > 60:
                        raise RuntimeError(f"{key} not delivered within 60 s")
                    time.sleep(0.002)
                into.latencies.append(time.perf_counter() - written)
            time.sleep(1.0)
            start = time.time()
            time.sleep(idle)
            end = time.time()
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
        made = json.loads(Path(out).read_text())
        minutes = (end - start) / 60
        counts = {
            kind: sum(1 for at, k in made["stamps"] if start <= at < end and k == kind)
            for kind in ("dispatcher", "worker", "other")
        }
        for kind, count in counts.items():
            into.per_minute.setdefault(kind, []).append(count / minutes)
        woke = sum(1 for at, k in made["woke"] if start <= at < end and k == "dispatcher")
        into.wakeups_per_minute.append(woke / minutes)
        # From the counts (a per-minute rate times the minutes came out at 1.0000000002).
        into.per_wakeup.append(counts["dispatcher"] / max(woke, 1))


def cli_lines(backend: str, idle: float, runs: int) -> str:
    """`runs` times each of CLI_RUNS; a line each, the ratio to polling on the first."""
    results = {run: CliResult() for run in CLI_RUNS}
    for _ in range(runs):
        for command, mode in CLI_RUNS:
            _cli_one(backend, command, mode, idle, results[(command, mode)])
    polled = statistics.median(results[("dispatch", "poll")].per_minute["dispatcher"])
    lines = []
    for (command, mode), r in results.items():
        per_min = statistics.median(r.per_minute["dispatcher"])
        worst = max(r.per_wakeup)
        ratio = per_min / polled if polled else float("nan")
        lines.append(
            f"{'  dispatcher at rest':<28} {backend:<8} crmflow {command:<8} {mode:<6} "
            f"dispatcher {per_min:.1f} statements/min = {ratio:.3f}x of polling "
            f"({statistics.median(r.wakeups_per_minute):.1f} wake-ups/min, "
            f"{statistics.median(r.per_wakeup):.2f} statements/wake-up, max {worst:.2f}: "
            f"{_verdict(worst)}, aim <= {AIM_PER_WAKEUP:g}); its worker "
            f"{statistics.median(r.per_minute['worker']):.1f}/min, other threads (jobs) "
            f"{statistics.median(r.per_minute['other']):.1f}/min over {idle:.0f} s; "
            f"a message from another process caught in median "
            f"{statistics.median(r.latencies) * 1000:.0f} ms (max {max(r.latencies):.3f} s, "
            f"aim <= {AIM_LATENCY:g} s)"
        )
    return "\n".join(lines)


def _history_seen(ctx: Context, record_id: int) -> bool:
    with ctx.engine.connect() as conn:
        found = conn.execute(
            sa.select(record_history.c.id).where(record_history.c.record_id == record_id)
        ).first()
    return found is not None


def _one(backend: str, mode: str, samples: int, idle: float, into: ModeResult) -> None:
    with fresh_database(backend) as ctx, tempfile.TemporaryDirectory() as tmp:
        ctx.clock = lambda: datetime.now(UTC) - timedelta(seconds=1)
        admin = actor_by_username(ctx, "system")
        flows.create_flow(ctx, admin, FLOW)
        flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
        out = str(Path(tmp) / "child.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_wakeup", "--child", ctx.settings.database_url,
             mode, out],
            env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with ctx.engine.connect() as conn:
                    if conn.execute(
                        sa.select(sa.func.count()).select_from(worker_heartbeats)
                    ).scalar():
                        break
                time.sleep(0.05)
            rng = random.Random(14)
            for i in range(samples):
                time.sleep(rng.uniform(0.5, 2.0))  # the worker sleeps, somewhere in its idle wait
                rid = records.create_record(ctx, admin, "contact", {"last_name": f"N{i}"}).id
                created = time.perf_counter()
                while not _history_seen(ctx, rid):
                    if time.perf_counter() - created > 30:
                        raise RuntimeError(f"record {rid} not moved within 30 s")
                    time.sleep(0.002)
                into.latencies.append(time.perf_counter() - created)
            time.sleep(1.0)  # the last sample's rounds are over
            start = time.time()
            time.sleep(idle)
            end = time.time()
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
        made = json.loads(Path(out).read_text())
        at_rest = sum(1 for s in made["stamps"] if start <= s < end)
        into.queries_per_minute.append(at_rest * 60 / (end - start))
        wakeups = sum(1 for s in made["woke"] if start <= s < end)
        into.wakeups_per_minute.append(wakeups * 60 / (end - start))
        into.per_wakeup.append(at_rest / max(wakeups, 1))
        total = made["stamps"][-1] - made["stamps"][0] if made["stamps"] else 1.0
        into.pragma_per_minute.append(made["pragma_reads"] * 60 / max(total, 1.0))


def run(backend: str, samples: int, idle: float, runs: int = 1) -> WakeupResult:
    """`runs` times: a worker process with the signal taken away, then one as it runs."""
    result = WakeupResult(backend, samples, idle, {m: ModeResult() for m in MODES})
    for _ in range(runs):
        for mode in MODES:
            _one(backend, mode, samples, idle, result.modes[mode])
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(*argv[1:4])
        return
    if argv[:1] == ["--cli-child"]:
        _cli_child(*argv[1:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=5, help="records created per run")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds at rest measured")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--what", choices=["worker", "dispatcher", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if args.what in ("worker", "both"):
            print(run(backend, args.samples, args.idle, args.runs).line(), flush=True)
        if args.what in ("dispatcher", "both"):
            print(cli_lines(backend, args.idle, args.runs), flush=True)


if __name__ == "__main__":
    main()
