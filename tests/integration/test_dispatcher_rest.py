"""Idle cost (issue 14), the dispatcher: at rest it makes at most one statement per wake-up (a
look: the next due time), and none between; it is woken by the messages other connections and
processes write (NOTIFY crmflow_outbox on PostgreSQL, the commit watch on SQLite), so its
bounded sleep is long (LISTENING_MAX_IDLE, 20 s) and a message still goes at once. Its
heartbeat (what /api/health and `crmflow status` read) goes with the look of a wake-up, as an
idle worker's does, in the same statement.

Statements are counted with SQLAlchemy's `before_cursor_execute` (in this process on the
dispatcher's thread; in a `crmflow dispatch` / `crmflow worker` process by the benchmark's child,
`bench.bench_wakeup --cli-child`, by thread). No timing is asserted beyond generous bounds that
only a missing signal would exceed (20 s of safety sleep against 10 s allowed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import crmflow.delivery.dispatcher as dispatcher_module
from bench.bench_wakeup import email_row, message_went
from crmflow.delivery.dispatcher import LISTENING_MAX_IDLE, Dispatcher
from crmflow.services.context import Context
from crmflow.services.health import FORGET_AFTER, check_health
from crmflow.store.heartbeats import Heartbeat, read_heartbeats
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.schema import outbox
from tests.integration.helpers import eventually
from tests.integration.test_delivery_smtp import SmtpServer, with_smtp

_THREAD = "dispatcher-at-rest"
_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


class _Counted:
    """The dispatcher's statements, each with the number of wake-ups before it."""

    def __init__(self, ctx: Context, dispatcher: Dispatcher) -> None:
        self.statements: list[tuple[int, str]] = []

        def made(*args: object) -> None:
            if threading.current_thread().name == _THREAD:  # not the test's own
                self.statements.append((dispatcher.wakeups, " ".join(str(args[2]).split())))

        sa.event.listen(ctx.engine, "before_cursor_execute", made)


@contextmanager
def _running(dispatcher: Dispatcher) -> Iterator[None]:
    thread = threading.Thread(target=dispatcher.run, daemon=True, name=_THREAD)
    thread.start()
    try:
        yield
    finally:
        dispatcher.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _write(ctx: Context, key: str, at: datetime) -> None:
    """An outbox email written as the API writes one, on a connection of its own."""
    with ctx.engine.begin() as conn:
        insert_ignoring_duplicates(conn, [email_row(key, at)])


def _status(ctx: Context, key: str) -> str | None:
    with ctx.engine.connect() as conn:
        found: str | None = conn.execute(
            sa.select(outbox.c.status).where(outbox.c.idempotency_key == key)
        ).scalar()
    return found


def test_an_idle_dispatcher_makes_one_statement_per_wake_up(ctx: Context) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    dispatcher = Dispatcher(ctx, max_idle=0.1, name="resting")  # wake-ups often
    counted = _Counted(ctx, dispatcher)
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 2, 30)
        woke = dispatcher.wakeups
        time.sleep(1.5)
        after = [(n, sql) for n, sql in counted.statements if n > woke]
        assert dispatcher.wakeups - woke >= 5, dispatcher.wakeups - woke
        assert dispatcher.total.claimed == 0  # no round: nothing was due
        per_wakeup = Counter(n for n, _ in after)
        assert max(per_wakeup.values()) == 1, after  # one statement after each wake-up
        # That one: the next due time, no BEGIN / COMMIT around it, no claim.
        assert all(sql.startswith("SELECT (SELECT min(outbox.not_before)") for _, sql in after)


def _heartbeat(ctx: Context, name: str) -> Heartbeat | None:
    with ctx.engine.connect() as conn:
        found = [b for b in read_heartbeats(conn, since=ctx.now() - FORGET_AFTER) if b.name == name]
    return found[0] if found else None


def _beat_at(ctx: Context, name: str) -> datetime | None:
    beat = _heartbeat(ctx, name)
    return beat.beat_at if beat is not None else None


def test_an_idle_dispatcher_beats_with_its_looks_one_statement_per_wake_up(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an idle worker: its heartbeat goes with the look of a wake-up when one is due (every
    REST_BEAT_EVERY, here 0.3 s), in the look's one statement; /api/health's check sees it alive,
    and, once it stopped, stopped."""
    ctx.clock = lambda: datetime.now(UTC)
    monkeypatch.setattr(dispatcher_module, "REST_BEAT_EVERY", 0.3)
    dispatcher = Dispatcher(ctx, max_idle=0.1, name="beating")
    counted = _Counted(ctx, dispatcher)
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 2, 30)
        woke = dispatcher.wakeups
        beat_before = _beat_at(ctx, "beating")
        watch = dispatcher._watch.commit_watch if dispatcher._watch is not None else None
        seen = watch.changes if watch is not None else 0
        time.sleep(1.5)
        after = [(n, sql) for n, sql in counted.statements if n > woke]
        assert dispatcher.wakeups - woke >= 5, dispatcher.wakeups - woke
        assert dispatcher.total.claimed == 0  # no round: nothing was due
        assert max(Counter(n for n, _ in after).values()) == 1, after  # one per wake-up
        looks = ("SELECT (SELECT min(outbox.not_before)", "INSERT INTO worker_heartbeats", "WITH")
        assert all(sql.startswith(looks) for _, sql in after), after
        assert all("outbox.not_before" in sql for _, sql in after)  # each a look, beat or not
        beats = [sql for _, sql in after if "worker_heartbeats" in sql]
        assert len(beats) >= 2, after  # the heartbeat went with the looks
        beat_after = _beat_at(ctx, "beating")
        assert beat_before is not None and beat_after is not None and beat_after > beat_before
        if ctx.engine.dialect.name == "sqlite":
            # Its heartbeats, on the commit watch's connection, did not wake it: the wake-ups
            # were the bounded sleep's ends.
            assert watch is not None and watch.changes == seen
        health = check_health(ctx)
        [loop] = health.loops
        assert (loop["name"], loop["kind"], loop["state"]) == ("beating", "dispatcher", "alive")
        assert loop["in_this_process"] is True and loop["last_error"] is None
        assert health.kinds["dispatcher"] == {"status": "ok", "alive": 1, "note": "1 of 1 alive"}
    beat = _heartbeat(ctx, "beating")
    assert beat is not None and beat.stopped_at is not None  # a clean stop is said
    health = check_health(ctx)
    assert [loop["state"] for loop in health.loops] == ["stopped"]
    assert health.kinds["dispatcher"]["status"] == "none" and health.ok


def test_a_busy_dispatcher_s_heartbeat_says_its_rounds_completed(ctx: Context) -> None:
    """Three emails delivered (the mail catcher): the heartbeat shows the last success."""
    ctx.clock = lambda: datetime.now(UTC)
    dispatcher = Dispatcher(ctx, name="busy")
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 1, 30)
        for n in range(3):
            _write(ctx, f"busy:{n}", datetime.now(UTC))
        assert eventually(lambda: all(message_went(ctx, f"busy:{n}") for n in range(3)), 10.0)
        assert eventually(lambda: dispatcher.looks >= 2, 30)  # at rest again
    beat = _heartbeat(ctx, "busy")
    assert beat is not None and beat.kind == "dispatcher"
    assert beat.last_success_at is not None and beat.last_error is None


def test_a_message_another_connection_writes_goes_at_once_not_at_the_safety_look(
    ctx: Context, smtp: SmtpServer
) -> None:
    sending = with_smtp(ctx, smtp.url)
    sending.clock = lambda: datetime.now(UTC)
    dispatcher = Dispatcher(sending, name="woken")  # the default: the long sleep
    counted = _Counted(sending, dispatcher)
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 1, 30)
        assert dispatcher._watch is not None and dispatcher._watch.signalled
        assert dispatcher._idle_bound() == LISTENING_MAX_IDLE
        rested = len(counted.statements)
        time.sleep(0.5)
        assert len(counted.statements) == rested  # none between wake-ups
        _write(ctx, "news:1", datetime.now(UTC))
        # Within the 20 s sleep: woken by the NOTIFY / the commit seen.
        assert eventually(lambda: len(smtp.received) == 1, 10.0)
        assert eventually(lambda: _status(ctx, "news:1") == "delivered", 10.0)
    # The signal's look, the claim, the outcome, and a look at rest again: a few looks.
    woken = [sql for _, sql in counted.statements[rested:]]
    assert sum(sql.startswith("SELECT (SELECT min(outbox.not_before)") for sql in woken) <= 4


def test_a_message_due_later_goes_at_its_time_read_at_the_wake_up(
    ctx: Context, smtp: SmtpServer
) -> None:
    """Written for later (a scheduled email): the wake-up's look reads its time, and the
    dispatcher sleeps until then, not until its safety look."""
    sending = with_smtp(ctx, smtp.url)
    sending.clock = lambda: datetime.now(UTC)
    dispatcher = Dispatcher(sending, name="planned")
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 1, 30)
        written = time.monotonic()
        _write(ctx, "later:1", datetime.now(UTC) + timedelta(seconds=1.5))
        assert eventually(lambda: len(smtp.received) == 1, 12.0)
        assert time.monotonic() - written >= 1.4  # not before its time
        # The server has the message before the dispatcher adds the batch to its totals.
        assert eventually(lambda: dispatcher.total.claimed == 1, 10.0)


def test_a_retry_goes_at_its_next_attempt_without_a_signal(ctx: Context, smtp: SmtpServer) -> None:
    """A retry's next attempt is written by the dispatcher itself: it sleeps until it."""
    sending = with_smtp(ctx, smtp.url, delivery_retry_seconds=1.0)
    sending.clock = lambda: datetime.now(UTC)
    smtp.fail_data = 1  # the first attempt: 451
    dispatcher = Dispatcher(sending, name="retrying")
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 1, 30)
        _write(ctx, "retry:1", datetime.now(UTC))
        assert eventually(lambda: _status(ctx, "retry:1") == "delivered", 12.0)
    assert len(smtp.received) == 2
    assert dispatcher.total.retrying == 1 and dispatcher.total.delivered == 1


def test_dispatchers_of_one_process_share_one_signal(ctx: Context) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    dispatchers = [Dispatcher(ctx, name=f"shared-{n}") for n in range(3)]
    threads = [threading.Thread(target=d.run, daemon=True) for d in dispatchers]
    for thread in threads:
        thread.start()
    try:
        assert eventually(lambda: all(d.looks >= 1 for d in dispatchers), 30)
        watches = [d._watch for d in dispatchers]
        assert all(w is not None and w.signalled for w in watches)
        shared = {id(w._shared) for w in watches if w is not None}
        assert len(shared) == 1
        _write(ctx, "shared:1", datetime.now(UTC))
        assert eventually(lambda: message_went(ctx, "shared:1"), 10.0)
    finally:
        for d in dispatchers:
            d.stop()
        for thread in threads:
            thread.join(timeout=30)


def _cli_env(ctx: Context, smtp: SmtpServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    env["PYTHONPATH"] = str(_ROOT)
    env["CRMFLOW_SMTP_URL"] = smtp.url
    return env


@pytest.mark.parametrize("command", ["dispatch", "worker"])
def test_crmflow_at_rest_delivers_another_process_s_message_and_counts_its_statements(
    ctx: Context, smtp: SmtpServer, tmp_path: Path, command: str
) -> None:
    """`crmflow dispatch` (or `crmflow worker`, with its dispatcher) in a process of its own, at
    rest; an email written here, as the API of another process would: it arrives at the SMTP
    server long before the dispatcher's 20 s safety look, and at rest the dispatcher's threads
    made no more statements than wake-ups."""
    out = tmp_path / "child.json"
    ready = Path(f"{out}.ready")
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_wakeup", "--cli-child", ctx.settings.database_url,
         str(out), command, "signal"],
        env=_cli_env(ctx, smtp), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert eventually(lambda: ready.exists() or child.poll() is not None, 300)
        assert child.poll() is None, child.communicate()[1]
        time.sleep(1.0)
        resting_from = time.time()
        time.sleep(1.0)
        written = time.time()
        _write(ctx, "cli:1", datetime.now(UTC))
        assert eventually(lambda: len(smtp.received) == 1, 10.0)
        arrived = time.time()
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert arrived - written < 10.0
    made = json.loads(out.read_text())
    dispatcher = [at for at, kind in made["stamps"] if kind == "dispatcher"]
    woke = [at for at, kind in made["woke"] if kind == "dispatcher"]
    at_rest = [at for at in dispatcher if resting_from <= at < written]
    wakeups = [at for at in woke if resting_from <= at < written]
    assert len(at_rest) <= len(wakeups), (at_rest, wakeups)  # at most one per wake-up
    assert any(at >= written for at in woke)  # woken by the message, then it went
    if command == "worker":
        worker = [at for at, kind in made["stamps"] if kind == "worker"]
        worker_woke = [at for at, kind in made["woke"] if kind == "worker"]
        resting = [at for at in worker if resting_from <= at < written]
        assert len(resting) <= len([at for at in worker_woke if resting_from <= at < written])


def test_a_dispatcher_with_no_signal_still_polls(ctx: Context, smtp: SmtpServer) -> None:
    """Without the signal (LISTEN refused, no commit watch) the short sleep finds the
    message."""
    sending = with_smtp(ctx, smtp.url)
    sending.clock = lambda: datetime.now(UTC)
    dispatcher = Dispatcher(sending, name="polling")
    dispatcher._watched = lambda: None  # type: ignore[method-assign]
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 1, 30)
        assert dispatcher._idle_bound() == 5.0
        _write(ctx, "poll:1", datetime.now(UTC))
        assert eventually(lambda: len(smtp.received) == 1, 15.0)
    beat = _heartbeat(ctx, "polling")
    assert beat is not None and beat.stopped_at is not None and beat.last_error is None


def test_a_dispatcher_with_no_signal_beats_with_its_polled_looks(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.clock = lambda: datetime.now(UTC)
    monkeypatch.setattr(dispatcher_module, "REST_BEAT_EVERY", 0.2)
    dispatcher = Dispatcher(ctx, max_idle=0.1, name="polling-beats")
    dispatcher._watched = lambda: None  # type: ignore[method-assign]
    with _running(dispatcher):
        assert eventually(lambda: dispatcher.looks >= 2, 30)
        first = _beat_at(ctx, "polling-beats")
        assert first is not None
        assert eventually(lambda: (_beat_at(ctx, "polling-beats") or first) > first, 10.0)
        [loop] = check_health(ctx).loops
        assert loop["state"] == "alive" and loop["last_error"] is None
