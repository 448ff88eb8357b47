"""A task outlives the run that made it, unless the run is cancelled or the flow asks
(`cancel_open_tasks_on_end`); a cancelled task gets a line in the record's history."""

from __future__ import annotations

import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.store.schema import task_events, tasks
from crmflow.worker import run_once
from tests.conftest import FrozenClock, make_user
from tests.integration.helpers import history

FLOW = """\
schema_version: 1
key: referral
name: Referral
record_type: contact
owner: maria
triggers:
  - type: manual
{extra}steps:
  - key: ask
    responsibility: {{type: user, user: maria}}
    actions:
      - type: create_task
        title: "Ask {{{{ record.first_name }}}} for a referral"
        due_days: 7
  - key: thank
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: history
        message: "Thanked"
"""


def _start(ctx: Context, admin: Actor, extra: str = "") -> tuple[int, int]:
    make_user(ctx, "maria", "manager")
    flows.create_flow(ctx, admin, FLOW.format(extra=extra))
    flows.change_status(ctx, admin, "referral", LifecycleAction.START)
    rid = records.create_record(
        ctx, admin, "contact", {"first_name": "Ana", "last_name": "B", "email": "a@example.org"}
    ).id
    return rid, runs.start_record(ctx, admin, "referral", rid).id


def _task_statuses(ctx: Context, rid: int) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.scalars(sa.select(tasks.c.status).where(tasks.c.record_id == rid)))


def _finish(ctx: Context, admin: Actor, rid: int, clock: FrozenClock) -> str:
    clock.advance(days=1)
    run_once(ctx)
    return run_views.record_status(ctx, admin, rid).enrollments[0].status


def test_a_task_stays_open_when_its_run_ends_normally(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid, _ = _start(ctx, admin)
    assert _finish(ctx, admin, rid, clock) == "finished"
    assert _task_statuses(ctx, rid) == ["open"]
    assert not any("cancelled" in line for line in history(ctx, rid))


def test_the_flow_may_cancel_open_tasks_when_a_run_ends(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid, _ = _start(ctx, admin, "cancel_open_tasks_on_end: true\n")
    assert _finish(ctx, admin, rid, clock) == "finished"
    assert _task_statuses(ctx, rid) == ["cancelled"]
    assert history(ctx, rid)[-1] == (
        "Task 'Ask Ana for a referral' cancelled: the run ended and its flow cancels open"
        " tasks then (cancel_open_tasks_on_end)"
    )


def test_a_cancelled_run_cancels_its_open_tasks_and_says_so(ctx: Context, admin: Actor) -> None:
    rid, eid = _start(ctx, admin)
    runs.cancel_enrollment(ctx, admin, eid, reason="wrong record")
    assert _task_statuses(ctx, rid) == ["cancelled"]
    assert "Task 'Ask Ana for a referral' cancelled: its run was cancelled" in history(ctx, rid)
    with ctx.engine.connect() as conn:
        events = conn.execute(
            sa.select(task_events.c.by, task_events.c.action, task_events.c.detail)
        )
        assert [tuple(e) for e in events] == [(None, "cancelled", "its run was cancelled")]
