"""The worker: claim due enrollments in batches -> run the engine -> write the results -> commit.

Any number of workers may run against one PostgreSQL database (claims use SKIP LOCKED); on
SQLite the single writer serialises them. On PostgreSQL a claim carries a lease: a worker killed
mid-batch leaves rows that another worker takes once the lease has expired, and since the
batch's writes are one transaction that never committed, nothing of it happened; step-run
numbers and outbox idempotency keys make the retry produce the very same rows. On SQLite the
batch is found and moved in one transaction, so a killed worker leaves nothing claimed.

Idle workers sleep until the next due time and wake at once when `Worker.wake()` is called (the
in-process signal used by `crmflow serve`), on PostgreSQL when a `NOTIFY crmflow_due` arrives,
and on SQLite when another connection commits (`CommitWatcher`, any process). The sleep is
bounded all the same (MAX_IDLE, or LISTENING_MAX_IDLE while the signal from other processes
works), so that work is found even if a signal was lost.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from crmflow.context import Actor, Context
from crmflow.metrics import observe_batch
from crmflow.runner import Moved, evaluate_batch, move_batch
from crmflow.services.deadlines import DeadlineCursor, process_deadlines
from crmflow.services.health import LoopMonitor
from crmflow.services.lifecycle import archive_drained_flows, fire_lifecycle_schedule
from crmflow.services.retention import PruneCursor, prune
from crmflow.services.triggers import process_triggers
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.database import OperationalError, data_version, is_postgres, read_transaction
from crmflow.store.wakeups import (
    NOTIFY_CHANNEL,
    CommitWatcher,
    WorkListener,
    WorkSigns,
    next_trigger_at,
    watches_commits,
    work_signs,
)

__all__ = ["BatchResult", "Worker", "next_trigger_at", "run_batch", "run_once"]

log = logging.getLogger("crmflow.worker")

DEFAULT_BATCH = 500
DEFAULT_LEASE = timedelta(seconds=60)
MAX_IDLE = 5.0  # seconds: how long an idle worker sleeps at most before looking again
# ... while other processes' work wakes it (LISTEN on PostgreSQL, CommitWatcher on SQLite): the
# look is then only a safety net, often enough that a worker at rest beats its heartbeat
# twice within health.STALE_AFTER.
LISTENING_MAX_IDLE = 20.0
TRIGGERS_EVERY = 0.25  # seconds: how often a busy worker reads the change feed and schedules
DEADLINES_EVERY = 30.0  # seconds: how often a worker sends the deadline notices due
PRUNE_EVERY = 300.0  # seconds: how often a worker prunes old history (docs/retention.md)
PRUNE_TIME_LIMIT = 0.5  # seconds of pruning per round; a pass that stopped goes on next round
DEADLINES_TIME_LIMIT = 5.0  # seconds: a deadline pass stops there; the next one goes on
_MAX_ROUNDS = 10_000  # run_once: a guard against a flow that keeps itself due forever
ERROR_BACKOFF = 1.0  # seconds: the wait after a round that failed, doubling while they fail
MAX_ERROR_BACKOFF = 30.0
PART_FIRST_RETRY = 5.0  # seconds: the change feed failed whole: retried after this, doubling
PART_MAX_RETRY = 300.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class BatchResult:
    claimed: int
    moved: int
    step_runs: int
    deferred: int = 0  # claimed, but left due for the next batch: the time limit was reached


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_batch(
    ctx: Context,
    system: Actor,
    *,
    now: datetime,
    owner: str,
    limit: int = DEFAULT_BATCH,
    lease: timedelta = DEFAULT_LEASE,
) -> BatchResult:
    """Claim up to `limit` enrollments due at `now`, move them, and commit: one batch.

    On PostgreSQL the claim is a transaction of its own that leases the rows to `owner`, so
    that other workers pass them over while this one works, and take them over if it dies. On
    SQLite one writer holds the database's lock at a time: the batch is found and its
    templates and conditions evaluated on a read snapshot, without the lock (`evaluate_batch`),
    then moved in one write transaction that reuses every outcome whose enrollment and record
    are unchanged; a worker that dies leaves nothing behind, so no lease is needed.

    A batch stops taking enrollments once settings.batch_time_limit_ms has passed, commits what
    it moved, and leaves the rest due for the next batch. The write transaction (on SQLite, the
    write lock) lasts at most that limit plus one record's evaluation (each template and
    condition capped by action_time_limit_ms) plus the writes; on SQLite it evaluates only what
    changed since the snapshot (and the rare start that writes as it enters), so it mostly just
    writes."""
    limit_seconds = ctx.settings.batch_time_limit_ms / 1000
    if not is_postgres(ctx.engine):
        # One connection reads, then writes: SQLite's data_version tells whether anything was
        # committed in between.
        with _collector_paused(), ctx.engine.connect() as conn:
            with read_transaction(conn):
                ids = repo.due_ids(conn, now=now, limit=limit)
                if not ids:
                    return BatchResult(0, 0, 0)
                due = repo.lock(conn, ids, owner=None)
                deadline = time.monotonic() + limit_seconds
                evaluation = evaluate_batch(conn, ctx, due, now=now, deadline=deadline)
                read_at = data_version(conn)
            with conn.begin():
                deadline = time.monotonic() + limit_seconds
                if data_version(conn) == read_at:
                    rows = evaluation.rows
                    evaluation = replace(evaluation, unchanged=True)
                else:
                    # An enrollment another writer changed since the snapshot (a person
                    # cancelled it, another worker moved it) is left for the next batch to
                    # find, if still due; the records and flows are read again.
                    as_read = {r.id: r for r in evaluation.rows}
                    locked = repo.lock(conn, list(as_read), owner=None)
                    rows = [r for r in locked if r == as_read[r.id]]
                moved = move_batch(
                    conn, ctx, system, rows, now=now, deadline=deadline, evaluation=evaluation
                )
        return _result(ids, moved, left=len(ids) - len(rows))
    ids = repo.claim(ctx.engine, now=now, owner=owner, limit=limit, lease=lease)
    if not ids:
        return BatchResult(0, 0, 0)
    with _collector_paused(), ctx.engine.begin() as conn:
        deadline = time.monotonic() + limit_seconds
        rows = repo.lock(conn, ids, owner=owner)
        moved = move_batch(conn, ctx, system, rows, now=now, deadline=deadline)
    return _result(ids, moved)


def _result(ids: list[int], moved: Moved, *, left: int = 0) -> BatchResult:
    deferred = left + len(moved.deferred)
    return BatchResult(len(ids), len(moved.outcomes), moved.step_runs, deferred)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch runs.

    A batch builds some hundred thousand objects (rows, states, logs, commands) that all live
    until it commits, so the collector, which runs every 700 new objects, finds nothing to free
    and rescans them again and again: a fifth of the worker's time (bench_steps, SQLite). What
    the batch leaves behind is collected as usual once it is over; its size is bounded by the
    batch size."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _observed_batch(
    ctx: Context,
    system: Actor,
    *,
    now: datetime,
    owner: str,
    limit: int,
    lease: timedelta = DEFAULT_LEASE,
) -> BatchResult:
    """`run_batch`, and when it claimed runs, its duration and size counted (`/metrics`) and
    a debug line."""
    started = time.perf_counter()
    result = run_batch(ctx, system, now=now, owner=owner, limit=limit, lease=lease)
    if result.claimed:
        _batch_done(owner, result, time.perf_counter() - started)
    return result


def _batch_done(worker: str, result: BatchResult, seconds: float) -> None:
    observe_batch(seconds, result.claimed)
    log.debug(
        "batch: %d claimed, %d moved, %d step runs, %d deferred in %.3f s",
        result.claimed,
        result.moved,
        result.step_runs,
        result.deferred,
        seconds,
        extra={
            "worker": worker,
            "claimed": result.claimed,
            "moved": result.moved,
            "step_runs": result.step_runs,
            "deferred": result.deferred,
            "seconds": round(seconds, 4),
        },
    )


def run_once(
    ctx: Context, *, now: datetime | None = None, owner: str = "run-once", limit: int = 500
) -> int:
    """Process everything due at `now` (default: the context's clock), batch after batch, and
    return how many enrollments moved. What tests and `crmflow worker --once` use."""
    at = now or ctx.now()
    system = ensure_system_user(ctx)
    # start_at / archive_at first: a flow archived at `at` runs nothing at `at`.
    fire_lifecycle_schedule(ctx, now=at)
    total = 0
    for _ in range(_MAX_ROUNDS):
        # Triggers first, every round: records that enter are then moved by the batches, and
        # the record changes those batches make may trigger flows in turn.
        triggered = process_triggers(ctx, now=at)
        result = _observed_batch(ctx, system, now=at, owner=owner, limit=limit)
        total += result.moved
        if result.claimed == 0 and triggered == 0:
            break
    # Reminders, late notices and escalations due at `at` (an automatic decision moves its run).
    process_deadlines(ctx, now=at)
    archive_drained_flows(ctx)
    return total


class Worker:
    """A worker loop; `stop()` ends it after the current batch (SIGTERM / SIGINT call it)."""

    def __init__(
        self,
        ctx: Context,
        *,
        batch_size: int = DEFAULT_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        max_idle: float | None = None,
        name: str | None = None,
        error_backoff: float = ERROR_BACKOFF,
        on_moved: Callable[[], None] | None = None,
    ) -> None:
        """`on_moved` is called after each batch that moved enrollments (the dispatcher's
        `wake`: the messages they wrote are delivered at once). `max_idle`: the longest idle
        sleep; by default MAX_IDLE, or LISTENING_MAX_IDLE while other processes' work wakes
        the worker (`run()` sets it up)."""
        self.ctx = ctx
        self.on_moved = on_moved
        self.batch_size = batch_size
        self.lease = lease
        self._max_idle = max_idle
        self.max_idle = MAX_IDLE if max_idle is None else max_idle
        self.name = name or worker_name()
        self.error_backoff = error_backoff
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: stop sleeping (to run a round, or to look)
        self._called = threading.Event()  # set: `wake()` was called (not only a commit seen)
        self.moved = 0
        self.rounds = 0  # rounds completed without an error (tests and health watch it)
        self._failed_rounds = 0  # in a row: how long to back off
        self._system: Actor | None = None
        self._triggers_at = 0.0  # time.monotonic() of the next look at triggers
        self._deadlines_at = 0.0  # time.monotonic() of the next deadline pass
        self._deadline_cursor = DeadlineCursor()  # where the next pass goes on from
        self._prune_at = time.monotonic() + 60.0  # the first pruning pass, a minute in
        self._prune_cursor = PruneCursor()  # where a pruning pass that stopped goes on from
        self._lifecycle_at: datetime | None = None  # when to look at flow schedules again
        self._scheduled_at: datetime | None = None  # the next start_at / archive_at
        self._scheduled_seen: datetime | None = None  # ... as the last idle look read it
        # A part of process_triggers that failed whole (the change feed): its failures in a
        # row, when (time.monotonic()) it is tried again, and its last error.
        self._part_failures: dict[str, int] = {}
        self._part_retry: dict[str, float] = {}
        self._part_errors: dict[str, str] = {}

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """New work may be due now: stop sleeping."""
        self._called.set()
        self._wake.set()

    def _commit_seen(self) -> None:
        """Another connection committed (`CommitWatcher`): look whether it brought work."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Loop until `stop()`. Nothing that goes wrong in a round ends the loop: each part
        (flow schedules, triggers, the batch) is caught on its own, logged, noted in the
        heartbeat, and the next round comes after a short backoff (a timed trigger that fails
        is marked failing by itself, and a record that fails fails alone)."""
        monitor = LoopMonitor(self.ctx, name=self.name, kind="worker")
        monitor.started()
        listener = self._listener()
        log.info("worker %s started", self.name)
        escaped: BaseException | None = None
        try:
            while not self._stop.is_set():
                self._round(monitor)
        except BaseException as exc:  # only what no round can catch (e.g. KeyboardInterrupt)
            escaped = exc
            log.critical("worker %s died: %s", self.name, exc, exc_info=True)
            raise
        finally:
            if listener is not None:
                listener.close()
            monitor.ended(escaped)
            log.info("worker %s stopped after moving %d enrollments", self.name, self.moved)

    def _listener(self) -> WorkListener | CommitWatcher | None:
        """What wakes this worker when another process adds work: LISTEN on PostgreSQL, a
        watch of SQLite's commits; while it is there, the idle sleep is LISTENING_MAX_IDLE
        (unless `max_idle` was given)."""
        listener: WorkListener | CommitWatcher | None = None
        try:
            if is_postgres(self.ctx.engine):
                listener = WorkListener(self.ctx.engine, self.wake)
            elif watches_commits(self.ctx.engine):
                listener = CommitWatcher(self.ctx.engine, self._commit_seen)
        except Exception as exc:  # the bounded idle sleep finds the work without it
            how = f"LISTEN {NOTIFY_CHANNEL}" if is_postgres(self.ctx.engine) else "commit watch"
            log.warning("worker %s: %s unavailable: %s", self.name, how, exc)
        if listener is not None and self._max_idle is None:
            self.max_idle = LISTENING_MAX_IDLE
        return listener

    def _round(self, monitor: LoopMonitor) -> None:
        errors: list[str] = []
        self._guarded("flow schedules", self._flow_schedules, errors)
        self._guarded("triggers", self._triggers, errors)
        result = self._guarded("batch", self._batch, errors)
        self._guarded("deadlines", self._deadlines, errors)
        self._guarded("retention", self._prune, errors)
        if result is not None:
            self.moved += result.moved
            if result.moved and self.on_moved is not None:
                self.on_moved()
        monitor.round_done(errors, degraded=list(self._part_errors.values()))
        if errors:
            self._failed_rounds += 1
            wait = self.error_backoff * 2 ** min(self._failed_rounds - 1, 10)
            self._sleep(min(wait, MAX_ERROR_BACKOFF))
            return
        self._failed_rounds = 0
        self.rounds += 1
        if result is not None and result.claimed == 0:
            self._sleep(self._idle_seconds())

    def _guarded(self, part: str, run: Callable[[], _T], errors: list[str]) -> _T | None:
        """`run()`, or None when it raised: the error is logged and added to `errors`."""
        try:
            return run()
        except OperationalError as exc:
            # A database that went away for a moment: the lease protects the batch.
            reason = f"database error: {str(exc).splitlines()[0]}"
            log.warning(
                "worker %s: database error in %s, retrying: %s",
                self.name,
                part,
                exc,
                extra={"worker": self.name, "part": part, "reason": reason},
            )
            errors.append(f"{part}: {reason}")
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error(
                "worker %s: %s failed: %s",
                self.name,
                part,
                exc,
                exc_info=True,
                extra={"worker": self.name, "part": part, "reason": reason},
            )
            errors.append(f"{part}: {reason}")
        return None

    def _batch(self) -> BatchResult:
        if self._system is None:
            self._system = ensure_system_user(self.ctx)
        return _observed_batch(
            self.ctx,
            self._system,
            now=self.ctx.now(),
            owner=self.name,
            limit=self.batch_size,
            lease=self.lease,
        )

    def _flow_schedules(self) -> None:
        """start_at / archive_at and auto-archive of drained flows: at most once a second (they
        are a few queries, not worth one per batch), and at once when a start_at/archive_at
        comes."""
        now = self.ctx.now()
        if self._lifecycle_at is not None and now < self._lifecycle_at:
            return
        scheduled = fire_lifecycle_schedule(self.ctx, now=now)
        archive_drained_flows(self.ctx)
        # One that is already past could not be done (retried each second): not a reason to spin.
        upcoming = scheduled.next_at if scheduled.next_at and scheduled.next_at > now else None
        self._scheduled_at = upcoming
        soon = now + timedelta(seconds=1)
        self._lifecycle_at = min(soon, upcoming) if upcoming else soon

    def _prune(self) -> None:
        """Old history pruned (`services.retention`): a pass every PRUNE_EVERY seconds, at most
        PRUNE_TIME_LIMIT seconds of small batches per round until it is done."""
        at = time.monotonic()
        if at < self._prune_at:
            return
        # A pass that fails is tried again after PRUNE_EVERY, not at every round (the failure
        # is logged and shown in health like any part's): pruning never holds up the batches.
        self._prune_at = at + PRUNE_EVERY
        result = prune(self.ctx, time_limit=PRUNE_TIME_LIMIT, cursor=self._prune_cursor)
        self._prune_at = at + PRUNE_EVERY if result.finished or result.busy else 0.0
        if result.total:
            gone = ", ".join(f"{n} {kind}" for kind, n in result.deleted.items() if n)
            log.info("worker %s pruned %s", self.name, gone)

    def _deadlines(self) -> None:
        """The deadline notices due (`services.deadlines`): every DEADLINES_EVERY seconds, a
        pass of at most DEADLINES_TIME_LIMIT seconds (reminders are counted in days), going on
        from where the last one stopped."""
        at = time.monotonic()
        if at < self._deadlines_at:
            return
        self._deadlines_at = at + DEADLINES_EVERY
        sent = process_deadlines(
            self.ctx,
            now=self.ctx.now(),
            time_limit=DEADLINES_TIME_LIMIT,
            cursor=self._deadline_cursor,
        )
        if sent.total and self.on_moved is not None:
            self.on_moved()  # their emails go at once

    def _triggers(self) -> None:
        """Record changes, schedules and dates enter records into flows before due work is
        claimed; at most every TRIGGERS_EVERY seconds while busy (a few queries each time)."""
        at = time.monotonic()
        if at < self._triggers_at:
            return
        self._triggers_at = at + TRIGGERS_EVERY
        waiting = {part for part, retry in self._part_retry.items() if retry > at}
        failed: set[str] = set()

        def part_failed(part: str, exc: Exception) -> None:
            failed.add(part)
            count = self._part_failures[part] = self._part_failures.get(part, 0) + 1
            wait = min(PART_FIRST_RETRY * 2 ** min(count - 1, 16), PART_MAX_RETRY)
            self._part_retry[part] = time.monotonic() + wait
            self._part_errors[part] = f"{part}: {type(exc).__name__}: {exc}"
            log.error(
                "worker %s: the %s failed (%d time(s) in a row), retried in %.0f s: %s",
                self.name,
                part,
                count,
                wait,
                exc,
                exc_info=exc,
            )

        process_triggers(self.ctx, now=self.ctx.now(), skip=waiting, on_error=part_failed)
        for part in set(self._part_failures) - waiting - failed:
            log.info("worker %s: the %s runs again", self.name, part)
            for kept in (self._part_failures, self._part_retry, self._part_errors):
                kept.pop(part, None)

    def _idle_seconds(self) -> float:
        try:
            return self._until_due()
        except Exception as exc:  # sleep the longest: the next round will say what is wrong
            log.warning("worker %s: next due time unknown: %s", self.name, exc)
            return self.max_idle

    def _until_due(self) -> float:
        """How long to sleep: until the next due enrollment, the next run of a time-based
        trigger (daily schedules and dates reached fire on time, not at the next idle look),
        or a flow's start_at / archive_at; one query (`work_signs`)."""
        now = self.ctx.now()
        signs = work_signs(self.ctx.engine)
        self._scheduled_seen = signs.next_scheduled
        due = self._next_at(signs, now)
        if due is None:
            return self.max_idle
        # A due row that another worker holds would make us spin: wait a little at least.
        return min(self.max_idle, max(0.05, (due - now).total_seconds()))

    def _next_at(self, signs: WorkSigns, now: datetime) -> datetime | None:
        """When there is work next. A start_at / archive_at that is past could not be done
        (`_flow_schedules` retries it each second while busy): not a reason to spin."""
        times = [signs.next_due, signs.next_trigger, self._scheduled_at]
        if signs.next_scheduled is not None and signs.next_scheduled > now:
            times.append(signs.next_scheduled)
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def _sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`. `wake()` (a NOTIFY, the in-process signal) ends it at once; a
        commit of another connection seen on SQLite (`_commit_seen`) ends it when one query
        says there is work now (`_work_in`), else the sleep goes on, shortened if that work
        comes sooner: a worker at rest pays one query per commit it sees, not a round (its own
        heartbeat's commit among them)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if not self._wake.wait(left):
                break
            self._wake.clear()
            if self._stop.is_set() or self._called.is_set():
                break
            wait = self._work_in()
            if wait is None:
                break
            until = min(until, time.monotonic() + wait)
        self._called.clear()
        self._wake.clear()

    def _work_in(self) -> float | None:
        """None when there is work now (unread record changes, something due, a start_at or
        archive_at set since the last round); otherwise in how many seconds there will be. An
        error says None: the round will say what it is."""
        now = self.ctx.now()
        try:
            signs = work_signs(self.ctx.engine)
        except Exception:
            return None
        if signs.changes_unread or signs.next_scheduled != self._scheduled_seen:
            return None
        due = self._next_at(signs, now)
        if due is None:
            return self.max_idle
        left = (due - now).total_seconds()
        return None if left <= 0 else left
