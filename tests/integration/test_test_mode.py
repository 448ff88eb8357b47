"""Test mode (issue 10): a run started with test goes on like any other, but its messages go
to the flow's test recipients only, marked as tests (subject, state, history); a flow without
test recipients is refused a test start. Service, CLI and API; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crmflow.api.app import create_app
from crmflow.cli.common import state
from crmflow.cli.main import app as cli
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from crmflow.testing import FlowHarness
from tests.integration.helpers import history

FLOW = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers: [{type: manual}]
test_recipients: [qa@example.org, "+40 721 000 000", "+33 6 12 34 56 78"]
steps:
  - key: hello
    actions:
      - type: send_email
        cc: [boss@example.org]
        subject: "Welcome {{ record.first_name }}"
        body: "Hi"
      - type: send_sms
        message: "Welcome"
      - type: webhook
        url: https://erp.example.org/hooks/welcome
        body: '{"id": {{ record.id }}}'
      - type: update_record
        values: {status: client}
"""


def _contact(ctx: Context, admin: Actor) -> int:
    data = {
        "first_name": "Claire",
        "last_name": "Martin",
        "email": "claire@example.org",
        "phone": "+40 700 111 222",
    }
    return records.create_record(ctx, admin, "contact", data).id


def _flow(ctx: Context, admin: Actor, text: str = FLOW) -> None:
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)


def _rows(ctx: Context) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)).all())


def test_a_test_run_messages_only_the_test_recipients_and_says_it_is_a_test(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    view = runs.start_record(ctx, admin, "welcome", rid, test=True)

    rows = _rows(ctx)
    email = next(r for r in rows if r.kind == "email")
    assert email.test is True
    assert (email.payload["to"], email.payload["cc"], email.payload["bcc"]) == (
        ["qa@example.org"],
        [],
        [],
    )
    assert email.payload["subject"] == "[TEST] Welcome Claire"
    sms = sorted(r.payload["to"] for r in rows if r.kind == "sms")
    assert sms == ["+33 6 12 34 56 78", "+40 721 000 000"]  # each test number, not Claire's
    [webhook] = [r for r in rows if r.kind == "webhook"]
    assert webhook.payload["headers"]["webhook-test"] == "true"
    # Nothing else differs: the record changed as in any run.
    assert records.get_record(ctx, rid).data["status"] == "client"

    # Delivered (the mail catcher keeps it): the run shows the message as `test`, and the
    # record's history says where it went and that it was a test.
    assert Dispatcher(ctx).run_once().delivered >= 1
    shown = run_views.record_status(ctx, admin, rid).enrollments[0].step_runs[-1].actions
    email_state = next(a["message"] for a in shown if a.get("message", {}).get("kind") == "email")
    assert email_state["status"] == "test"
    assert any(
        "qa@example.org" in line and "[TEST] Welcome Claire" in line for line in history(ctx, rid)
    )
    assert view.id


def test_a_real_run_of_the_same_flow_is_not_changed(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin)
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "welcome", rid)
    email = next(r for r in _rows(ctx) if r.kind == "email")
    assert (email.test, email.payload["to"], email.payload["subject"]) == (
        False,
        ["claire@example.org"],
        "Welcome Claire",
    )


def test_a_test_start_of_a_flow_without_test_recipients_is_refused_saying_how_to_fix_it(
    ctx: Context, admin: Actor
) -> None:
    _flow(
        ctx,
        admin,
        FLOW.replace(
            'test_recipients: [qa@example.org, "+40 721 000 000", "+33 6 12 34 56 78"]\n', ""
        ),
    )
    rid = _contact(ctx, admin)
    with pytest.raises(InvalidInputError) as caught:
        runs.start_record(ctx, admin, "welcome", rid, test=True)
    [problem] = caught.value.problems
    assert problem.path == "test_recipients" and "test_recipients: [you@example.org" in problem.hint
    assert _rows(ctx) == []

    client = TestClient(create_app(ctx))
    token = users.create_token(ctx, admin, "system").token
    answer = client.post(
        "/api/flows/welcome/runs",
        json={"record_id": rid, "test": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code in (400, 422), answer.text
    assert "test recipients" in answer.text


def test_the_cli_and_the_api_start_a_test_run(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flow(ctx, admin)
    first, second = _contact(ctx, admin), _contact(ctx, admin)
    monkeypatch.setattr(state, "_context", ctx)
    result = CliRunner().invoke(cli, ["runs", "start", "welcome", str(first), "--test"])
    assert result.exit_code == 0, result.output
    Dispatcher(ctx).run_once()
    shown = CliRunner().invoke(cli, ["runs", "show", str(first)], env={"COLUMNS": "300"})
    assert "[email test at 2026-" in shown.output, shown.output
    client = TestClient(create_app(ctx))
    token = users.create_token(ctx, admin, "system").token
    answer = client.post(
        "/api/flows/welcome/runs",
        json={"record_id": second, "test": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    emails = [r for r in _rows(ctx) if r.kind == "email"]
    assert [(r.test, r.payload["to"]) for r in emails] == [(True, ["qa@example.org"])] * 2


def test_the_flow_harness_starts_a_test_run(tmp_path: Path) -> None:
    path = tmp_path / "welcome.yaml"
    path.write_text(FLOW, encoding="utf-8")
    with FlowHarness(path, now=datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) as flow:
        flow.start()
        rid = flow.create_record(
            {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
        )
        flow.start_record(rid, test=True)
        [email] = [m for m in flow.messages(rid) if m.kind == "email"]
        assert (email.payload["to"], email.subject) == (["qa@example.org"], "[TEST] Welcome Claire")
