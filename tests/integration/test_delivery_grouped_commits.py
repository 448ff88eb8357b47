"""CRMFLOW_DELIVERY_COMMIT_EVERY: a dispatcher that commits the outcomes of several sent messages
together still delivers and archives each once. A group whose commit fails is written again (the
server accepted its messages: they are not sent again), or held until the database is back, the
dispatcher sending nothing more meanwhile; one message whose outcome cannot be written with its
archive line does not hold back the others. Only a dispatcher that dies with a group unwritten
leaves exactly that group's messages `sending`, sent again, with the same Message-ID, once their
lease has run out: the at-least-once window docs/delivery.md states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery import email as email_module
from crmflow.delivery.dispatcher import DEFAULT_LEASE, Dispatcher
from crmflow.engine.commands import SmsPayload
from crmflow.services.context import Actor, Context
from crmflow.store.database import OperationalError
from crmflow.store.outbox import insert_ignoring_duplicates, mark_sent
from crmflow.store.schema import outbox, record_history
from tests.conftest import FrozenClock
from tests.integration.test_delivery_smtp import (
    SmtpServer,
    _insert,
    _payload,
    _welcome,
    with_smtp,
)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _statuses(ctx: Context) -> Counter[str]:
    with ctx.engine.connect() as conn:
        return Counter(conn.execute(sa.select(outbox.c.status)).scalars())


def test_outcomes_committed_in_groups_are_each_delivered_and_archived_once(
    ctx: Context, admin: Actor, smtp: SmtpServer
) -> None:
    names = ["Anna", "Bruno", "Chloe", "David", "Emma", "Filip", "Gina"]
    _welcome(ctx, admin, *names)
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=3)
    assert Dispatcher(grouped, batch_size=5).run_once().delivered == 7
    assert len(smtp.received) == len(set(smtp.message_ids())) == 7
    assert _statuses(ctx) == {"delivered": 7}
    with ctx.engine.connect() as conn:
        rows = list(conn.execute(sa.select(outbox.c.server_reply, outbox.c.delivered_at)))
        lines = list(conn.execute(sa.select(record_history.c.message)).scalars())
    assert all(r.server_reply.startswith("250 2.0.0 queued as Q") for r in rows)
    assert all(r.delivered_at == ctx.now() for r in rows)
    assert sorted(line for line in lines if line.startswith("Email sent to")) == sorted(
        f"Email sent to {n.lower()}@example.org: Bonjour {n} !" for n in names
    )


def _failing_commits(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> list[int]:
    """`mark_sent` raises the database's error at the calls numbered in `failing` (from 1)."""
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> set[int]:
        calls.append(1)
        if len(calls) in failing:
            raise OperationalError("UPDATE outbox ...", {}, Exception("the database went away"))
        return mark_sent(*args, **kwargs)

    monkeypatch.setattr("crmflow.delivery.dispatcher.mark_sent", flaky)
    monkeypatch.setattr("crmflow.delivery.dispatcher._SAVE_PAUSES", (0.0, 0.0, 0.0))
    return calls


def test_a_group_whose_commit_fails_once_is_written_again_and_nothing_is_sent_twice(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(ctx, [_payload(number) for number in range(10)])
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=4)
    _failing_commits(monkeypatch, {2})
    assert Dispatcher(grouped, batch_size=8).run_once().delivered == 10
    assert _statuses(ctx) == {"delivered": 10}
    clock.advance(seconds=DEFAULT_LEASE.total_seconds())
    assert Dispatcher(grouped).run_once().claimed == 0
    assert sorted(Counter(smtp.message_ids()).values()) == [1] * 10


def test_outcomes_held_while_the_database_is_away_are_written_before_anything_else_is_sent(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(ctx, [_payload(number) for number in range(10)])
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=4)
    _failing_commits(monkeypatch, set(range(2, 10)))  # the second group: 8 tries
    # A batch of one group: the next batch waits for that group's commit (at most a batch of
    # sent messages wait for theirs), so the failed commit stops the sending at that point.
    dispatcher = Dispatcher(grouped, batch_size=4)
    with pytest.raises(OperationalError):
        dispatcher.run_once()
    assert len(smtp.received) == 8
    assert _statuses(ctx) == {"delivered": 4, "sending": 4, "pending": 2}
    # Its next round (`run()` goes on after a pause) writes them, then sends the rest.
    assert dispatcher.run_once().delivered == 2
    assert _statuses(ctx) == {"delivered": 10}
    clock.advance(seconds=DEFAULT_LEASE.total_seconds())
    assert Dispatcher(grouped).run_once().claimed == 0
    assert sorted(Counter(smtp.message_ids()).values()) == [1] * 10


def test_a_group_left_unwritten_by_a_dispatcher_that_died_goes_again_after_its_lease_only(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(ctx, [_payload(number) for number in range(10)])
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=4)
    _failing_commits(monkeypatch, set(range(2, 10)))
    with pytest.raises(OperationalError):
        Dispatcher(grouped, batch_size=4).run_once()  # and it dies with what it held
    assert _statuses(ctx) == {"delivered": 4, "sending": 4, "pending": 2}

    assert Dispatcher(grouped).run_once().claimed == 2  # the 4 are still leased
    clock.advance(seconds=DEFAULT_LEASE.total_seconds())
    assert Dispatcher(grouped).run_once().delivered == 4
    assert _statuses(ctx) == {"delivered": 10}
    copies = Counter(smtp.message_ids())
    assert len(copies) == 10
    # Exactly the group whose commit was lost went twice, with the same Message-ID.
    assert sorted(copies.values()) == [1] * 6 + [2] * 4


def test_an_outcome_whose_archive_line_cannot_be_written_does_not_hold_back_its_group(
    ctx: Context,
    admin: Actor,
    smtp: SmtpServer,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["Anna", "Bruno", "Chloe", "David"]
    _welcome(ctx, admin, *names)
    real = email_module.archive_entry

    def broken_for_bruno(message: Any, sent: Any, at: Any) -> Any:
        if "bruno" in str(message.payload.get("to")):
            raise ValueError("no archive line for Bruno")
        return real(message, sent, at)

    monkeypatch.setattr("crmflow.delivery.dispatcher.archive_entry", broken_for_bruno)
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=4)
    assert Dispatcher(grouped).run_once().delivered == 4
    assert _statuses(ctx) == {"delivered": 4}
    with ctx.engine.connect() as conn:
        lines = list(conn.execute(sa.select(record_history.c.message)).scalars())
    sent_lines = sorted(line for line in lines if line.startswith("Email sent to"))
    assert sent_lines == [
        f"Email sent to {n.lower()}@example.org: Bonjour {n} !" for n in names if n != "Bruno"
    ]
    clock.advance(seconds=DEFAULT_LEASE.total_seconds())
    assert Dispatcher(grouped).run_once().claimed == 0
    assert len(smtp.received) == 4


def test_by_default_emails_outcomes_are_committed_together_and_an_sms_at_once(
    ctx: Context, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms = SmsPayload(to="+33612345678", text="Rendez-vous demain").model_dump(mode="json")
    payloads = [_payload(0), _payload(1), _payload(2), sms, _payload(4), _payload(5)]
    now = ctx.now()
    rows = [
        {
            "enrollment_id": 1,
            "step_key": "hello",
            "step_run": number,
            "idempotency_key": f"mixed:{number}",
            "kind": "sms" if payload is sms else "email",
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
        ids = list(conn.execute(sa.select(outbox.c.id).order_by(outbox.c.id)).scalars())
    groups: list[list[int]] = []

    def noted(conn: Any, outcomes: Any, **kwargs: Any) -> set[int]:
        groups.append([o.id for o in outcomes])
        return mark_sent(conn, outcomes, **kwargs)

    monkeypatch.setattr("crmflow.delivery.dispatcher.mark_sent", noted)
    assert Dispatcher(with_smtp(ctx, smtp.url)).run_once().delivered == 6
    # The SMS's outcome is committed as soon as it went (with the emails' before it).
    assert groups == [ids[:4], ids[4:]]
    assert _statuses(ctx) == {"delivered": 5, "caught": 1}


def test_the_next_batch_is_claimed_while_one_is_sent_and_goes_back_if_the_dispatcher_stops(
    ctx: Context, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(ctx, [_payload(number) for number in range(10)])
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url), batch_size=4)
    claimed_while_sending: list[Counter[str]] = []
    real_send = dispatcher.sender.send

    def send(*args: Any) -> Any:
        sent = real_send(*args)
        if len(smtp.received) == 4:  # the first batch's last message
            # Its writer claimed the next batch meanwhile (4 leased to it, not sent).
            dispatcher._ahead.done.wait(10)  # type: ignore[union-attr]
            claimed_while_sending.append(_statuses(ctx))
            dispatcher.stop()
        return sent

    monkeypatch.setattr(dispatcher.sender, "send", send)
    dispatcher.run()
    assert claimed_while_sending == [Counter({"sending": 8, "pending": 2})]
    # Stopped: the batch claimed ahead went back as it was, its attempt not counted.
    assert _statuses(ctx) == {"delivered": 4, "pending": 6}
    with ctx.engine.connect() as conn:
        attempts = conn.execute(
            sa.select(outbox.c.attempts).where(outbox.c.status == "pending")
        ).scalars()
        assert set(attempts) == {0}
    # Another dispatcher takes them at once (nothing waits for a lease) and sends each once.
    assert Dispatcher(with_smtp(ctx, smtp.url), batch_size=4).run_once().delivered == 6
    assert sorted(Counter(smtp.message_ids()).values()) == [1] * 10
