"""Is crmflow doing its work? The database answers, and the loops that run flows (workers) and
deliver messages (dispatchers) are alive and complete their rounds.

Every loop writes a heartbeat row (`store.heartbeats`): when it beat, when a round last
completed, its last error, and whether it stopped cleanly. Read here, for all the processes on
the database:

- a loop is **alive** when it beat and completed a round within `STALE_AFTER`;
- **stuck** when it has not stopped but did not beat, or did not complete a round, for longer
  (a hung batch, a database that refuses its writes, a round failing again and again);
- **dead** when it is a loop of this very process whose thread ended without being stopped;
- **stopped** when it ended cleanly; a loop not heard of for `FORGET_AFTER` is no longer listed
  (a process killed outright never says it stopped).

The answer is "failing" (HTTP 503) when the database does not answer, when a loop of this
process (the worker of `crmflow serve`) is dead or stuck, or when every listed loop of a kind is
stuck (nobody does that kind of work any more). No loop at all is not a failure (an API-only
process, the workers not started yet): the answer says so, in `workers.status = "none"`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crmflow.services.context import Context
from crmflow.store import heartbeats
from crmflow.store.database import DatabaseError, Engine, read_connection
from crmflow.store.heartbeats import Heartbeat, read_heartbeats

__all__ = [
    "FORGET_AFTER",
    "KINDS",
    "REST_BEAT_EVERY",
    "STALE_AFTER",
    "HealthReport",
    "LocalLoop",
    "LoopMonitor",
    "check_health",
    "register_loop",
]

STALE_AFTER = timedelta(seconds=60)
BEAT_EVERY = 2.0  # seconds: a loop writes its heartbeat at most this often
# ... and a loop at rest (an idle worker, whose looks write it): at least this often, well within
# STALE_AFTER (`crmflow status` counts the workers seen in the last minute).
REST_BEAT_EVERY = 20.0
FORGET_AFTER = timedelta(minutes=10)
KINDS = ("worker", "dispatcher")

log = logging.getLogger("crmflow.health")


@dataclass
class LocalLoop:
    """A loop running in this process, as it tells the health check about itself."""

    name: str
    kind: str
    thread: threading.Thread
    stopped: bool = False
    error: str | None = None

    def ended(self, error: BaseException | None) -> None:
        """The loop returned: cleanly when `error` is None."""
        if error is None:
            self.stopped = True
        else:
            self.error = f"{type(error).__name__}: {error}"

    @property
    def dead(self) -> bool:
        return not self.stopped and (self.error is not None or not self.thread.is_alive())


# Per engine (one per database): a test suite opens many, and a loop of one database says
# nothing of another's. Weak keys: an engine disposed of takes its loops with it.
_LOCAL: weakref.WeakKeyDictionary[Engine, dict[str, LocalLoop]] = weakref.WeakKeyDictionary()
_LOCAL_LOCK = threading.Lock()


def register_loop(engine: Engine, *, name: str, kind: str) -> LocalLoop:
    """The calling thread runs the loop `name` of `kind` on `engine`'s database: the health
    check of this process watches it (and answers 503 if the thread dies)."""
    loop = LocalLoop(name, kind, threading.current_thread())
    with _LOCAL_LOCK:
        _LOCAL.setdefault(engine, {})[name] = loop
    return loop


class LoopMonitor:
    """What a long-running loop (a worker, a dispatcher) tells the health check: it started,
    each round it completed or the errors it met, and how it ended. Heartbeats are written at
    most every `beat_every` seconds (a write takes SQLite's write lock) and never raise: a
    database that refuses them is the loop's own business, and the missing beats say so.

    A loop at rest (an idle worker) may instead hand its heartbeat to the one statement it makes
    at each look (`rest_beat`, then `rest_look_done` or `rest_look_failed`): a look that
    answered is its round at rest, beaten every `rest_every` seconds."""

    def __init__(
        self,
        ctx: Context,
        *,
        name: str,
        kind: str,
        beat_every: float = BEAT_EVERY,
        rest_every: float = REST_BEAT_EVERY,
    ):
        self.ctx = ctx
        self.name = name
        self.kind = kind
        self.beat_every = beat_every
        self.rest_every = rest_every
        self._next_beat = 0.0  # time.monotonic() of the next heartbeat write
        self._last_beat = 0.0  # time.monotonic() of the last heartbeat written
        self._unwritten = False  # a round's outcome is not in the heartbeat yet
        self._last_success: datetime | None = None
        self._error: str | None = None  # the last error since the last heartbeat written
        self._degraded: tuple[str, ...] = ()  # the parts failing, as the last round said
        self._local: LocalLoop | None = None

    def started(self) -> None:
        self._local = register_loop(self.ctx.engine, name=self.name, kind=self.kind)
        self._write(
            lambda: heartbeats.started(
                self.ctx.engine, name=self.name, kind=self.kind, now=self.ctx.now()
            )
        )
        self._last_beat = time.monotonic()
        # The first round's outcome is written at once (then every `beat_every`): a worker just
        # started shows its first success, or why it failed, without waiting for the next beat.
        self._next_beat = 0.0

    def round_done(
        self, errors: Sequence[str] = (), *, degraded: Sequence[str] = (), write: bool = True
    ) -> None:
        """A round ended: without `errors` it completed. `degraded`: parts of the loop that are
        failing and backed off while the rest goes on (said in `last_error`, not a failure).
        `write=False`: the heartbeat, if due, goes with the loop's next look (`rest_beat`)."""
        now = self.ctx.now()
        if errors:
            self._error = "; ".join(errors)
        else:
            self._last_success = now
        self._degraded = tuple(degraded)
        self._unwritten = True
        if not write or time.monotonic() < self._next_beat:
            return
        beat = self._take(now, self._last_success)
        self._write(
            lambda: heartbeats.beat(
                self.ctx.engine,
                name=beat.name,
                kind=beat.kind,
                now=beat.now,
                success_at=beat.success_at,
                error=beat.error,
            )
        )

    def rest_beat(self) -> heartbeats.Beat | None:
        """The heartbeat a look at rest writes, when one is due: the last round's outcome not
        written yet (at most every `beat_every`), or `rest_every` seconds since the last beat.
        The look is the loop's round at rest: its success is the look's time."""
        at = time.monotonic()
        unwritten = self._unwritten and at >= self._next_beat
        if not unwritten and at < self._last_beat + self.rest_every:
            return None
        now = self.ctx.now()
        return self._take(now, now)

    def rest_look_done(self, beat: heartbeats.Beat | None) -> None:
        """A look at rest answered (and wrote `beat`)."""
        if beat is not None:
            self._last_success = beat.success_at

    def rest_look_failed(self, beat: heartbeats.Beat | None, error: str) -> None:
        """A look at rest failed: its `beat` was not written; the next round's goes."""
        log.warning("%s %s: a look at rest failed: %s", self.kind, self.name, error)
        if beat is not None:
            self._unwritten = True
            self._next_beat = 0.0

    def next_rest_beat_in(self) -> float:
        """Seconds until a look at rest is due to beat (0: now); a round's outcome not written
        yet waits for it (or for a look that comes sooner)."""
        return max(0.0, self._last_beat + self.rest_every - time.monotonic())

    def _take(self, now: datetime, success: datetime | None) -> heartbeats.Beat:
        """The heartbeat due now, counted as written (at most every `beat_every` from now)."""
        at = time.monotonic()
        self._next_beat = at + self.beat_every
        self._last_beat = at
        self._unwritten = False
        error = self._error or ("; ".join(self._degraded) if self._degraded else None)
        self._error = None
        return heartbeats.Beat(self.name, self.kind, now, success, error)

    def ended(self, error: BaseException | None = None) -> None:
        """The loop returned: cleanly, or because `error` escaped it."""
        if self._local is not None:
            self._local.ended(error)
        said = f"{type(error).__name__}: {error}" if error is not None else None
        self._write(
            lambda: heartbeats.stopped(
                self.ctx.engine,
                name=self.name,
                now=self.ctx.now(),
                success_at=self._last_success,
                error=said,
            )
        )

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except Exception as exc:
            log.warning("%s %s: heartbeat not written: %s", self.kind, self.name, exc)


def _local_loops(engine: Engine) -> dict[str, LocalLoop]:
    with _LOCAL_LOCK:
        return dict(_LOCAL.get(engine, {}))


@dataclass
class HealthReport:
    database: str
    database_ok: bool = True
    database_error: str | None = None
    loops: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok" if self.ok else "failing",
            "database": self.database,
        }
        if not self.database_ok:
            out["database_error"] = self.database_error
        out.update({f"{kind}s": self.kinds[kind] for kind in self.kinds})
        out["loops"] = self.loops
        if self.reasons:
            out["reasons"] = self.reasons
        return out


def _ago(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then is not None else None


def _state(beat: Heartbeat, local: LocalLoop | None, now: datetime) -> tuple[str, str]:
    """The loop's state and, when it is not alive, why."""
    bound = int(STALE_AFTER.total_seconds())
    if local is not None and local.dead:
        return "dead", f"its thread ended without being stopped ({local.error or 'no error'})"
    if beat.stopped_at is not None:
        return "stopped", ""
    if now - beat.beat_at > STALE_AFTER:
        return "stuck", f"no heartbeat for {_ago(now, beat.beat_at):.0f} s (bound {bound} s)"
    since = beat.last_success_at or beat.started_at
    if now - since > STALE_AFTER:
        what = (
            "no round completed since it started"
            if beat.last_success_at is None
            else (f"no round completed for {_ago(now, since):.0f} s")
        )
        error = f"; last error: {beat.last_error}" if beat.last_error else ""
        return "stuck", f"{what} (bound {bound} s){error}"
    return "alive", ""


def check_health(ctx: Context, *, now: datetime | None = None) -> HealthReport:
    """The database answers, and the loops are alive: a few reads, no write, no lock."""
    at = now or ctx.now()
    report = HealthReport(database=ctx.engine.dialect.name)
    try:
        # A read transaction: it takes no lock, so a long batch holding SQLite's write lock
        # does not hold up the health check.
        with read_connection(ctx.engine) as conn:
            beats = read_heartbeats(conn, since=at - FORGET_AFTER)
    except DatabaseError as exc:
        report.database_ok = False
        report.database_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        report.reasons.append(f"the database does not answer: {report.database_error}")
        return report
    local = _local_loops(ctx.engine)
    seen = {b.name for b in beats}
    for name, loop in local.items():
        if name not in seen and loop.dead:
            # Died before its first heartbeat was written (e.g. the database refused it).
            beats.append(Heartbeat(name, loop.kind, at, at, None, loop.error, None))
    states: dict[str, list[str]] = {}
    for beat in beats:
        mine = local.get(beat.name)
        state, why = _state(beat, mine, at)
        states.setdefault(beat.kind, []).append(state)
        report.loops.append(
            {
                "name": beat.name,
                "kind": beat.kind,
                "in_this_process": mine is not None,
                "state": state,
                "reason": why or None,
                "started_at": beat.started_at.isoformat(),
                "last_beat_seconds_ago": _ago(at, beat.beat_at),
                "last_success_seconds_ago": _ago(at, beat.last_success_at),
                "last_error": beat.last_error,
            }
        )
        if mine is not None and state in ("dead", "stuck"):
            report.reasons.append(f"this process's {beat.kind} {beat.name} is {state}: {why}")
    for kind in KINDS:
        found = states.get(kind, [])
        running = [s for s in found if s != "stopped"]
        alive = found.count("alive")
        if not running:
            status = "none"
            note = (
                f"no {kind} has run in the last {int(FORGET_AFTER.total_seconds() // 60)} "
                f"minutes"
                + (
                    ": flows do not run; start `crmflow serve` or `crmflow worker`"
                    if kind == "worker"
                    else ""
                )
            )
        elif alive:
            status, note = "ok", f"{alive} of {len(running)} alive"
        else:
            status, note = "failing", f"every {kind} is stuck or dead"
            reason = f"no {kind} is alive: {len(running)} stuck or dead"
            if not any(r.startswith(f"this process's {kind}") for r in report.reasons):
                report.reasons.append(reason)
        report.kinds[kind] = {"status": status, "alive": alive, "note": note}
    return report
