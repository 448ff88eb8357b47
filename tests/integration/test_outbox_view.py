"""What became of the emails a run wrote, as a user reads it on a record, on both backends: an
email in the outbox is pending until it goes; a cancelled run's pending emails are cancelled,
while a run that finished or left still sends its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from crmflow.worker import run_once
from tests.conftest import FrozenClock

FLOW = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
{extra}triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: history
        message: "hello"
      - type: send_email
        key: welcome
        subject: "Hello {{{{ record.first_name }}}}"
        body: "Hi"
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: send_sms
        to: "+40700000000"
        message: "See you"
"""


def _flow(ctx: Context, admin: Actor, key: str, extra: str = "") -> None:
    flows.create_flow(ctx, admin, FLOW.format(key=key, extra=extra))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor) -> int:
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    return records.create_record(ctx, admin, "contact", data).id


def _actions(ctx: Context, admin: Actor, rid: int) -> list[tuple[str, str, str, str | None]]:
    """(step, action type, action status, message status) of every action the record ran."""
    out = []
    for view in run_views.record_status(ctx, admin, rid).enrollments:
        for run in view.step_runs:
            for a in run.actions:
                message = a.get("message")
                out.append((run.step, a["type"], a["status"], message and message["status"]))
    return out


def _outbox_statuses(ctx: Context) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(outbox.c.status).order_by(outbox.c.id)).scalars())


def _mark(ctx: Context, status: str) -> None:
    """What the dispatcher (a later issue) does to a message once it tried to deliver it."""
    with ctx.engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.kind == "email").values(status=status))


def test_an_email_in_the_outbox_is_pending_until_it_goes_while_its_action_stays_done(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, "welcome")
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "welcome", rid)
    assert _actions(ctx, admin, rid) == [
        ("hello", "history", "done", None),  # crmflow's own data: no message
        ("hello", "send_email", "done", "pending"),
    ]
    [view] = run_views.record_status(ctx, admin, rid).enrollments
    [run] = view.step_runs
    assert run.status == "done"
    message = run.actions[1]["message"]
    assert (message["kind"], message["attempts"]) == ("email", 0)
    assert message["not_before"] == view.entered_at.isoformat()

    _mark(ctx, "sent")
    assert _actions(ctx, admin, rid)[1] == ("hello", "send_email", "done", "sent")
    _mark(ctx, "failed")
    assert _actions(ctx, admin, rid)[1] == ("hello", "send_email", "done", "failed")


def test_the_loop_guard_cancels_the_pending_emails_of_the_runs_it_cancels(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "loopy")
    rid = _contact(ctx, admin)
    for _ in range(10):
        runs.start_record(ctx, admin, "loopy", rid)
        clock.advance(minutes=5)
    assert _outbox_statuses(ctx) == ["pending"] * 10
    with pytest.raises(ConflictError, match="loop guard"):
        runs.start_record(ctx, admin, "loopy", rid)

    assert _outbox_statuses(ctx) == ["cancelled"] * 10
    emails = [a for a in _actions(ctx, admin, rid) if a[1] == "send_email"]
    assert emails == [("hello", "send_email", "done", "cancelled")] * 10
    # Nothing is left for the cancelled runs to send later either.
    clock.advance(days=2)
    assert run_once(ctx) == 0
    assert _outbox_statuses(ctx) == ["cancelled"] * 10


def test_an_email_already_sent_stays_sent_when_its_run_is_cancelled(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "loopy")
    rid = _contact(ctx, admin)
    runs.start_record(ctx, admin, "loopy", rid)
    _mark(ctx, "sent")
    for _ in range(9):
        clock.advance(minutes=5)
        runs.start_record(ctx, admin, "loopy", rid)
    with pytest.raises(ConflictError, match="loop guard"):
        runs.start_record(ctx, admin, "loopy", rid)
    assert _outbox_statuses(ctx) == ["sent"] + ["cancelled"] * 9


def test_a_run_that_finishes_or_leaves_still_sends_what_it_wrote(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    _flow(ctx, admin, "thanks")
    _flow(ctx, admin, "goal", extra="goal: \"record.last_name == 'Gone'\"\n")
    finishing, leaving = _contact(ctx, admin), _contact(ctx, admin)
    runs.start_record(ctx, admin, "thanks", finishing)
    runs.start_record(ctx, admin, "goal", leaving)
    records.update_record(ctx, admin, leaving, {"last_name": "Gone"})
    clock.advance(days=1)
    run_once(ctx)

    [finished] = run_views.record_status(ctx, admin, finishing).enrollments
    [left] = run_views.record_status(ctx, admin, leaving).enrollments
    assert (finished.status, left.status) == ("finished", "left")
    assert _actions(ctx, admin, finishing) == [
        ("hello", "history", "done", None),
        ("hello", "send_email", "done", "pending"),
        ("later", "send_sms", "done", "pending"),
    ]
    assert _actions(ctx, admin, leaving) == [
        ("hello", "history", "done", None),
        ("hello", "send_email", "done", "pending"),
    ]
    assert sorted(_outbox_statuses(ctx)) == ["pending"] * 3


# -- the same, from the API ---------------------------------------------------------------------


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def _email_actions(shown: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (a["status"], a["message"]["status"])
        for flow in shown["flows"]
        for run in flow["step_runs"]
        for a in run["actions"]
        if a["type"] == "send_email"
    ]


def test_the_record_runs_route_shows_each_message_pending_then_cancelled(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}
    _flow(ctx, admin, "loopy")
    rid = _contact(ctx, admin)
    for _ in range(10):
        started = client.post("/api/flows/loopy/runs", json={"record_id": rid}, headers=auth)
        assert started.status_code == 201, started.text
        clock.advance(minutes=5)
    shown = client.get(f"/api/records/contact/{rid}/runs", headers=auth).json()
    assert _email_actions(shown) == [("done", "pending")] * 10
    [history] = shown["flows"][0]["step_runs"][0]["actions"][:1]
    assert "message" not in history  # a history entry sends nothing

    tripped = client.post("/api/flows/loopy/runs", json={"record_id": rid}, headers=auth)
    assert tripped.status_code == 409 and "loop guard" in tripped.json()["message"]
    shown = client.get(f"/api/records/contact/{rid}/runs", headers=auth).json()
    assert _email_actions(shown) == [("done", "cancelled")] * 10
