"""Stopping one record's run by hand, as a manager does: `POST /api/runs/{id}/cancel` and
`crmflow runs cancel`. The run ends cancelled where it is, with who and why; its approval task
is cancelled and its email not yet sent will not be sent; members may not do it."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings
from crmflow.store.schema import outbox, tasks
from tests.acceptance.conftest import Run, auth_headers
from tests.conftest import make_user

FLOW = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
  - key: ask
    type: approval
    responsibility: {type: user, user: maria}
    buttons:
      - {key: ok, label: OK}
"""


def _waiting_run(ctx: Context, admin: Actor) -> tuple[int, int]:
    """(record id, enrollment id) of Ana, waiting for Maria at `ask`, her email pending."""
    make_user(ctx, "maria", "manager")
    make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    view = runs.start_record(ctx, admin, "welcome", rid)
    assert (view.status, view.step) == ("waiting", "ask")
    return rid, view.id


def _states(ctx: Context, eid: int) -> tuple[list[str], list[str]]:
    with ctx.engine.connect() as conn:
        task = conn.execute(sa.select(tasks.c.status).where(tasks.c.enrollment_id == eid))
        sent = conn.execute(sa.select(outbox.c.status).where(outbox.c.enrollment_id == eid))
        return list(task.scalars()), list(sent.scalars())


def test_a_manager_cancels_a_run_over_http(ctx: Context, admin: Actor, client: TestClient) -> None:
    rid, eid = _waiting_run(ctx, admin)
    assert _states(ctx, eid) == (["open"], ["pending"])

    member = client.post(f"/api/runs/{eid}/cancel", headers=auth_headers(ctx, admin, "andrei"))
    assert member.status_code == 403 and "managers and admins" in member.json()["message"]

    as_maria = auth_headers(ctx, admin, "maria")
    done = client.post(
        f"/api/runs/{eid}/cancel", json={"reason": "asked to stop"}, headers=as_maria
    )
    assert done.status_code == 200, done.text
    run = done.json()
    assert (run["status"], run["step"]) == ("cancelled", "ask")
    assert run["end_reason"] == "cancelled by maria: asked to stop"
    assert _states(ctx, eid) == (["cancelled"], ["cancelled"])

    shown = client.get(f"/api/records/contact/{rid}/runs", headers=as_maria).json()
    assert any("cancelled by maria: asked to stop" in h["message"] for h in shown["history"])
    again = client.post(f"/api/runs/{eid}/cancel", headers=as_maria)
    assert again.status_code == 409 and "already ended (cancelled" in again.json()["message"]


def test_runs_cancel_from_the_command_line(crmflow: Run, cli_env: dict[str, str]) -> None:
    crmflow("db", "upgrade")
    ctx = Context.from_settings(Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"]))
    _, eid = _waiting_run(ctx, actor_by_username(ctx, "system"))
    ctx.engine.dispose()

    refused = crmflow("--as", "andrei", "runs", "cancel", str(eid), check_exit=1)
    assert "only managers and admins may cancel a record's run" in refused.stderr
    out = crmflow("--as", "maria", "runs", "cancel", str(eid), "--reason", "duplicate", "--json")
    run = json.loads(out.stdout)
    assert (run["status"], run["end_reason"]) == ("cancelled", "cancelled by maria: duplicate")
    assert _states(Context.from_settings(ctx.settings), eid) == (["cancelled"], ["cancelled"])
