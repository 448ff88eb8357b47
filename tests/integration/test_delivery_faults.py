"""The delivery fault test (issue 10): 5,000 emails from a flow go to a real SMTP server while the
server is killed and started again and `crmflow dispatch` processes are killed with SIGKILL and
restarted; on SQLite with one dispatcher, on PostgreSQL with three at once.

The server (tests/integration/counting_smtp.py, a process of its own) writes a journal line for
each message it accepts, naming the message's Message-ID and the connection it came on, before
it answers 250; and a line when a client says QUIT. At the end:

- every email arrived: the Message-IDs received are exactly those of the 5,000 outbox rows;
- every outbox row is `delivered` (none failed, none left retrying or sending);
- **none twice outside the at-least-once window** (docs/delivery.md). The window: the server
  accepted a message and its dispatcher died (or the connection was cut) before the outcome was
  committed; the message is sent again once its lease has run out. A dispatcher sends one
  message at a time on its connection and commits its outcome before it starts the next, so a
  copy in that window is necessarily **the last message of a connection that ended without
  QUIT**. The rule checked: of the copies of one Message-ID, every copy but the last is the last
  message of a connection that ended without QUIT; and there are at most as many such extra
  copies as connections that can have been cut that way (each dispatcher kill cuts one, each
  server kill cuts one per running dispatcher). (A dispatcher commits the outcomes of up to
  GROUP emails together, CRMFLOW_DELIVERY_COMMIT_EVERY's default: that widens this to its last
  GROUP messages, GROUP copies per cut: `_copies_outside_window` takes it.) A second copy sent
  for any other reason (a live dispatcher's lease ran out and another took the message, a claim
  that leased a row twice) is sent while the first connection goes on, and fails the test.
  The database stays up here (a commit that fails is tried again, the outcomes held meanwhile:
  tests/integration/test_delivery_grouped_commits.py).

What bounds each test is the dispatchers' CPU (8-10 ms a message; the summary line printed with
-s gives it): about 41 s for SQLite's one dispatcher and 59 s for PostgreSQL's three (with the
SMTP server's), so about 45 s each on a 2-core machine of its own; 45-145 s (SQLite) and
65-215 s (PostgreSQL) measured on one shared by other work. Marked `slow`, still run by CI.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

from bench.bench_steps import create_flow, enroll_all, fill_contacts
from crmflow.services.context import Context
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.store.schema import outbox
from crmflow.worker import run_once
from tests.conftest import FROZEN_NOW

EMAILS = 5_000
# A dispatcher starts no message of a batch once half of its lease has passed (the rest wait
# for the lease to run out): 5 s for a batch of 20 leaves room for a machine busy with other
# work; a killed dispatcher's batch goes again 10 s later, while the others go on.
LEASE_SECONDS = 10
BATCH = 20
OUTAGE_SECONDS = 3.0  # how long the SMTP server stays down (at least)
# The dispatchers run with the default settings but those set below: the outcomes of up to
# CRMFLOW_DELIVERY_COMMIT_EVERY emails committed together, so a copy in the window is one of the
# last GROUP messages of its connection.
GROUP = Settings().delivery_commit_every
LIMIT_SECONDS = 400  # the whole run, at most (a hang fails the test instead of blocking CI)
REPO = Path(__file__).resolve().parents[2]
FLOW = """\
schema_version: 1
key: faults
name: Fault test
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: mail
    actions:
      - type: send_email
        from: "Fault test <faults@example.org>"
        subject: "Hello {{ record.first_name }}"
        body: "Dear {{ record.first_name }} {{ record.last_name }}, thank you."
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpProcess:
    """tests/integration/counting_smtp.py in a process of its own, on one port for its life."""

    def __init__(self, journal: Path) -> None:
        self.port = _free_port()
        self.journal = journal
        self.process: subprocess.Popen[str] | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.integration.counting_smtp"]
        command += [str(self.port), str(self.journal)]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        assert ready == "ready", f"the SMTP server did not start: {ready!r}"

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@dataclass
class Dispatcher:
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float


class Dispatchers:
    """`crmflow dispatch` processes with a short lease, killed and restarted by the test."""

    def __init__(self, url: str, smtp_url: str, logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
        self.env |= {
            "CRMFLOW_DATABASE_URL": url,
            "CRMFLOW_SMTP_URL": smtp_url,
            # A failed attempt comes back within 0.25-2 s; no message runs out of attempts.
            "CRMFLOW_DELIVERY_RETRY_SECONDS": "0.5",
            "CRMFLOW_DELIVERY_RETRY_MAX_SECONDS": "2",
            "CRMFLOW_DELIVERY_MAX_ATTEMPTS": "100",
        }
        self.exe = str(Path(sys.executable).parent / "crmflow")
        self.logs = logs
        self.running: list[Dispatcher] = []
        self.started = 0
        self.kills = 0

    def start(self) -> None:
        log = (self.logs / f"dispatch-{self.started}.log").open("wb")
        self.started += 1
        command = [self.exe, "dispatch", "--lease-seconds", str(LEASE_SECONDS)]
        command += ["--batch-size", str(BATCH)]
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        self.running.append(Dispatcher(process, log, time.monotonic()))

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL one that has been running a while (not one still importing), and start
        another in its place."""
        settled = [d for d in self.running if time.monotonic() - d.started > 2.5]
        victim = rng.choice(settled or self.running)
        self.running.remove(victim)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        victim.log.close()
        self.kills += 1
        self.start()

    def stop_all(self) -> None:
        for d in self.running:
            d.process.terminate()
        for d in self.running:
            try:
                d.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.process.kill()
                d.process.wait()
            d.log.close()
        self.running = []

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob("dispatch-*.log"))
        )


@dataclass
class Report:
    seconds: float = 0.0
    dispatcher_kills: int = 0
    server_kills: int = 0
    retrying_seen: int = 0  # messages `retrying` while the server was down
    cpu: float = 0.0  # seconds of CPU the dispatchers and the SMTP server used
    copies: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # mid: (conn, n)
    sent_on: dict[str, list[int]] = field(default_factory=dict)  # conn: its D lines, in order
    quit: set[str] = field(default_factory=set)  # connections that ended with QUIT


def _prepare(ctx: Context) -> set[str]:
    """The flow's step run for EMAILS contacts: EMAILS outbox rows; their Message-IDs."""
    fill_contacts(ctx, EMAILS, now=FROZEN_NOW)
    enroll_all(ctx, create_flow(ctx, FLOW), now=FROZEN_NOW)
    run_once(ctx, now=FROZEN_NOW)
    with ctx.engine.connect() as conn:
        payloads = list(conn.execute(sa.select(outbox.c.payload)).scalars())
    expected = {str(p["message_id"]) for p in payloads}
    assert len(payloads) == EMAILS and len(expected) == EMAILS
    return expected


def _count(ctx: Context, status: str) -> int:
    query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == status)
    with ctx.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _statuses(ctx: Context) -> dict[str, int]:
    query = sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)
    with ctx.engine.connect() as conn:
        return {str(s): int(n) for s, n in conn.execute(query)}


def _read_journal(path: Path, report: Report) -> None:
    copies: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for n, line in enumerate(path.read_text().splitlines()):
        kind, conn, *rest = line.split()
        if kind == "D":
            copies[rest[0]].append((conn, n))
            report.sent_on.setdefault(conn, []).append(n)
        else:
            report.quit.add(conn)
    report.copies = dict(copies)


def _outage(ctx: Context, server: SmtpProcess) -> int:
    """Kill the SMTP server; start it again once OUTAGE_SECONDS have passed and some messages
    went to `retrying` for it (a dispatcher still starting may not have tried any yet); how
    many did."""
    server.kill()
    down = time.monotonic()
    retrying = 0
    while time.monotonic() - down < OUTAGE_SECONDS or retrying == 0:
        assert time.monotonic() - down < 30, "no message went to retrying with the server down"
        time.sleep(0.2)
        retrying = max(retrying, _count(ctx, "retrying"))
    server.start()
    return retrying


def _run_with_faults(ctx: Context, tmp: Path, *, dispatchers: int, kills: int) -> Report:
    """Deliver the outbox with `dispatchers` processes; kill one `kills` times and the SMTP
    server once, at random moments spread over the run (drawn as shares of the emails
    delivered, so that each fault lands while emails are going)."""
    rng = random.Random(10)
    report = Report()
    server = SmtpProcess(tmp / "journal.txt")
    pool = Dispatchers(ctx.engine.url.render_as_string(hide_password=False), server.url, tmp)
    # Kill i lands in the i-th of `kills` equal parts of 10%-90% of the emails, at a random
    # point of its middle; the outage anywhere in 30%-70%.
    part = 0.8 / kills
    plan = [(0.1 + part * (i + rng.uniform(0.2, 0.8)), "kill") for i in range(kills)]
    plan = sorted([*plan, (rng.uniform(0.3, 0.7), "outage")])
    started = time.monotonic()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.start()
    try:
        for _ in range(dispatchers):
            pool.start()
        while (delivered := _count(ctx, "delivered")) < EMAILS:
            assert time.monotonic() - started < LIMIT_SECONDS, (
                f"{delivered} of {EMAILS} delivered after {LIMIT_SECONDS}s: {_statuses(ctx)}"
            )
            if plan and delivered >= plan[0][0] * EMAILS:
                _, fault = plan.pop(0)
                time.sleep(rng.uniform(0.0, 0.3))
                if fault == "kill":
                    pool.kill_one(rng)
                else:
                    report.retrying_seen = _outage(ctx, server)
            time.sleep(0.2)
    finally:
        pool.stop_all()
        server.stop()
    assert not plan, f"faults not made: {plan}"
    log = pool.log_text()
    assert "Traceback" not in log, log[-3000:]
    report.seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report.cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    report.dispatcher_kills, report.server_kills = pool.kills, server.kills
    _read_journal(server.journal, report)
    return report


def _copies_outside_window(report: Report, group: int = 1) -> tuple[list[str], int]:
    """The Message-IDs with a copy sent outside the at-least-once window (a copy but the last
    that is not one of the last `group` messages of a connection that ended without QUIT), and
    how many copies beyond the first were received in all. `group`: the outcomes a dispatcher
    commits together (CRMFLOW_DELIVERY_COMMIT_EVERY once it exists; 1: each on its own)."""
    outside = []
    extra = 0
    for mid, copies in report.copies.items():
        for conn, n in copies[:-1]:
            extra += 1
            if conn in report.quit or n not in report.sent_on[conn][-group:]:
                outside.append(mid)
    return outside, extra


def _check(ctx: Context, expected: set[str], report: Report, *, dispatchers: int) -> None:
    # Every email arrived, and nothing else did.
    assert set(report.copies) == expected
    assert _statuses(ctx) == {"delivered": EMAILS}
    # The faults happened: the dispatchers were killed, and the server's outage sent
    # messages to retrying.
    assert report.server_kills == 1
    assert report.retrying_seen > 0
    # None twice outside the window (the module's docstring).
    outside, extra = _copies_outside_window(report, GROUP)
    assert outside == [], f"sent twice outside the at-least-once window: {outside[:5]}"
    cuts = report.dispatcher_kills + report.server_kills * dispatchers
    assert extra <= cuts * GROUP
    print(
        f"\ndelivery faults: {ctx.engine.dialect.name} dispatchers={dispatchers} "
        f"emails={EMAILS} dispatcher kills={report.dispatcher_kills} server kills="
        f"{report.server_kills} retrying during the outage={report.retrying_seen} "
        f"copies in the window={extra} (at most {cuts * GROUP}) {report.seconds:.1f}s "
        f"(CPU of the dispatchers and the server: {report.cpu:.1f}s) "
        f"copies per message: {dict(Counter(len(c) for c in report.copies.values()))}"
    )


def test_the_window_rule_refuses_a_copy_sent_on_a_connection_that_went_on(tmp_path: Path) -> None:
    # What the fault tests count as a copy in the window, and what not: <a> was the last
    # message of connection 1, cut without QUIT (allowed); <b> was sent on connection 2, which
    # went on to send <c> (not allowed); <d> was the last of connection 3, which said QUIT (not
    # allowed: its dispatcher knew the server's answer).
    journal = tmp_path / "journal.txt"
    lines = ["D 1 <x>", "D 1 <a>", "D 2 <b>", "D 2 <c>", "D 3 <d>", "Q 3"]
    lines += ["D 4 <a>", "D 4 <b>", "D 4 <d>", "Q 4"]
    journal.write_text("\n".join(lines) + "\n")
    report = Report()
    _read_journal(journal, report)
    assert _copies_outside_window(report) == (["<b>", "<d>"], 3)
    # Outcomes committed two at a time: <b> was among the last two of its connection, which
    # was cut; <d>'s still said QUIT.
    assert _copies_outside_window(report, group=2) == (["<d>"], 3)


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Context:
    context = Context.from_settings(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}"))
    upgrade_database(context)
    return context


@pytest.mark.slow
def test_sqlite_one_dispatcher_killed_and_the_server_down_delivers_every_email_once(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    expected = _prepare(sqlite_ctx)
    report = _run_with_faults(sqlite_ctx, tmp_path, dispatchers=1, kills=3)
    assert report.dispatcher_kills == 3
    _check(sqlite_ctx, expected, report, dispatchers=1)
