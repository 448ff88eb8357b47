"""The worker: claim due enrollments in batches -> run the engine -> write the results -> commit.

Any number of workers may run against one PostgreSQL database; on SQLite the single writer
serialises them. A batch is taken and moved in one transaction: on PostgreSQL its rows are
picked with `FOR UPDATE SKIP LOCKED` and stay locked until its commit, so that other workers
pass them over meanwhile without waiting; on SQLite they are found on a read snapshot and moved
under the write lock. A worker killed mid-batch leaves nothing taken: its transaction never
committed, so nothing of it happened and its rows are free at once (PostgreSQL aborts the
transaction when the connection goes); step-run numbers and outbox idempotency keys make the
retry produce the very same rows.

Idle workers sleep until the next due time and wake at once when `Worker.wake()` is called (the
in-process signal used by `crmflow serve`), on PostgreSQL when a `NOTIFY crmflow_due` arrives,
and on SQLite when another connection commits (`CommitWatcher`, any process). The sleep is
bounded all the same (MAX_IDLE, or LISTENING_MAX_IDLE while the signal from other processes
works), so that work is found even if a signal was lost.

A worker at rest pays one statement a wake-up (a due time, the bounded sleep's end, a commit
seen on SQLite): `RestLooks.look` asks whether there is work and when there will be, and writes
the heartbeat when one is due (every REST_BEAT_EVERY), in one statement. A round runs only when
the look says there is work: unread record changes, an enrollment or a timed trigger due, a
flow's start_at / archive_at come or changed, a draining flow emptied; the time-based passes ask
the look too once their time has come: the deadline pass when an open task has a due time, the
pruning pass when some history is older than its retention (the oldest row of each kind), and
then only that part runs. `Worker.wake()` (a NOTIFY, sent only with work) runs a round at once.
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
from crmflow.services.retention import PruneCursor, cutoffs, prune
from crmflow.services.triggers import process_triggers
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.database import OperationalError, data_version, is_postgres, read_transaction
from crmflow.store.wakeups import (
    NOTIFY_CHANNEL,
    CommitWatcher,
    RestLooks,
    WorkListener,
    WorkSigns,
    next_trigger_at,
    watches_commits,
)

__all__ = ["BatchResult", "Worker", "next_trigger_at", "run_batch", "run_once"]

log = logging.getLogger("crmflow.worker")

DEFAULT_BATCH = 500
MAX_IDLE = 5.0  # seconds: how long an idle worker sleeps at most before looking again
# ... while other processes' work wakes it (LISTEN on PostgreSQL, CommitWatcher on SQLite): the
# look is then only a safety net, often enough that a worker at rest beats its heartbeat
# twice within health.STALE_AFTER.
LISTENING_MAX_IDLE = 20.0
REST_BEAT_EVERY = LISTENING_MAX_IDLE  # seconds: a worker at rest beats at its safety looks
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
) -> BatchResult:
    """Take up to `limit` enrollments due at `now`, move them, and commit: one batch, one
    write transaction; `owner` names the worker (log lines).

    On PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED` (`repo.due_ids`), read,
    moved and committed in one transaction: other workers skip them while it runs, and if this
    worker dies the transaction is rolled back and the rows are free at once. On SQLite one
    writer holds the database's lock at a time: the batch is found and its templates and
    conditions evaluated on a read snapshot, without the lock (`evaluate_batch`), then moved in
    one write transaction that reuses every outcome whose enrollment and record are unchanged.
    A worker that dies leaves nothing behind on either backend.

    A batch stops taking enrollments once settings.batch_time_limit_ms has passed, commits what
    it moved, and leaves the rest due for the next batch. The write transaction (on SQLite, the
    write lock) lasts at most that limit plus one record's evaluation (each template and
    condition capped by action_time_limit_ms) plus the writes; on SQLite it evaluates only what
    changed since the snapshot (and the rare start that writes as it enters), so it mostly just
    writes."""
    with _collector_paused():
        # The collector comes back once the batch's objects are freed, not while they live
        # (it would scan them all once more: 4% of a worker's time).
        return _batch(ctx, system, now=now, limit=limit)


def _batch(ctx: Context, system: Actor, *, now: datetime, limit: int) -> BatchResult:
    limit_seconds = ctx.settings.batch_time_limit_ms / 1000
    if not is_postgres(ctx.engine):
        # One connection reads, then writes: SQLite's data_version tells whether anything was
        # committed in between.
        with ctx.engine.connect() as conn:
            with read_transaction(conn):
                ids = repo.due_ids(conn, now=now, limit=limit)
                if not ids:
                    return BatchResult(0, 0, 0)
                due = repo.lock(conn, ids)
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
                    locked = repo.lock(conn, list(as_read))
                    rows = [r for r in locked if r == as_read[r.id]]
                moved = move_batch(
                    conn, ctx, system, rows, now=now, deadline=deadline, evaluation=evaluation
                )
        return _result(ids, moved, left=len(ids) - len(rows))
    with ctx.engine.begin() as conn:
        ids = repo.due_ids(conn, now=now, limit=limit)
        if not ids:
            return BatchResult(0, 0, 0)
        deadline = time.monotonic() + limit_seconds
        rows = repo.lock(conn, ids)
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
) -> BatchResult:
    """`run_batch`, and when it claimed runs, its duration and size counted (`/metrics`) and
    a debug line."""
    started = time.perf_counter()
    result = run_batch(ctx, system, now=now, owner=owner, limit=limit)
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
    triggers_at = 0.0  # time.monotonic() of the next look at the triggers
    for _ in range(_MAX_ROUNDS):
        # Triggers first: records that enter are then moved by the batches, and the record
        # changes those batches make may trigger flows in turn. While the batches find work,
        # at most every TRIGGERS_EVERY seconds, as a busy `Worker` (a look costs some queries
        # however few changes came: once per batch, a tenth of a busy run's time); always
        # before deciding that nothing is left.
        looked, triggered = time.monotonic() >= triggers_at, 0
        if looked:
            triggered = process_triggers(ctx, now=at)
            triggers_at = time.monotonic() + TRIGGERS_EVERY
        result = _observed_batch(ctx, system, now=at, owner=owner, limit=limit)
        total += result.moved
        if result.claimed == 0:
            if looked and triggered == 0:
                break
            triggers_at = 0.0  # nothing due: look at the triggers again before stopping
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
        self._max_idle = max_idle
        self.max_idle = MAX_IDLE if max_idle is None else max_idle
        self.name = name or worker_name()
        self.error_backoff = error_backoff
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: stop sleeping (to run a round, or to look)
        self._called = threading.Event()  # set: `wake()` was called (not only a commit seen)
        self.moved = 0
        self.rounds = 0  # rounds completed without an error (tests and health watch it)
        self.looks = 0  # looks at rest that answered (one statement each; tests, benchmarks)
        self._looks: RestLooks | None = None
        self._watcher: CommitWatcher | None = None  # SQLite: the looks go on its connection
        self._failed_rounds = 0  # in a row: how long to back off
        self._system: Actor | None = None
        self._triggers_at = 0.0  # time.monotonic() of the next look at triggers
        self._deadlines_at = 0.0  # time.monotonic() of the next deadline pass
        self._deadline_cursor = DeadlineCursor()  # where the next pass goes on from
        self._prune_at = time.monotonic() + 60.0  # the first pruning pass, a minute in
        self._prune_cursor = PruneCursor()  # where a pruning pass that stopped goes on from
        self._lifecycle_at: datetime | None = None  # when to look at flow schedules again
        self._scheduled_at: datetime | None = None  # the next start_at / archive_at
        self._scheduled_seen: datetime | None = None  # ... as the first look at rest read it
        self._drained_seen = 0  # draining flows with nobody inside, as the first look read it
        self._pruned_archived: int | None = None  # archived flows, as the last pass saw them
        self._fruitless = 0  # rounds in a row after which a look still said "work now"
        # In the last round: when the triggers ran and how many they handled; the batch's time.
        self._last_triggers: tuple[datetime, int] | None = None
        self._last_batch: datetime | None = None
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
        monitor = LoopMonitor(self.ctx, name=self.name, kind="worker", rest_every=REST_BEAT_EVERY)
        monitor.started()
        listener = self._listener()
        self._looks = RestLooks(self.ctx.engine, self._watcher)
        log.info("worker %s started", self.name)
        escaped: BaseException | None = None
        try:
            while not self._stop.is_set():
                if self._round(monitor):
                    self._rest(monitor)
        except BaseException as exc:  # only what no round can catch (e.g. KeyboardInterrupt)
            escaped = exc
            log.critical("worker %s died: %s", self.name, exc, exc_info=True)
            raise
        finally:
            self._looks.close()
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
                listener = self._watcher = CommitWatcher(self.ctx.engine, self._commit_seen)
        except Exception as exc:  # the bounded idle sleep finds the work without it
            how = f"LISTEN {NOTIFY_CHANNEL}" if is_postgres(self.ctx.engine) else "commit watch"
            log.warning("worker %s: %s unavailable: %s", self.name, how, exc)
        if listener is not None and self._max_idle is None:
            self.max_idle = LISTENING_MAX_IDLE
        return listener

    def _round(self, monitor: LoopMonitor, only: frozenset[str] | None = None) -> bool:
        """One round: the parts (`only` those named, when given), the heartbeat, a backoff
        after errors. True when it found nothing to do: the loop rests then (`_rest`); the
        heartbeat, if due, goes with the first look."""
        errors: list[str] = []
        self._last_triggers = self._last_batch = None
        parts: list[tuple[str, Callable[[], object]]] = [
            ("flow schedules", self._flow_schedules),
            ("triggers", self._triggers),
            ("batch", self._batch),
            ("deadlines", self._deadlines),
            ("retention", self._prune),
        ]
        result: BatchResult | None = None
        for part, run in parts:
            if only is not None and part not in only:
                continue
            done = self._guarded(part, run, errors)
            if part == "batch":
                result = done if isinstance(done, BatchResult) else None
        if result is not None:
            self.moved += result.moved
            if result.moved and self.on_moved is not None:
                self.on_moved()
        batched = only is None or "batch" in only
        idle = not errors and (not batched or (result is not None and result.claimed == 0))
        degraded = list(self._part_errors.values())
        monitor.round_done(errors, degraded=degraded, write=not idle or self._looks is None)
        if errors:
            self._failed_rounds += 1
            wait = self.error_backoff * 2 ** min(self._failed_rounds - 1, 10)
            self._sleep(min(wait, MAX_ERROR_BACKOFF))
            return False
        self._failed_rounds = 0
        self.rounds += 1
        return idle

    def _guarded(self, part: str, run: Callable[[], _T], errors: list[str]) -> _T | None:
        """`run()`, or None when it raised: the error is logged and added to `errors`."""
        try:
            return run()
        except OperationalError as exc:
            # A database that went away for a moment: the batch's transaction rolled back.
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
        now = self._last_batch = self.ctx.now()
        return _observed_batch(
            self.ctx,
            self._system,
            now=now,
            owner=self.name,
            limit=self.batch_size,
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

        now = self.ctx.now()
        self._last_triggers = (now, 0)
        handled = process_triggers(self.ctx, now=now, skip=waiting, on_error=part_failed)
        self._last_triggers = (now, handled)
        for part in set(self._part_failures) - waiting - failed:
            log.info("worker %s: the %s runs again", self.name, part)
            for kept in (self._part_failures, self._part_retry, self._part_errors):
                kept.pop(part, None)

    def _rest(self, monitor: LoopMonitor) -> None:
        """At rest until there is work: a look (one statement) at each wake-up, then back to
        sleep until the next due time, the next heartbeat, or `max_idle` at most. Returns to
        the loop for a round when a look says there is work, when `wake()` is called, or on
        `stop()`; the round runs only the parts the look said, or all of them."""
        first = True
        while not self._stop.is_set():
            only, wait = self._look(monitor, first=first)
            first = False
            if only is not None:
                if only:
                    self._round(monitor, only=only)  # a time-based pass alone: still at rest
                    continue
                return
            if self._nap(min(wait, monitor.next_rest_beat_in())):
                return

    def _look(self, monitor: LoopMonitor, *, first: bool) -> tuple[frozenset[str] | None, float]:
        """One look: (None, seconds to sleep) when there is nothing to do; (frozenset(), 0)
        for a round; (the parts, 0) when only the deadline or pruning pass has work."""
        assert self._looks is not None
        at = time.monotonic()
        deadlines = at >= self._deadlines_at
        pruning = at >= self._prune_at
        beat = monitor.rest_beat()
        try:
            signs = self._looks.look(beat=beat, deadlines=deadlines, prune=pruning)
        except Exception as exc:  # the round will say what is wrong
            monitor.rest_look_failed(beat, f"{type(exc).__name__}: {exc}")
            return frozenset(), 0.0
        monitor.rest_look_done(beat)
        self.looks += 1
        now = self.ctx.now()
        if first:  # what the round just did not act on is not a reason to look again
            self._scheduled_seen = signs.next_scheduled
            self._drained_seen = signs.drained
        self._drained_seen = min(self._drained_seen, signs.drained)  # archived meanwhile
        reason = self._work_now(signs, now, at)
        if first and self._left_undone(reason, signs):
            # Work now, yet the round just before left it (a row another worker holds, changes
            # waiting for a gap in the feed's ids): not a reason to spin. The next look comes a
            # little later, later each time in a row; a wake-up comes at once.
            wait = min(self.max_idle, 0.05 * 2 ** min(self._fruitless, 16))
            self._fruitless += 1
            return None, wait
        if first:
            self._fruitless = 0
        if reason is not None:
            return frozenset(), 0.0
        only: set[str] = set()
        if deadlines:
            if signs.watched:
                only.add("deadlines")
            else:  # no open task has a due time: nothing to watch until the next pass
                self._deadlines_at = at + DEADLINES_EVERY
        if pruning:
            if self._prune_due(signs, now):
                only.add("retention")
                self._pruned_archived = signs.archived
            else:
                self._prune_at = at + PRUNE_EVERY
        if only:
            return frozenset(only), 0.0
        due = self._next_at(signs, now)
        if due is not None and signs.next_trigger == due and "schedules" in self._part_retry:
            due = None  # the schedules wait for their retry (below)
        wait = self.max_idle if due is None else (due - now).total_seconds()
        if self._part_retry:
            wait = min(wait, min(self._part_retry.values()) - at)
        # A due row that another worker holds would make us spin: wait a little at least.
        return None, min(self.max_idle, max(0.05, wait))

    def _work_now(self, signs: WorkSigns, now: datetime, at: float) -> str | None:
        """Why a round has work now, as the look says (None: it has not); the parts it names
        are made due. A part backed off after it failed whole waits for its retry."""
        waiting = {part for part, retry in self._part_retry.items() if retry > at}
        if self._part_retry and len(waiting) < len(self._part_retry):
            self._triggers_at = 0.0
            return "retry"
        if signs.changes_unread and "change feed" not in waiting:
            self._triggers_at = 0.0
            return "changes"
        trigger = signs.next_trigger
        if trigger is not None and trigger <= now and "schedules" not in waiting:
            self._triggers_at = 0.0
            return "trigger"
        if signs.next_scheduled != self._scheduled_seen or signs.drained > self._drained_seen:
            self._lifecycle_at = None
            return "flow schedules"
        due = signs.next_due
        if self._scheduled_at is not None and self._scheduled_at <= now:
            self._lifecycle_at = None
            return "flow schedules"
        return "due" if due is not None and due <= now else None

    def _left_undone(self, reason: str | None, signs: WorkSigns) -> bool:
        """Whether the work the look sees now was there for the round just before, which did
        not do it (what came due or was written since is new work, for a round at once)."""
        triggers, batch = self._last_triggers, self._last_batch
        if reason == "due":
            return batch is not None and signs.next_due is not None and signs.next_due <= batch
        if reason == "trigger":
            trigger = signs.next_trigger
            return triggers is not None and trigger is not None and trigger <= triggers[0]
        if reason == "changes":
            return triggers is not None and triggers[1] == 0
        return False

    def _prune_due(self, signs: WorkSigns, now: datetime) -> bool:
        """Whether the pruning pass has something to do, as far as the look tells: a kind of
        history whose oldest row is older than its retention, or an archived flow more (their
        not-entered reasons are capped). Rows that are old but kept (a run still going) make
        it run every PRUNE_EVERY, as it always did."""
        capped = bool(self.ctx.settings.retention_archived_not_entered)
        if capped and signs.archived != (self._pruned_archived or 0):
            return True  # archived flows, new since the last pass (or since the worker started)
        limits = cutoffs(self.ctx.settings, now)
        oldest = signs.oldest or {}
        for kind, before in limits.items():
            if before is None:
                continue  # kept forever
            if kind not in oldest:
                return True  # a kind the look does not tell of: its pass as before
            first = oldest[kind]
            if first is not None and first < before:
                return True
        return False

    def _next_at(self, signs: WorkSigns, now: datetime) -> datetime | None:
        """When there is work next. A start_at / archive_at that is past could not be done
        (`_flow_schedules` retries it each second while busy): not a reason to spin."""
        times = [signs.next_due, signs.next_trigger, self._scheduled_at]
        if signs.next_scheduled is not None and signs.next_scheduled > now:
            times.append(signs.next_scheduled)
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def _nap(self, seconds: float) -> bool:
        """Sleep up to `seconds`, or until a wake-up: True when the loop should go on at once
        (`wake()` was called: a NOTIFY, the in-process signal; or `stop()`), False when the
        sleep ended or a commit was seen (SQLite, `_commit_seen`): the caller looks then."""
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()
        if self._stop.is_set() or self._called.is_set():
            self._called.clear()
            return True
        return False

    def _sleep(self, seconds: float) -> None:
        """The backoff after a round that failed: `wake()` and `stop()` end it, a commit seen
        does not."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if not self._wake.wait(left):
                break
            self._wake.clear()
            if self._stop.is_set() or self._called.is_set():
                break
        self._called.clear()
        self._wake.clear()
