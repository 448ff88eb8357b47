"""The priority lane: a transactional message (outbox `priority` 1) written after a campaign's
thousands of due emails is claimed and delivered in the dispatcher's first batch, on SQLite and
PostgreSQL; among messages of the same priority the oldest goes first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.services.context import Context
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.schema import outbox
from tests.integration.test_delivery_smtp import SmtpServer, with_smtp

CAMPAIGN = 5_000


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _row(ctx: Context, key: str, to: str, priority: int) -> dict[str, Any]:
    payload = EmailPayload(
        message_id=message_id(key), to=(to,), subject=key, body="Hello"
    ).model_dump(mode="json")
    now = ctx.now()
    return {
        "enrollment_id": 1,
        "step_key": "mail",
        "step_run": 1,
        "idempotency_key": key,
        "kind": "email",
        "payload": payload,
        "status": "pending",
        "not_before": now,
        "attempts": 0,
        "created_at": now,
        "priority": priority,
    }


def test_a_transactional_email_goes_in_the_first_batch_ahead_of_a_campaign(
    ctx: Context, smtp: SmtpServer
) -> None:
    campaign = [_row(ctx, f"news:{n}", f"reader{n}@example.org", 0) for n in range(CAMPAIGN)]
    with ctx.engine.begin() as conn:
        insert_ignoring_duplicates(conn, campaign)
        insert_ignoring_duplicates(conn, [_row(ctx, "reset:1", "ana@example.org", 1)])
    dispatcher = Dispatcher(with_smtp(ctx, smtp.url), batch_size=50)
    first = dispatcher.deliver_batch()
    dispatcher.stop()
    assert (first.claimed, first.delivered) == (50, 50)
    # The transactional one went first, then the campaign's oldest 49.
    subjects = [str(r.message["Subject"]) for r in smtp.received]
    assert subjects == ["reset:1"] + [f"news:{n}" for n in range(49)]
    with ctx.engine.connect() as conn:
        status = conn.execute(
            sa.select(outbox.c.status).where(outbox.c.idempotency_key == "reset:1")
        ).scalar_one()
    assert status == "delivered"
