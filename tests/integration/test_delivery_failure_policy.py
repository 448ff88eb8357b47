"""What follows a message's failure for good (issue 10), on SQLite and PostgreSQL: a webhook to
a real HTTP server on 127.0.0.1 answering 400 (a permanent refusal) fails at once, and in the
transaction that marks it failed the action's `on_failure` policy moves the run (goto: to the
failure step, whose actions run; stop: the run ends cancelled; continue: nothing), the record's
history says what failed and what the policy did, and the flow's controller gets an in-app
notification and an email (caught by the mail catcher on the next round)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from crmflow import worker
from crmflow.delivery.dispatcher import Dispatcher, run_in_threads
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username, create_user
from crmflow.store.schema import enrollments, notifications, outbox
from tests.conftest import FrozenClock
from tests.integration.helpers import history
from tests.integration.test_delivery_webhooks import LOOPBACK, HttpServer, Reply, with_settings

FLOW = """\
schema_version: 1
key: notify
name: Notify
record_type: contact
controller: carla
reentry: {{mode: always}}
triggers: [{{type: manual}}]
steps:
  - key: tell
    actions:
      - type: webhook
        key: hook
        url: "{url}/hooks/{{{{record.id}}}}"
        on_failure: {policy}
  - key: wait
    type: wait
    until: "record.first_name == 'never'"
    timeout: {{amount: 30, unit: days}}
    on_timeout: fix
  - key: done
    type: end
  - key: fix
    actions:
      - type: history
        message: "failure branch taken"
"""


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    yield server
    server.stop()


def _start(ctx: Context, admin: Actor, url: str, policy: str) -> tuple[int, int]:
    """The controller carla (with an email address), the flow with `policy`, a run started:
    (record id, enrollment id)."""
    create_user(ctx, admin, username="carla", role="manager", email="carla@ex.org")
    flows.create_flow(ctx, admin, FLOW.format(url=url, policy=policy))
    flows.change_status(ctx, admin, "notify", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    view = runs.start_record(ctx, admin, "notify", rid)
    return rid, view.id


def _fail_once(ctx: Context, http_server: HttpServer) -> Context:
    http_server.replies = [Reply(400, "unknown field name")]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK)
    assert Dispatcher(dispatched).run_once().failed == 1
    return dispatched


def _run(ctx: Context, eid: int) -> Any:
    with ctx.engine.connect() as conn:
        return conn.execute(sa.select(enrollments).where(enrollments.c.id == eid)).one()


def _told(ctx: Context) -> list[str]:
    with ctx.engine.connect() as conn:
        query = sa.select(notifications.c.message).where(notifications.c.target_ref == "carla")
        return list(conn.execute(query).scalars())


def _notice(ctx: Context, dispatched: Context) -> Any:
    """The controller's email, once the next round has delivered it (to the mail catcher)."""
    assert Dispatcher(dispatched).run_once().delivered == 1
    with ctx.engine.connect() as conn:
        [row] = conn.execute(sa.select(outbox).where(outbox.c.kind == "email"))
    return row


def test_goto_moves_the_run_to_the_failure_step_and_tells_the_controller(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    rid, eid = _start(ctx, admin, http_server.url, "{goto: fix}")
    assert _run(ctx, eid).step_key == "wait"  # the message is fire-and-forget: the run went on
    dispatched = _fail_once(ctx, http_server)

    run = _run(ctx, eid)
    assert (run.status, run.step_key) == ("finished", "fix")  # fix ran, and was the last step
    lines = history(ctx, rid)
    failed = f"Webhook POST {http_server.url}/hooks/{rid} failed after 1 attempt"
    [line] = [x for x in lines if x.startswith(failed)]
    assert "answered 400 unknown field name" in line
    assert line.endswith("the run moved to step 'fix' (on_failure: goto fix)")
    assert any("failure branch taken" in x for x in lines)
    [told] = _told(ctx)
    assert told.startswith(f"flow 'notify', record {rid}, step 'tell': {failed}")

    notice = _notice(ctx, dispatched)
    assert (notice.status, notice.payload["to"]) == ("caught", ["carla@ex.org"])
    assert notice.payload["subject"] == f"crmflow: a message of flow notify failed (record {rid})"
    assert failed in notice.rendered
    # The notice is not itself subject to the policy, and is sent once.
    assert Dispatcher(dispatched).run_once().claimed == 0
    assert len(http_server.requests) == 1


def test_stop_ends_the_run_with_the_failure_as_its_reason(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    rid, eid = _start(ctx, admin, http_server.url, "stop")
    dispatched = _fail_once(ctx, http_server)

    run = _run(ctx, eid)
    assert run.status == "cancelled"
    reason = run.state["end_reason"]
    assert reason.startswith("stopped: Webhook POST ")
    assert reason.endswith("answered 400 unknown field name (on_failure: stop)")
    assert history(ctx, rid)[-1].endswith("the record was taken out of the flow (on_failure: stop)")
    assert len(_told(ctx)) == 1
    # The run's cancellation does not cancel the notice written after it.
    assert _notice(ctx, dispatched).payload["to"] == ["carla@ex.org"]


def test_continue_leaves_the_run_alone_but_still_tells_the_controller(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    rid, eid = _start(ctx, admin, http_server.url, "continue")
    before = _run(ctx, eid)
    dispatched = _fail_once(ctx, http_server)

    after = _run(ctx, eid)
    assert (after.status, after.step_key, after.due_at) == (
        before.status,
        before.step_key,
        before.due_at,
    )
    assert history(ctx, rid)[-1].endswith("the run goes on (on_failure: continue)")
    assert len(_told(ctx)) == 1
    assert _notice(ctx, dispatched).status == "caught"


def test_a_run_that_has_ended_is_not_brought_back_by_its_failure_branch(
    ctx: Context, admin: Actor, clock: FrozenClock, http_server: HttpServer
) -> None:
    rid, eid = _start(ctx, admin, http_server.url, "{goto: fix}")
    http_server.replies = [Reply(503, "down for maintenance")]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK)
    assert Dispatcher(dispatched).run_once().retrying == 1
    # The run goes on while the message waits to be tried again: the wait times out, the run
    # finishes.
    clock.advance(timedelta(days=31))
    worker.run_once(ctx)
    assert _run(ctx, eid).status == "finished"
    http_server.replies = [Reply(400, "unknown field name")]
    assert Dispatcher(dispatched).run_once().failed == 1

    assert _run(ctx, eid).status == "finished"
    assert history(ctx, rid)[-1].endswith(
        "on_failure: goto fix not applied: the run had already ended "
        "(finished: went through the last step)"
    )
    assert len(_told(ctx)) == 1


TWO_HOOKS = """\
schema_version: 1
key: twice
name: Twice
record_type: contact
controller: carla
triggers: [{type: manual}]
steps:
  - key: tell
    actions:
      - {type: webhook, key: first, url: "URL/a", on_failure: {goto: fix}}
      - {type: webhook, key: second, url: "URL/b", on_failure: {goto: fix}}
  - key: wait
    type: wait
    until: "record.first_name == 'never'"
    timeout: {amount: 30, unit: days}
  - key: fix
    actions:
      - type: history
        message: "failure branch taken"
  - key: after-fix
    type: wait
    until: "record.first_name == 'never'"
    timeout: {amount: 30, unit: days}
"""


def test_a_step_run_takes_its_failure_branch_once_and_a_controller_without_email_is_told_so(
    ctx: Context, admin: Actor, http_server: HttpServer
) -> None:
    create_user(ctx, admin, username="carla", role="manager")  # no email address
    flows.create_flow(ctx, admin, TWO_HOOKS.replace("URL", http_server.url))
    flows.change_status(ctx, admin, "twice", LifecycleAction.START)
    rid = records.create_record(ctx, admin, "contact", {"first_name": "Ana", "last_name": "P"}).id
    eid = runs.start_record(ctx, admin, "twice", rid).id
    http_server.replies = [Reply(400, "no"), Reply(410, "gone")]
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK)
    assert Dispatcher(dispatched).run_once().failed == 2

    assert _run(ctx, eid).step_key == "after-fix"
    lines = history(ctx, rid)
    assert sum("failure branch taken" in x for x in lines) == 1
    assert lines[-1].endswith(
        "on_failure: goto fix not applied: another message of the same step run had already "
        "failed and its policy was applied"
    )
    told = _told(ctx)
    assert len(told) == 2
    assert all(t.endswith("(no email sent to carla: no email)") for t in told)
    assert Dispatcher(dispatched).run_once().claimed == 0  # no notice email


def test_two_dispatchers_failing_two_messages_of_a_step_run_at_once_take_its_branch_once(
    postgres_ctx: Context, http_server: HttpServer
) -> None:
    """PostgreSQL, two dispatchers in threads: each fails one of the step's two webhooks at the
    same moment (the server answers both after a pause); the run is locked before the earlier
    failures are read, so the second to get the lock sees the first's and does nothing more."""
    ctx = postgres_ctx
    admin = actor_by_username(ctx, "system")
    create_user(ctx, admin, username="carla", role="manager", email="carla@ex.org")
    flows.create_flow(ctx, admin, TWO_HOOKS.replace("URL", http_server.url))
    flows.change_status(ctx, admin, "twice", LifecycleAction.START)
    rid = records.create_record(ctx, admin, "contact", {"first_name": "Ana", "last_name": "P"}).id
    eid = runs.start_record(ctx, admin, "twice", rid).id
    http_server.replies = [Reply(400, "no", delay=0.5), Reply(400, "no", delay=0.5)]
    # Without the writer thread, a dispatcher claims its next message only after this one: each
    # of the two takes one (with it, the first could claim the second message ahead).
    dispatched = with_settings(ctx, webhook_allow=LOOPBACK, delivery_write_ahead=0)
    pair = [Dispatcher(dispatched, batch_size=1, name=f"d{n}") for n in (1, 2)]
    assert run_in_threads(pair, once=True).failed == 2
    assert all(d.total.failed == 1 for d in pair)  # each failed one, at the same time

    assert _run(ctx, eid).step_key == "after-fix"
    assert sum("failure branch taken" in x for x in history(ctx, rid)) == 1
    assert len(_told(ctx)) == 2


def test_a_failure_whose_run_cannot_be_told_still_sticks_and_is_not_sent_again(
    ctx: Context,
    admin: Actor,
    clock: FrozenClock,
    http_server: HttpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _start(ctx, admin, http_server.url, "stop")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the history could not be written")

    monkeypatch.setattr("crmflow.delivery.dispatcher.message_failed", broken)
    _fail_once(ctx, http_server)
    clock.advance(days=1)  # any lease long run out
    assert Dispatcher(with_settings(ctx, webhook_allow=LOOPBACK)).run_once().claimed == 0
    with ctx.engine.connect() as conn:
        [row] = conn.execute(sa.select(outbox))
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "HTTP 400: unknown field name" or "400" in row.last_error
    assert len(http_server.requests) == 1
