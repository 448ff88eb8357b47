"""The dispatcher: claim due outbox messages (emails, SMS, webhooks) in batches -> send each ->
write its outcome on its row, one message at a time.

Claims lease the rows to this dispatcher (`store.outbox.claim_due`): on PostgreSQL with SKIP
LOCKED, so any number of dispatchers take different rows; on SQLite the claim holds the single
writer's lock. The outcomes of sent emails and webhooks are committed in groups
(CRMFLOW_DELIVERY_COMMIT_EVERY, 20; or after CRMFLOW_DELIVERY_COMMIT_SECONDS; and at the end of
each batch), an SMS's at once. A group's commit is made by the dispatcher's writer thread while
the next messages are sent, those of the next batch too (at most CRMFLOW_DELIVERY_WRITE_AHEAD
groups wait for it, and at most a batch of sent messages, `batch_size`, wait for their
outcomes: the sending waits when more would). A dispatcher killed before a group's commit
leaves its rows `sending` until their lease runs out, and the next attempt sends them again
with the same Message-ID or webhook-id, the at-least-once window (docs/delivery.md). A commit
that merely fails is tried again, and the outcomes are held (nothing more is sent) until it
succeeds.

Retries wait `backoff(attempts)`: exponential with jitter, stored on the row as
`next_attempt_at`, so they survive a restart. A permanent refusal (SMTP 5xx on MAIL, RCPT or
DATA, an invalid address or phone number, an HTTP 4xx other than 408 and 429, a refused
address) fails the message at once; so does the last allowed attempt
(CRMFLOW_DELIVERY_MAX_ATTEMPTS). A Retry-After on an HTTP 429 or 503 sets the next attempt.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from crmflow.context import Context
from crmflow.delivery.email import (
    CatchingSender,
    DeliveryError,
    Sender,
    Sent,
    SmtpSender,
    archive_entry,
    email_for,
    envelope_recipients,
    parse_smtp_url,
    rendered_of,
)
from crmflow.delivery.http import RetryLaterError
from crmflow.delivery.rate_limits import RateLimiter, limit_keys, shared_limiter
from crmflow.delivery.sms import SmsProvider, SmsSender, sms_provider_for
from crmflow.delivery.suppression import (
    note_hard_bounce,
    note_refused_recipients,
    set_aside_suppressed_in,
)
from crmflow.delivery.webhook import WebhookSender
from crmflow.delivery.write_back import apply_write_backs, prepare_write_backs
from crmflow.engine.commands import EmailPayload, SmsPayload, WebhookPayload
from crmflow.logs import in_run, left_run, run_keys
from crmflow.metrics import observe_delivery, timed_send
from crmflow.services.delivery_failures import message_failed
from crmflow.services.health import LoopMonitor
from crmflow.services.record_files import AttachmentCache
from crmflow.services.senders import HINT as SENDERS_HINT
from crmflow.services.senders import sender_refusal
from crmflow.settings import Settings
from crmflow.store.database import OperationalError
from crmflow.store.history import insert_history
from crmflow.store.outbox import (
    ACCEPTED_KEY,
    ClaimedMessage,
    SentOutcome,
    claim_due_in,
    mark_failed,
    mark_partly_sent,
    mark_retrying,
    mark_sent,
    put_back,
)
from crmflow.store.outbox_signals import OutboxWatch, next_due_polled

__all__ = ["DispatchResult", "Dispatcher", "backoff", "run_in_threads", "sender_for"]

log = logging.getLogger("crmflow.delivery")

KINDS = ("email", "sms", "webhook")  # the channels delivered
DEFAULT_BATCH = 50
DEFAULT_LEASE = timedelta(minutes=5)
MAX_IDLE = 5.0  # seconds: how long an idle dispatcher sleeps at most before looking again
# ... while other connections' messages wake it (LISTEN crmflow_outbox on PostgreSQL, the commit
# watch on SQLite): the look is then only a safety net (as the worker's LISTENING_MAX_IDLE).
LISTENING_MAX_IDLE = 20.0
REST_BEAT_EVERY = LISTENING_MAX_IDLE  # seconds: a dispatcher at rest beats at its safety looks
ATTACHMENT_CACHE_BYTES = 32 * 1024 * 1024  # a batch's attached files kept, at most
_MAX_ROUNDS = 10_000  # run_once: a guard against messages that keep coming due
# The channels whose outcomes are committed in groups (CRMFLOW_DELIVERY_COMMIT_EVERY): those
# whose receiver can tell a second copy (an email's Message-ID, a webhook's webhook-id and
# Idempotency-Key). An SMS carries no such id: its outcome is committed at once.
_GROUPED = frozenset({"email", "webhook"})
_SAVE_PAUSES = (0.05, 0.5, 2.0)  # seconds before each new try at writing sent messages' outcomes

_Unsaved = list[tuple[ClaimedMessage, Sent, datetime]]


def _run_keys(message: ClaimedMessage) -> dict[str, Any]:
    """The keys of the run that wrote `message` (flow, version, enrollment, record, step), as
    the worker's log lines carry them: every line about the message gives them; none if its
    run is gone."""
    m = message
    if m.flow_key is None or m.flow_version is None or m.record_id is None:
        return {}
    if m.enrollment_id is None:
        return {}
    return run_keys(m.flow_key, m.flow_version, m.enrollment_id, m.record_id, m.step_key)


@dataclass
class _Batch:
    """Messages claimed together: `claimed` counts them all, `messages` are those left to send
    (the suppressed ones set aside); `started` is time.monotonic() at the claim (no message is
    started once half the lease has passed since), `at` the clock's time then."""

    claimed: int
    messages: list[ClaimedMessage]
    started: float
    at: datetime


class _ClaimAhead:
    """The next batch, claimed by the writer thread while this one is sent: `batch` or the
    `error` the claim raised once `done` is set."""

    def __init__(self, claim: Callable[[], _Batch]) -> None:
        self._claim = claim
        self.done = threading.Event()
        self.batch: _Batch | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.batch = self._claim()
        except Exception as exc:  # said when the batch is taken (`Dispatcher._next_batch`)
            self.error = exc
        finally:
            self.done.set()


class _OutcomeWriter:
    """A thread that commits groups of sent messages' outcomes (`save`) while the dispatcher
    sends the next messages; at most `ahead` groups wait for it (`put` blocks then). A group
    whose commit failed (the database away) is held by `save`: `failed` is then set until the
    dispatcher, having waited for the writer, takes over. It also claims the next batch
    (`claim_ahead`) while the dispatcher sends this one."""

    def __init__(self, save: Callable[[_Unsaved], None], ahead: int, name: str) -> None:
        self._save = save
        self._ahead = ahead
        self._name = name
        # One place more than `ahead`: a claim ahead never makes the sender wait.
        self._queue: queue.Queue[_Unsaved | _ClaimAhead | None] = queue.Queue(maxsize=ahead + 1)
        self._thread: threading.Thread | None = None
        self.failed = False
        # The sent messages handed over whose outcomes are not written yet (nor held).
        self._unwritten = 0
        self._written = threading.Condition()

    def put(self, unsaved: _Unsaved) -> None:
        if unsaved:
            with self._written:
                self._unwritten += len(unsaved)
            self._put(unsaved)

    def wait_below(self, most: int) -> None:
        """Until at most `most` of the messages handed over wait for their outcomes to be
        written, or a commit failed (`failed`)."""
        with self._written:
            while self._unwritten > most and not self.failed:
                self._written.wait()

    def claim_ahead(self, claim: Callable[[], _Batch]) -> _ClaimAhead:
        """`claim` run by the writer, after the groups handed over before."""
        job = _ClaimAhead(claim)
        self._put(job)
        return job

    def _put(self, item: _Unsaved | _ClaimAhead) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(item)

    def wait(self) -> None:
        """Until every group handed over is written (or held)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Every group written (or held), and the thread ended."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            unsaved = self._queue.get()
            try:
                if unsaved is None:
                    return
                if isinstance(unsaved, _ClaimAhead):
                    unsaved.run()  # its error is the claim's, not the outcomes'
                    continue
                self._save(unsaved)
            except Exception:  # logged by `save`, the outcomes held: the dispatcher stops
                self.failed = True
            finally:
                if isinstance(unsaved, list):
                    with self._written:
                        self._unwritten -= len(unsaved)
                        self._written.notify_all()
                self._queue.task_done()


@dataclass(frozen=True)
class DispatchResult:
    claimed: int = 0
    delivered: int = 0  # delivered or caught by the mail catcher
    retrying: int = 0
    failed: int = 0
    deferred: int = 0  # over a rate limit: put back, due when its turn comes

    def __add__(self, other: DispatchResult) -> DispatchResult:
        return DispatchResult(
            self.claimed + other.claimed,
            self.delivered + other.delivered,
            self.retrying + other.retrying,
            self.failed + other.failed,
            self.deferred + other.deferred,
        )


def backoff(attempts: int, settings: Settings, rand: random.Random) -> timedelta:
    """The wait after the `attempts`th failed attempt: the first wait doubled for each attempt
    before, capped, then a random half of it taken off (jitter: messages that failed together,
    a server down, do not all come back at the same second)."""
    wait = settings.delivery_retry_seconds * 2 ** min(attempts - 1, 30)
    wait = min(wait, settings.delivery_retry_max_seconds)
    return timedelta(seconds=wait * rand.uniform(0.5, 1.0))


def sender_for(settings: Settings) -> Sender:
    """An SMTP sender for CRMFLOW_SMTP_URL, or the mail catcher when there is none."""
    if settings.smtp_url:
        return SmtpSender(parse_smtp_url(settings.smtp_url))
    return CatchingSender()


def dispatcher_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:dispatch-{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Delivers due outbox messages; `run()` loops until `stop()`, `run_once()` delivers what is
    due now and returns. One sender (one SMTP connection, one HTTP client each for webhooks and
    the SMS provider) per dispatcher: run several dispatchers (threads or processes) for
    concurrency."""

    def __init__(
        self,
        ctx: Context,
        *,
        batch_size: int = DEFAULT_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        max_idle: float | None = None,
        name: str | None = None,
        sender: Sender | None = None,
        sms_provider: SmsProvider | None = None,
        rand: random.Random | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        """`limiter`: the rate limits (default: the one this process's dispatchers share).
        `max_idle`: the longest idle sleep; by default MAX_IDLE, or LISTENING_MAX_IDLE while
        other connections' messages wake the dispatcher (`run()` sets it up)."""
        self.ctx = ctx
        self.batch_size = batch_size
        self.lease = lease
        self._max_idle = max_idle
        self.max_idle = MAX_IDLE if max_idle is None else max_idle
        self.name = name or dispatcher_name()
        self.sender = sender if sender is not None else sender_for(ctx.settings)
        self.webhooks = WebhookSender(ctx.settings)
        self.sms = SmsSender(sms_provider or sms_provider_for(ctx.settings))
        self.rand = rand or random.Random()
        self.limiter = limiter or shared_limiter(ctx.settings)
        self._deferred: list[tuple[int, datetime]] = []  # over a rate limit: (id, due at)
        # The record files a batch's emails attach, read once a batch (emptied at its end).
        self.attachments = AttachmentCache(ATTACHMENT_CACHE_BYTES)
        self.total = DispatchResult()
        # Sent messages whose outcome is not committed yet (CRMFLOW_DELIVERY_COMMIT_EVERY), and
        # time.monotonic() when the first of them was sent.
        self._unsaved: _Unsaved = []
        self._unsaved_since = 0.0
        # Sent messages whose outcome could not be written (the database away): written first.
        self._held: _Unsaved = []
        self._writer: _OutcomeWriter | None = None
        self._ahead: _ClaimAhead | None = None  # the next batch, claimed by the writer
        if ctx.settings.delivery_write_ahead:
            self._writer = _OutcomeWriter(
                self._save, ctx.settings.delivery_write_ahead, f"{self.name}-writer"
            )
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: stop sleeping (to claim, or to look)
        self._called = threading.Event()  # set: `wake()` was called (not only a signal)
        self._watch: OutboxWatch | None = None  # what `run()` waits on at rest
        self.looks = 0  # looks at rest that answered (one statement each; tests, benchmarks)
        self.wakeups = 0  # ends of an idle sleep (tests, benchmarks)
        self._last_claim_at: datetime | None = None  # the clock's time at the last claim
        self._empty_claim_at: datetime | None = None  # the clock's time at the last empty claim
        self._look_failed = False
        self._fruitless = 0  # looks in a row that saw due now what that claim did not find
        self._monitor: LoopMonitor | None = None  # its heartbeat, while `run()` runs

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Messages are due now (the worker moved enrollments, in this process): claim at
        once."""
        self._called.set()
        self._wake.set()

    def _signalled(self) -> None:
        """Another connection may have written a message (a NOTIFY, a commit seen): look."""
        self._wake.set()

    def deliver_batch(self) -> DispatchResult:
        """Claim up to `batch_size` due messages and deliver them; their outcomes are all
        committed when it returns."""
        return self._deliver_batch(wait=True)

    def _deliver_batch(self, *, wait: bool) -> DispatchResult:
        """`wait`: False lets the last batch's last outcomes be written while this one is
        claimed and sent (`run`, `run_once`), and the next batch be claimed while this one is
        sent; at most `batch_size` sent messages wait for their outcomes to be written at any
        time (the at-least-once window, docs/delivery.md)."""
        batch = self._next_batch(wait=wait)
        if (
            not wait
            and self._writer is not None
            and batch.claimed >= self.batch_size
            and not self._stop.is_set()
        ):
            # More may be due: the writer claims them while these are sent.
            self._ahead = self._writer.claim_ahead(self._claim)
        result = DispatchResult(claimed=batch.claimed)
        # No message is started once half the lease has passed: one started later could still
        # be sending when the lease runs out and another dispatcher takes it. Those left go to
        # whoever claims them when the lease has run out.
        deadline = batch.started + self.lease.total_seconds() / 2
        unsent: list[ClaimedMessage] = []
        try:
            for index, message in enumerate(batch.messages):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                if self._writer is not None:
                    # At most a batch of sent messages whose outcomes are not written yet.
                    self._writer.wait_below(self.batch_size - len(self._unsaved) - 1)
                    if self._writer.failed:
                        # Outcomes not written: nothing more is sent (raised below), and the
                        # rest of the batch goes back as it was.
                        unsent = batch.messages[index:]
                        break
                if self._over_rate_limit(message):
                    result += DispatchResult(deferred=1)
                    continue
                result += self._deliver(message)
                if self._monitor is not None:
                    # A message handled is progress: a batch of slow sends (up to half the
                    # lease) is not a loop stuck. Written at most every few seconds.
                    self._monitor.round_done()
        finally:
            self._put_back([m.id for m in unsent], batch.at)
            unsaved = self._take_unsaved()
            if self._writer is None or self._writer.failed or wait:
                self._save_now(unsaved)  # what is left (raises with the database away)
            else:
                self._writer.put(unsaved)
            self.attachments.clear()
            self._deferred, deferred = [], self._deferred
            if deferred:
                with self.ctx.engine.begin() as conn:
                    put_back(conn, deferred, owner=self.name)
        self.total += result
        return result

    def _claim(self) -> _Batch:
        """Claim up to `batch_size` due messages, and set aside those a suppression stops."""
        now = self._last_claim_at = self.ctx.now()
        with self.ctx.engine.begin() as conn:  # one transaction: one commit
            claimed = claim_due_in(
                conn,
                now=now,
                owner=self.name,
                limit=self.batch_size,
                lease=self.lease,
                kinds=KINDS,
            )
            left = set_aside_suppressed_in(conn, self.ctx, claimed, owner=self.name)
        return _Batch(len(claimed), left, time.monotonic(), now)

    def _next_batch(self, *, wait: bool) -> _Batch:
        """The batch to send now: the one claimed ahead, or one claimed now. The writer may
        still be writing the outcomes of the batch before (`_deliver_batch` bounds how many);
        if it could not, what it held is written first, or the batch goes back and the error
        is raised."""
        ahead, self._ahead = self._ahead, None
        writer = self._writer
        if ahead is not None:
            ahead.done.wait()
            if ahead.error is not None:
                raise ahead.error
            assert ahead.batch is not None
            batch = ahead.batch
            # A batch claimed long ago (a slow server sent the one before) goes back, claimed
            # anew; so does one held behind outcomes that cannot be written.
            if time.monotonic() - batch.started <= self.lease.total_seconds() / 4:
                if writer is None or writer.failed or self._held:
                    self._written_or_put_back(batch)
                return batch
            self._put_back([m.id for m in batch.messages], batch.at)
        if wait or writer is None or writer.failed or self._held:
            self._save_now([])  # nothing more is sent before what was sent is written
        return self._claim()

    def run_once(self) -> DispatchResult:
        """Deliver everything due now, batch after batch (what `crmflow dispatch --once` and
        tests use); messages retried later are left for later."""
        total = DispatchResult()
        try:
            for _ in range(_MAX_ROUNDS):
                result = self._deliver_batch(wait=False)
                total += result
                if result.claimed < self.batch_size:
                    break
        finally:
            self._close()
        return total

    def run(self) -> None:
        """Loop until `stop()`; a round that fails (the database away) is logged and tried
        again after a pause, and the SMTP connection is closed at the end. At rest (a round
        claimed nothing) it waits (`_rest`): one statement at each wake-up, none between.

        As a worker does, it writes a heartbeat (`services.health.LoopMonitor`, kind
        "dispatcher"): when it starts, after its busy rounds (at most every few seconds), with
        its looks at rest (every REST_BEAT_EVERY, in the look's one statement), and when it
        stops, so that `/api/health`, `/metrics` and `crmflow status` see it."""
        monitor = self._monitor = LoopMonitor(
            self.ctx, name=self.name, kind="dispatcher", rest_every=REST_BEAT_EVERY
        )
        monitor.started()
        log.info("dispatcher %s started", self.name)
        self._watch = self._watched()
        escaped: BaseException | None = None
        try:
            while not self._stop.is_set():
                try:
                    result = self._deliver_batch(wait=False)
                except OperationalError as exc:
                    log.warning("dispatcher %s: database error, retrying: %s", self.name, exc)
                    monitor.round_done([f"database error: {str(exc).splitlines()[0]}"])
                    self._sleep(self.max_idle)
                    continue
                except Exception as exc:
                    log.error("dispatcher %s: round failed: %s", self.name, exc, exc_info=True)
                    monitor.round_done([f"{type(exc).__name__}: {exc}"])
                    self._sleep(self.max_idle)
                    continue
                if result.claimed == 0:
                    # At rest: the heartbeat, if due, goes with the first look.
                    monitor.round_done(write=False)
                    self._empty_claim_at = self._last_claim_at
                    self._rest(monitor)
                else:
                    monitor.round_done()
                    self._fruitless = 0
        except BaseException as exc:  # only what no round catches (e.g. KeyboardInterrupt)
            escaped = exc
            log.critical("dispatcher %s died: %s", self.name, exc, exc_info=True)
            raise
        finally:
            try:
                if self._watch is not None:
                    self._watch.close()
                    self._watch = None
                self._close()
            except BaseException as exc:  # sent messages' outcomes left unwritten
                escaped = escaped or exc
                raise
            finally:
                self._monitor = None
                monitor.ended(escaped)
                log.info("dispatcher %s stopped: %s", self.name, self.total)

    def _watched(self) -> OutboxWatch | None:
        """What wakes this dispatcher when another connection writes a message: LISTEN
        crmflow_outbox on PostgreSQL, a watch of the commits on SQLite, shared by the
        dispatchers of the process (`store.outbox_signals`); while it is there, the idle sleep
        is LISTENING_MAX_IDLE (unless `max_idle` was given)."""
        try:
            watch = OutboxWatch(self.ctx.engine, self._signalled)
        except Exception as exc:  # the short idle sleep finds the messages without it
            log.warning("dispatcher %s: no signal of new messages: %s", self.name, exc)
            return None
        return watch

    def _idle_bound(self) -> float:
        """The longest idle sleep now: long while the signal works, else short (it polls)."""
        if self._max_idle is not None:
            return self._max_idle
        signalled = self._watch is not None and self._watch.signalled
        return LISTENING_MAX_IDLE if signalled else MAX_IDLE

    def _rest(self, monitor: LoopMonitor) -> None:
        """At rest until a message is due: a look (`_idle_seconds`, one statement, the
        heartbeat included when one is due) at each wake-up (the next due time it read, the
        bounded sleep's end, a signal, the next heartbeat's time), then back to sleep. Returns
        for a round when the look says a message is due now, when `wake()` is called, or on
        `stop()`."""
        while not self._stop.is_set():
            wait = self._idle_seconds(monitor)
            if wait is None:
                return
            if self._nap(min(wait, monitor.next_rest_beat_in())) or self._look_failed:
                return  # a look that failed: the round says what is wrong

    def _idle_seconds(self, monitor: LoopMonitor) -> float | None:
        """One look, with the heartbeat when one is due (`LoopMonitor.rest_beat`): None when a
        message is due now (a round), else how long to sleep."""
        bound = self._idle_bound()
        self._look_failed = False
        beat = monitor.rest_beat()
        try:
            if self._watch is not None:
                due = self._watch.next_due(KINDS, beat=beat)
            else:
                due = next_due_polled(self.ctx.engine, KINDS, beat=beat)
        except Exception as exc:  # the next round will say what is wrong
            monitor.rest_look_failed(beat, f"next due time unknown: {type(exc).__name__}: {exc}")
            self._look_failed = True
            return self.max_idle
        monitor.rest_look_done(beat)
        self.looks += 1
        now = self.ctx.now()
        if due is not None and due <= now:
            claimed_at = self._empty_claim_at
            if claimed_at is None or due > claimed_at:
                return None  # due since the round just before: a round
            # Due already when the last claim found nothing (rows another dispatcher is
            # claiming): not a reason to spin. A round comes a little later, later each time.
            self._empty_claim_at = None
            wait: float = min(bound, 0.05 * 2.0 ** min(self._fruitless, 16))
            self._fruitless += 1
            return wait
        self._fruitless = 0
        if due is None:
            return bound
        return min(bound, max(0.05, (due - now).total_seconds()))

    def _nap(self, seconds: float) -> bool:
        """Sleep up to `seconds`, or until a wake-up: True when the loop should claim at once
        (`wake()` was called, or `stop()`), False when the sleep ended or a signal came (the
        caller looks then)."""
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()
        self.wakeups += 1
        if self._stop.is_set() or self._called.is_set():
            self._called.clear()
            return True
        return False

    def _close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
                ahead, self._ahead = self._ahead, None
                if ahead is not None and ahead.batch is not None:  # claimed, not sent
                    self._put_back([m.id for m in ahead.batch.messages], ahead.batch.at)
                if self._writer.failed:  # tried again now, and raised if still not written
                    self._save_now([])
        finally:
            self.sender.close()
        self.webhooks.close()
        self.sms.close()

    def _over_rate_limit(self, message: ClaimedMessage) -> bool:
        """Whether the message must wait for its turn under a rate limit (CRMFLOW_RATE_LIMIT_*):
        it is then put back at the end of the batch, due at that turn, its attempt not counted."""
        if not self.limiter.active:
            return False
        now = self.ctx.now()
        keys = limit_keys(message.kind, message.payload)
        turn = self.limiter.reserve(keys, now, message.id)
        if turn <= now:
            return False
        self._deferred.append((message.id, turn))
        return True

    def _send(self, message: ClaimedMessage) -> Sent:
        """One message handed to its channel's sender."""
        key = message.idempotency_key
        if message.kind == "webhook":
            webhook = WebhookPayload.model_validate(message.payload)
            return self.webhooks.send(webhook, key, self.ctx.now())
        if message.kind == "sms":
            return self.sms.send(SmsPayload.model_validate(message.payload), key, self.ctx.now())
        # A stored template is rendered now, for the record as it is now (docs/delivery.md).
        raw = dict(message.payload)
        accepted = set(raw.pop(ACCEPTED_KEY, ()))  # by the server at an earlier attempt
        payload, html = rendered_of(self.ctx, EmailPayload.model_validate(raw))
        # Not a sender the server allows (CRMFLOW_EMAIL_ALLOWED_FROM): failed, not sent.
        sender = payload.from_address or self.ctx.settings.mail_from
        refusal = sender_refusal(self.ctx.settings, sender)
        if refusal is not None:
            raise DeliveryError(f"{refusal}: {SENDERS_HINT}", permanent=True)
        everyone = envelope_recipients(payload)
        recipients = [r for r in everyone if r not in accepted]
        if not recipients:
            return Sent("every recipient was accepted before", subject=payload.subject)
        # A marketing email goes to each recipient on its own, with that recipient's own
        # unsubscribe link (the mail catcher keeps one copy, the first To's).
        if (
            payload.category == "marketing"
            and len(everyone) > 1
            and not isinstance(self.sender, CatchingSender)
        ):
            return self._send_each(message, payload, html, recipients)
        email = email_for(self.ctx, payload, html, files=self.attachments)
        return self.sender.send(email, email.sender, recipients)

    def _send_each(
        self, message: ClaimedMessage, payload: EmailPayload, html: str | None, to: list[str]
    ) -> Sent:
        """The email sent to each of `to` alone, with their own unsubscribe link: one outcome
        for the message (those who took it; those who refused it for good, named in its reply
        as a partly refused message's are; those who refused it for now, tried again alone);
        DeliveryError if nobody took it (permanent if each refused it for good)."""
        accepted: list[str] = []
        later: list[tuple[str, str]] = []
        replies: list[str] = []
        refused: list[tuple[str, str]] = []  # for good: (address, "550 5.1.1 ...")
        subject = payload.subject
        for index, address in enumerate(to):
            email = email_for(self.ctx, payload, html, address, files=self.attachments)
            try:
                sent = self.sender.send(email, email.sender, [address])
            except DeliveryError as exc:
                text = str(exc)
                if not text.startswith("RCPT TO refused: "):
                    if exc.permanent and not accepted:
                        raise  # the sender or the message refused: the same for each
                    # The server or the connection is away: the rest are tried again later.
                    later += [(a, text) for a in to[index:]]
                    break
                reply = text.split(": ", 2)[-1]  # "RCPT TO refused: 550 a@x: 550 5.1.1 ..."
                (refused if exc.permanent else later).append((address, reply))
                continue
            accepted.append(address)
            replies.append(sent.reply)
            subject = sent.subject or subject
        if not accepted:
            detail = "; ".join(f"{a}: {reply}" for a, reply in [*refused, *later])
            if later:
                raise DeliveryError(detail, permanent=False)
            raise DeliveryError(f"RCPT TO refused: {refused[0][1][:3]} {detail}", permanent=True)
        text = replies[0] if len(set(replies)) == 1 else "; ".join(replies)
        if refused or later:
            text += "; refused: " + ", ".join(f"{a} {r[:3]}" for a, r in [*refused, *later])
        return Sent(text, subject=subject, accepted=tuple(accepted), refused_for_now=tuple(later))

    def _deliver(self, message: ClaimedMessage) -> DispatchResult:
        """Send the message and note its outcome; the lines logged meanwhile (here and in the
        modules called) carry its run's keys."""
        keys = _run_keys(message)
        if keys:
            in_run(*keys.values())
        try:
            return self._deliver_one(message, keys)
        finally:
            if keys:
                left_run()

    def _deliver_one(self, message: ClaimedMessage, keys: dict[str, Any]) -> DispatchResult:
        try:
            sent = timed_send(message.kind, self._send, message)  # /metrics
        except ValidationError as exc:
            return self._failed(message, f"not an {message.kind} payload: {exc}", permanent=True)
        except RetryLaterError as exc:
            return self._failed(message, str(exc), permanent=False, wait=exc.retry_after)
        except DeliveryError as exc:
            note_hard_bounce(self.ctx, message, exc)  # a 5xx at RCPT: no more emails there
            return self._failed(message, str(exc), permanent=exc.permanent)
        except Exception as exc:  # one message's unforeseen error fails it alone, for now
            log.error(
                "dispatcher %s: message %d: %s",
                self.name,
                message.id,
                exc,
                exc_info=True,
                extra=keys,
            )
            return self._failed(message, f"{type(exc).__name__}: {exc}", permanent=False)
        if sent.refused_for_now and sent.accepted:
            return self._partly_sent(message, sent)
        if not self._unsaved:
            self._unsaved_since = time.monotonic()
        self._unsaved.append((message, sent, self.ctx.now()))
        # After the outcome is kept for saving: if this raises, the batch's end still saves it
        # (a sent message left `sending` would go again when its lease runs out).
        note_refused_recipients(self.ctx, message, sent.reply)  # a cc refused with a 5xx...
        settings = self.ctx.settings
        if (
            message.kind not in _GROUPED
            or len(self._unsaved) >= settings.delivery_commit_every
            or time.monotonic() - self._unsaved_since >= settings.delivery_commit_seconds
        ):
            unsaved = self._take_unsaved()
            if self._writer is None or message.kind not in _GROUPED:
                self._save_now(unsaved)
            else:
                self._writer.put(unsaved)  # written while the next are sent
        observe_delivery(message.kind, "delivered")  # /metrics
        return DispatchResult(delivered=1)

    def _written_or_put_back(self, batch: _Batch) -> None:
        """The writer's outcomes written before `batch` is sent; if they cannot be (the
        database away), `batch` is put back, unsent, and the error raised."""
        try:
            self._save_now([])
        except Exception:
            self._put_back([m.id for m in batch.messages], batch.at)
            raise

    def _put_back(self, ids: list[int], at: datetime) -> None:
        """Messages claimed and not sent: back to what they were, due at `at` (a claim's time,
        when they were due); if that cannot be written, they stay leased until it runs out."""
        if not ids:
            return
        try:
            with self.ctx.engine.begin() as conn:
                put_back(conn, [(i, at) for i in ids], owner=self.name)
        except Exception as exc:  # left leased: claimed again when the lease runs out
            log.warning("dispatcher %s: claimed messages not put back: %s", self.name, exc)

    def _save_now(self, unsaved: _Unsaved) -> None:
        """`_save` in this thread, once those handed to the writer are written (or held, if
        it failed: they are tried again first)."""
        if self._writer is not None:
            self._writer.wait()
            self._writer.failed = False  # what it held is this thread's to write now
        self._save(unsaved)

    def _save(self, unsaved: list[tuple[ClaimedMessage, Sent, datetime]]) -> None:
        """Commit the outcomes of sent messages (and those held from before), with their
        archive lines, in one transaction: those still leased to this dispatcher (one whose
        lease ran out may have been taken over).

        The server accepted these messages, so a commit that fails is never left to the lease
        (which would send them again): it is tried again after a pause, a few times; a fault
        that is not the database's (one message's write-back or archive line) is then left
        behind by writing each outcome alone, and one that still fails alone is marked sent
        without its write-back and archive line. Outcomes that still cannot be written (the
        database away) are held: this dispatcher claims nothing more until the next round has
        written them, and raises. Only if it dies or the database stays away past their lease
        do they go again: the at-least-once window (docs/delivery.md)."""
        unsaved = [*self._held, *unsaved]
        self._held = []
        if not unsaved:
            return
        error: Exception | None = None
        for pause in (*_SAVE_PAUSES, None):
            try:
                self._write(unsaved)
                return
            except OperationalError as exc:  # the database away, a lock, a lost connection
                error = exc
                log.warning("dispatcher %s: outcomes not written: %s", self.name, exc)
            except Exception as exc:  # not the database's: alone, each message
                error = exc
                log.error("dispatcher %s: outcomes not written: %s", self.name, exc)
                break
            if pause is not None:
                time.sleep(pause)
        if not isinstance(error, OperationalError):
            unsaved = self._write_each(unsaved)
        if unsaved:
            self._held = unsaved
            assert error is not None
            raise error

    def _write_each(
        self, unsaved: list[tuple[ClaimedMessage, Sent, datetime]]
    ) -> list[tuple[ClaimedMessage, Sent, datetime]]:
        """Each outcome written alone, or bare (no write-back, no archive line) if that fails;
        those that cannot be written at all."""
        left = []
        for item in unsaved:
            try:
                self._write([item])
                continue
            except Exception as exc:
                log.error(
                    "dispatcher %s: message %d: %s",
                    self.name,
                    item[0].id,
                    exc,
                    extra=_run_keys(item[0]),
                )
            try:
                with self.ctx.engine.begin() as conn:
                    message, sent, at = item
                    outcome = SentOutcome(message.id, at, sent.reply, rendered=sent.caught)
                    mark_sent(conn, [outcome], owner=self.name)
            except Exception as exc:
                log.error(
                    "dispatcher %s: message %d: %s",
                    self.name,
                    item[0].id,
                    exc,
                    extra=_run_keys(item[0]),
                )
                left.append(item)
        return left

    def _write(self, unsaved: list[tuple[ClaimedMessage, Sent, datetime]]) -> None:
        with self.ctx.engine.begin() as conn:
            unsaved, write_backs = prepare_write_backs(conn, self.ctx, unsaved)
            outcomes = [SentOutcome(m.id, at, s.reply, rendered=s.caught) for m, s, at in unsaved]
            kept = mark_sent(conn, outcomes, owner=self.name)
            apply_write_backs(conn, self.ctx, write_backs, kept)  # webhooks' answers
            entries = [archive_entry(m, s, at) for m, s, at in unsaved if m.id in kept]
            insert_history(conn, [e for e in entries if e is not None])
        for message, _, _ in unsaved:
            if message.id not in kept:
                log.warning(
                    "dispatcher %s: message %d was taken over meanwhile",
                    self.name,
                    message.id,
                    extra=_run_keys(message),
                )

    def _partly_sent(self, message: ClaimedMessage, sent: Sent) -> DispatchResult:
        """Some recipients refused the email for a while (4xx at RCPT TO), the others took it:
        tried again later for those alone (the others are not sent it twice), or, after the
        last attempt, delivered as it went (its reply names those it did not reach)."""
        settings = self.ctx.settings
        if message.attempts >= settings.delivery_max_attempts:
            self._unsaved.append((message, sent, self.ctx.now()))
            self._save_now(self._take_unsaved())
            observe_delivery(message.kind, "delivered")  # /metrics
            return DispatchResult(delivered=1)
        refused = "; ".join(f"{a}: {reply}" for a, reply in sent.refused_for_now)
        error = f"RCPT TO refused for now: {refused} (sent to the others)"
        at = self.ctx.now() + backoff(message.attempts, settings, self.rand)
        with self.ctx.engine.begin() as conn:
            mark_partly_sent(
                conn,
                message,
                owner=self.name,
                accepted=sent.accepted,
                next_attempt_at=at,
                error=error,
                reply=sent.reply,
            )
        note_refused_recipients(self.ctx, message, sent.reply)  # a cc refused with a 5xx...
        log.info(
            "dispatcher %s: message %d retried at %s: %s",
            self.name,
            message.id,
            at,
            error,
            extra=_run_keys(message),
        )
        observe_delivery(message.kind, "retrying")  # /metrics
        return DispatchResult(retrying=1)

    def _take_unsaved(self) -> _Unsaved:
        self._unsaved, unsaved = [], self._unsaved
        return unsaved

    def _failed(
        self,
        message: ClaimedMessage,
        error: str,
        *,
        permanent: bool,
        wait: timedelta | None = None,
    ) -> DispatchResult:
        """Record a failed attempt: failed for good, or retried after `wait` (the server said
        when: Retry-After) or else the backoff."""
        settings = self.ctx.settings
        last = message.attempts >= settings.delivery_max_attempts
        with self.ctx.engine.begin() as conn:
            if permanent or last:
                if last and not permanent:
                    most = settings.delivery_max_attempts
                    error = f"{error} (attempt {message.attempts} of {most}: no more)"
                if mark_failed(conn, message.id, owner=self.name, error=error):
                    # Its run's failure policy and the controller told, in this transaction;
                    # if that fails, the failure sticks all the same (rolled back, the message
                    # would be claimed and failed again and again).
                    try:
                        with conn.begin_nested():
                            message_failed(conn, self.ctx, message, error, now=self.ctx.now())
                    except Exception as exc:
                        log.error(
                            "dispatcher %s: message %d failed, but its run was not told: %s",
                            self.name,
                            message.id,
                            exc,
                            exc_info=True,
                            extra=_run_keys(message),
                        )
                log.warning(
                    "dispatcher %s: message %d failed: %s",
                    self.name,
                    message.id,
                    error,
                    extra=_run_keys(message),
                )
                observe_delivery(message.kind, "failed")  # /metrics
                return DispatchResult(failed=1)
            at = self.ctx.now() + (wait or backoff(message.attempts, settings, self.rand))
            mark_retrying(conn, message.id, owner=self.name, next_attempt_at=at, error=error)
        log.info(
            "dispatcher %s: message %d retried at %s: %s",
            self.name,
            message.id,
            at,
            error,
            extra=_run_keys(message),
        )
        observe_delivery(message.kind, "retrying")  # /metrics
        return DispatchResult(retrying=1)

    def _sleep(self, seconds: float) -> None:
        """The pause after a round that failed: `wake()` and `stop()` end it, a signal (another
        connection's commit) does not."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if not self._wake.wait(left):
                break
            self._wake.clear()
            if self._stop.is_set() or self._called.is_set():
                break
        self._called.clear()
        self._wake.clear()


def run_in_threads(dispatchers: list[Dispatcher], *, once: bool) -> DispatchResult:
    """Run each dispatcher in a thread of its own (`run_once`, or `run` until each is stopped)
    and wait for them all: bounded concurrency, one SMTP connection per thread. What they
    delivered, together."""
    threads = [
        threading.Thread(target=d.run_once if once else d.run, name=f"crmflow-dispatcher-{n}")
        for n, d in enumerate(dispatchers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)  # a signal handler (stop) runs between the waits
    total = DispatchResult()
    for dispatcher in dispatchers:
        total += dispatcher.total
    return total
