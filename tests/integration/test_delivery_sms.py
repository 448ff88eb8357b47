"""The dispatcher sends a flow's SMS, on SQLite and PostgreSQL: through the generic HTTP provider
to a real server on 127.0.0.1 (the number in E.164, the body made from CRMFLOW_SMS_BODY, the
auth header), or kept by the SMS log when no CRMFLOW_SMS_URL is set; a number that is not one
fails at once, and a literal one is checked when the flow is validated."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, mail, records
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from tests.integration.test_delivery_webhooks import (
    LOOPBACK,
    HttpServer,
    Reply,
    http_server,
    with_settings,
)

__all__ = ["http_server"]  # the fixture, shared with the webhook tests

FLOW = """\
schema_version: 1
key: remind
name: Remind
record_type: contact
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: remind
    actions:
      - type: send_sms
{to}        message: 'Bonjour {{{{ record.first_name }}}}, "demain" 10h & merci'
"""

TEXT = 'Bonjour Claire, "demain" 10h & merci'


def _remind(ctx: Context, admin: Actor, phone: str, *, to: str | None = None) -> None:
    """The remind flow started for a new contact with `phone`: its SMS is in the outbox."""
    line = f"        to: '{to}'\n" if to else ""
    flows.create_flow(ctx, admin, FLOW.format(to=line))
    flows.change_status(ctx, admin, "remind", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "phone": phone}
    rid = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "remind", rid)


def _row(ctx: Context) -> Any:
    with ctx.engine.connect() as conn:
        [row] = conn.execute(sa.select(outbox).where(outbox.c.kind == "sms"))
        return row


def _provider(ctx: Context, server: HttpServer, **settings: Any) -> Context:
    provider = {
        "sms_url": f"{server.url}/sms/send",
        "sms_auth_header": "Authorization: Bearer t0k3n",
        "webhook_allow": LOOPBACK,
    }
    return with_settings(ctx, **{**provider, **settings})


def test_the_http_provider_gets_the_number_in_e164_and_the_text_as_json(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _remind(ctx, admin, "+40 (721) 234-567")
    http_server.replies = [Reply(202, '{"id": "sms-1"}')]
    assert Dispatcher(_provider(ctx, http_server)).run_once().delivered == 1

    [got] = http_server.requests
    row = _row(ctx)
    assert (got.method, got.path) == ("POST", "/sms/send")
    assert got.headers["authorization"] == "Bearer t0k3n"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == row.idempotency_key
    assert json.loads(got.body) == {"to": "+40721234567", "text": TEXT}
    assert (row.status, row.server_reply) == ("delivered", '202 {"id": "sms-1"}')


def test_a_form_body_template_is_url_encoded(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _remind(ctx, admin, "0040 721 234 567")
    Dispatcher(_provider(ctx, http_server, sms_body="To={to}&Body={text}")).run_once()
    [got] = http_server.requests
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(got.body.decode()) == {"To": ["+40721234567"], "Body": [TEXT]}


def test_a_provider_error_is_retried(ctx: Context, admin: Actor, http_server: HttpServer) -> None:
    _remind(ctx, admin, "+40721234567")
    http_server.replies = [Reply(503, "maintenance")]
    assert Dispatcher(_provider(ctx, http_server)).run_once().retrying == 1
    assert _row(ctx).last_error.endswith("answered 503 maintenance")


def test_the_provider_on_loopback_is_refused_without_the_allow_list(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _remind(ctx, admin, "+40721234567")
    Dispatcher(_provider(ctx, http_server, webhook_allow=None)).run_once()
    row = _row(ctx)
    assert row.status == "failed" and "CRMFLOW_WEBHOOK_ALLOW" in row.last_error
    assert http_server.requests == []


def test_without_a_provider_the_sms_log_keeps_the_message(ctx: Context, admin: Actor) -> None:
    _remind(ctx, admin, "+40 721 234 567")
    assert Dispatcher(ctx).run_once().delivered == 1
    row = _row(ctx)
    assert row.status == "caught"
    assert row.rendered == f"To: +40721234567\n\n{TEXT}"
    assert mail.list_caught(ctx, admin) == []  # the mail catcher shows emails only


def test_a_number_that_is_not_one_fails_at_once_saying_why(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    _remind(ctx, admin, "0721 234 567")  # no country code
    assert Dispatcher(_provider(ctx, http_server)).run_once().failed == 1
    row = _row(ctx)
    assert row.status == "failed"
    assert "'0721 234 567' is not a phone number with its country code" in row.last_error
    assert http_server.requests == []


def test_a_literal_number_is_checked_when_the_flow_is_validated(ctx: Context, admin: Actor) -> None:
    with pytest.raises(InvalidInputError, match=r"actions\[0\]\.to: '\+40 12' is not a valid"):
        flows.create_flow(ctx, admin, FLOW.format(to="        to: '+40 12'\n"))
    flows.create_flow(ctx, admin, FLOW.format(to="        to: '+40 721 234 567'\n"))
