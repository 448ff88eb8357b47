"""The priority lane: a transactional message (outbox `priority` 1) written after a campaign's
thousands of due emails is claimed and delivered in the dispatcher's first batch, on SQLite and
PostgreSQL; among messages of the same priority the oldest goes first. Which messages are
transactional: one recipient, of a flow only people or other systems start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
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


FLOW = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
triggers: {triggers}
steps:
  - key: hello
    actions:
      - type: send_email
        to: ["{{{{ record.email }}}}"{cc}]
        subject: "Your code"
        body: "1234"
"""


def _priority_of_email(ctx: Context, admin: Actor, key: str, triggers: str, cc: str = "") -> int:
    flows.create_flow(ctx, admin, FLOW.format(key=key, triggers=triggers, cc=cc))
    flows.change_status(ctx, admin, key, LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": f"ana.{key}@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, key, rid)
    with ctx.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(outbox.c.priority)
                .where(outbox.c.idempotency_key.contains(":"))
                .order_by(outbox.c.id.desc())
                .limit(1)
            ).scalar_one()
        )


def test_a_one_recipient_email_of_a_flow_people_start_is_transactional(
    ctx: Context, admin: Actor
) -> None:
    assert _priority_of_email(ctx, admin, "code", "[{type: manual}]") == 1
    assert (
        _priority_of_email(ctx, admin, "hook", "[{type: webhook, key: hook}, {type: manual}]") == 1
    )
    # Bulk: a flow records entering by the thousand may start, or a second recipient.
    both = "[{type: manual}, {type: record_created}]"
    assert _priority_of_email(ctx, admin, "welcome", both) == 0
    cc = ', "office@example.org"'
    assert _priority_of_email(ctx, admin, "copied", "[{type: manual}]", cc=cc) == 0
