"""CRMFLOW_DELIVERY_COMMIT_EVERY: a dispatcher that commits the outcomes of several sent messages
together still delivers and archives each once; a group whose commit is lost (the database away,
a crash) leaves exactly that group's messages `sending`, and they are sent again, with the same
Message-ID, once their lease has run out: the at-least-once window docs/delivery.md states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import DEFAULT_LEASE, Dispatcher
from crmflow.services.context import Actor, Context
from crmflow.store.database import OperationalError
from crmflow.store.outbox import mark_sent
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


def test_a_group_whose_commit_is_lost_is_sent_again_after_its_lease_and_only_that_group(
    ctx: Context, smtp: SmtpServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(ctx, [_payload(number) for number in range(10)])
    grouped = with_smtp(ctx, smtp.url, delivery_commit_every=4)
    calls = []

    def lost_second_commit(*args: Any, **kwargs: Any) -> set[int]:
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("UPDATE outbox ...", {}, Exception("the database went away"))
        return mark_sent(*args, **kwargs)

    monkeypatch.setattr("crmflow.delivery.dispatcher.mark_sent", lost_second_commit)
    with pytest.raises(OperationalError):
        Dispatcher(grouped, batch_size=8).run_once()
    # The first group is delivered; the second was accepted by the server but not marked.
    assert len(smtp.received) == 8
    assert _statuses(ctx) == {"delivered": 4, "sending": 4, "pending": 2}

    assert Dispatcher(grouped).run_once().claimed == 2  # the 4 are still leased
    clock.advance(seconds=DEFAULT_LEASE.total_seconds())
    assert Dispatcher(grouped).run_once().delivered == 4
    assert _statuses(ctx) == {"delivered": 10}
    copies = Counter(smtp.message_ids())
    assert len(copies) == 10
    # Exactly the group whose commit was lost went twice, with the same Message-ID.
    assert sorted(copies.values()) == [1] * 6 + [2] * 4
