"""The dispatcher delivers the outbox's emails to a real SMTP server (aiosmtpd on 127.0.0.1,
started by each test), on SQLite and PostgreSQL: what the receiver gets (headers, MIME, no Bcc
header, the Message-ID of the idempotency key), one connection for many messages, retries that
wait on the row and deliver once, permanent refusals failed at once, and on PostgreSQL two
dispatchers that never deliver a message twice."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from crmflow.delivery.dispatcher import Dispatcher, run_in_threads
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.store.outbox import claim_due, insert_ignoring_duplicates
from crmflow.store.schema import outbox
from tests.conftest import FrozenClock

FLOW = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
reentry: {mode: always}
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        key: welcome
        # One message to its three recipients (a marketing email goes to each on its own:
        # tests/integration/test_unsubscribe.py).
        category: transactional
        from: "Les Amis du Parc <dons@example.org>"
        cc: ["office@example.org"]
        bcc: ["archive@example.org"]
        reply_to: "reply@example.org"
        subject: "Bonjour {{ record.first_name }} !"
        body: "Merci {{ record.first_name }}, à bientôt."
"""


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 that keeps what it receives; it refuses the recipients in
    `refuse` with 550 and answers the next `fail_data` DATA commands with 451."""

    def __init__(self, port: int | None = None, **options: Any) -> None:
        """`options`: aiosmtpd's (TLS, authentication)."""
        self.port = port or _free_port()
        self.options = options
        self.received: list[Received] = []
        self.refuse: set[str] = set()
        self.fail_data = 0
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **self.options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), content, session.peer)
        )
        if self.fail_data > 0:
            self.fail_data -= 1
            return "451 4.3.0 try again later"
        return f"250 2.0.0 queued as Q{len(self.received)}"

    def message_ids(self) -> list[str]:
        return [str(r.message["Message-ID"]) for r in self.received]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def with_smtp(ctx: Context, url: str | None, **settings: Any) -> Context:
    """The context with CRMFLOW_SMTP_URL (and other settings) set as given."""
    return dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"smtp_url": url, **settings})
    )


def _welcome(ctx: Context, admin: Actor, *first_names: str) -> list[int]:
    """The welcome flow started for a new contact of each first name: their emails are in the
    outbox."""
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    ids = []
    for name in first_names:
        data = {"first_name": name, "last_name": "Martin", "email": f"{name.lower()}@example.org"}
        rid = records.create_record(ctx, admin, "contact", data).id
        runs.start_record(ctx, admin, "welcome", rid)
        ids.append(rid)
    return ids


def _rows(ctx: Context) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))


def _email_message(ctx: Context, admin: Actor, rid: int) -> dict[str, Any]:
    """The outbox state of the record's email as `crmflow runs show` reads it."""
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    [action] = [a for run in view.step_runs for a in run.actions if a["type"] == "send_email"]
    message = action["message"]
    assert isinstance(message, dict)
    return message


def test_the_receiver_gets_the_email_as_written_without_a_bcc_header(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")
    result = Dispatcher(with_smtp(ctx, smtp.url)).run_once()
    assert (result.claimed, result.delivered) == (1, 1)

    [got] = smtp.received
    mail = got.message
    assert mail["From"] == "Les Amis du Parc <dons@example.org>"
    assert mail["To"] == "claire@example.org"
    assert mail["Cc"] == "office@example.org"
    assert mail["Reply-To"] == "reply@example.org"
    assert mail["Subject"] == "Bonjour Claire !"
    assert mail["Bcc"] is None
    assert b"archive@example.org" not in got.content
    assert got.mail_from == "dons@example.org"
    assert sorted(got.rcpt_tos) == [
        "archive@example.org",
        "claire@example.org",
        "office@example.org",
    ]
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().strip() == "Merci Claire, à bientôt."
    [row] = _rows(ctx)
    assert mail["Message-ID"] == message_id(row.idempotency_key, "dons@example.org")

    assert (row.status, row.attempts) == ("delivered", 1)
    assert row.delivered_at == ctx.now()
    assert row.server_reply == "250 2.0.0 queued as Q1"
    shown = _email_message(ctx, admin, rid)
    assert shown["status"] == "delivered"
    assert shown["delivered_at"] == ctx.now().isoformat()


def test_many_messages_go_over_one_connection(ctx: Context, admin: Actor, smtp: SmtpServer) -> None:
    _welcome(ctx, admin, "Anna", "Bruno", "Chloe", "David", "Emma")
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url), batch_size=2)
    assert dispatcher.run_once().delivered == 5
    assert len(smtp.received) == 5
    assert len({r.peer for r in smtp.received}) == 1
    assert [r.status for r in _rows(ctx)] == ["delivered"] * 5


def test_a_server_down_is_retried_later_and_the_email_arrives_once(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")
    server = SmtpServer()  # not started: nothing listens on its port
    dispatched = with_smtp(ctx, server.url)
    assert Dispatcher(dispatched).run_once().retrying == 1

    [row] = _rows(ctx)
    assert (row.status, row.attempts) == ("retrying", 1)
    # The first wait is 30 s, less up to half of it (jitter).
    assert ctx.now() + timedelta(seconds=15) <= row.next_attempt_at
    assert row.next_attempt_at <= ctx.now() + timedelta(seconds=30)
    assert "Connection refused" in row.last_error or "ConnectionRefused" in row.last_error
    shown = _email_message(ctx, admin, rid)
    assert (shown["status"], shown["last_error"]) == ("retrying", row.last_error)
    assert shown["next_attempt_at"] == row.next_attempt_at.isoformat()

    server.start()
    try:
        # Not due yet: a new dispatcher (a restart) leaves it to its time, stored on the row.
        assert Dispatcher(dispatched).run_once().claimed == 0
        clock.set(row.next_attempt_at)
        assert Dispatcher(dispatched).run_once().delivered == 1
        assert Dispatcher(dispatched).run_once().claimed == 0
    finally:
        server.stop()
    assert len(server.received) == 1
    [row] = _rows(ctx)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)
    assert row.next_attempt_at is None
    shown = _email_message(ctx, admin, rid)
    assert shown["status"] == "delivered" and "next_attempt_at" not in shown


def test_a_retried_email_carries_the_same_message_id(
    ctx: Context, admin: Actor, clock: FrozenClock, smtp: SmtpServer
) -> None:
    _welcome(ctx, admin, "Claire")
    smtp.fail_data = 1
    dispatched = with_smtp(ctx, smtp.url)
    assert Dispatcher(dispatched).run_once().retrying == 1
    [row] = _rows(ctx)
    assert row.last_error == "DATA refused: 451 4.3.0 try again later"
    clock.set(row.next_attempt_at)
    assert Dispatcher(dispatched).run_once().delivered == 1
    first, second = smtp.message_ids()
    assert first == second == message_id(row.idempotency_key, "dons@example.org")


def test_a_recipient_refused_with_550_fails_at_once(
    ctx: Context, admin: Actor, clock: FrozenClock, smtp: SmtpServer
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")
    smtp.refuse = {"claire@example.org", "office@example.org", "archive@example.org"}
    assert Dispatcher(with_smtp(ctx, smtp.url)).run_once().failed == 1
    [row] = _rows(ctx)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 1, None)
    assert "RCPT TO refused: 550" in row.last_error
    assert "claire@example.org: 550 5.1.1 no such user here" in row.last_error
    assert _email_message(ctx, admin, rid)["status"] == "failed"
    clock.advance(days=1)
    assert Dispatcher(with_smtp(ctx, smtp.url)).run_once().claimed == 0
    assert smtp.received == []


def test_an_address_that_is_not_one_fails_at_once(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock
) -> None:
    payload = {**_payload(1), "to": ["Claire Martin <claire-at-example.org>"]}
    _insert(ctx, [payload])
    assert Dispatcher(with_smtp(ctx, smtp.url)).run_once().failed == 1
    [row] = _rows(ctx)
    assert row.status == "failed"
    assert row.last_error.startswith("'claire-at-example.org' is not an email address")
    assert smtp.received == []


def test_a_message_fails_after_its_last_attempt(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _welcome(ctx, admin, "Claire")
    dispatched = with_smtp(ctx, SmtpServer().url, delivery_max_attempts=3)
    statuses = []
    for _ in range(3):
        Dispatcher(dispatched).run_once()
        [row] = _rows(ctx)
        statuses.append((row.status, row.attempts))
        clock.advance(hours=1)
    assert statuses == [("retrying", 1), ("retrying", 2), ("failed", 3)]
    assert row.last_error.endswith("(attempt 3 of 3: no more)")


def _payload(number: int) -> dict[str, Any]:
    key = f"load:{number}"
    return EmailPayload(
        message_id=message_id(key),
        to=(f"person{number}@example.org",),
        subject=f"Message {number}",
        body="Hello",
    ).model_dump(mode="json")


def _insert(ctx: Context, payloads: list[dict[str, Any]]) -> None:
    """Outbox rows of these email payloads, due now (without a flow: what the dispatcher
    reads of a row is its payload)."""
    now = ctx.now()
    rows = [
        {
            "enrollment_id": 1,
            "step_key": "hello",
            "step_run": number,
            "idempotency_key": f"load:{number}",
            "kind": "email",
            "payload": payload,
            "status": "pending",
            "not_before": now,
            "attempts": 0,
            "created_at": now,
        }
        for number, payload in enumerate(payloads)
    ]
    with ctx.engine.begin() as conn:
        insert_ignoring_duplicates(conn, rows)


def test_two_dispatchers_on_postgres_never_deliver_a_message_twice(
    postgres_ctx: Context, smtp: SmtpServer
) -> None:
    ctx = postgres_ctx
    count = 300
    _insert(ctx, [_payload(number) for number in range(count)])
    dispatched = with_smtp(ctx, smtp.url)
    dispatchers = [Dispatcher(dispatched, batch_size=7, name=f"d{n}") for n in range(2)]
    assert run_in_threads(dispatchers, once=True).delivered == count
    ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == count
    assert all(d.total.delivered > 0 for d in dispatchers), [d.total for d in dispatchers]
    assert {r.status for r in _rows(ctx)} == {"delivered"}


def test_a_message_left_sending_by_a_dead_dispatcher_goes_once_its_lease_ran_out(
    ctx: Context, admin: Actor, clock: FrozenClock, smtp: SmtpServer
) -> None:
    _welcome(ctx, admin, "Claire")
    # A dispatcher claims the message and dies before it could say how it went.
    [claimed] = claim_due(
        ctx.engine,
        now=ctx.now(),
        owner="dead",
        limit=10,
        lease=timedelta(minutes=5),
        kinds=("email",),
    )
    dispatched = with_smtp(ctx, smtp.url)
    assert Dispatcher(dispatched).run_once().claimed == 0  # still leased to the dead one
    clock.advance(minutes=5)
    assert Dispatcher(dispatched).run_once().delivered == 1
    [row] = _rows(ctx)
    assert (row.status, row.attempts, row.lease_owner) == ("delivered", 2, None)
    assert smtp.message_ids() == [claimed.payload["message_id"]]


class LaterServer(SmtpServer):
    """Refuses the recipients in `later` with 451 (a greylisting server, a full mailbox)."""

    def __init__(self) -> None:
        super().__init__()
        self.later: set[str] = set()

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.later:
            return "451 4.7.1 greylisted, try again later"
        return await super().handle_RCPT(server, session, envelope, address, options)


def test_a_recipient_refused_for_now_among_accepted_ones_is_tried_again_alone(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    [rid] = _welcome(ctx, admin, "Claire")
    server = LaterServer()
    server.later = {"office@example.org"}
    server.start()
    try:
        dispatched = with_smtp(ctx, server.url)
        assert Dispatcher(dispatched).run_once().retrying == 1
        [row] = _rows(ctx)
        assert row.status == "retrying"
        assert "office@example.org: 451 4.7.1 greylisted" in row.last_error
        assert _email_message(ctx, admin, rid)["status"] == "retrying"

        server.later = set()
        clock.set(row.next_attempt_at)
        assert Dispatcher(dispatched).run_once().delivered == 1
        clock.advance(days=1)
        assert Dispatcher(dispatched).run_once().claimed == 0
    finally:
        server.stop()
    first, second = server.received
    assert sorted(first.rcpt_tos) == ["archive@example.org", "claire@example.org"]
    assert second.rcpt_tos == ["office@example.org"]  # alone: the others are not sent it twice
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert second.message["To"] == "claire@example.org"  # the same message, headers and all
    [row] = _rows(ctx)
    assert (row.status, row.attempts) == ("delivered", 2)
