"""Deadlines acted on by the worker with a frozen clock, on SQLite and PostgreSQL: the person
asked is reminded, the step is marked late and the controller notified and emailed (the email
caught by the mail catcher), then the escalation decides the approval or hands the task to
someone else; each notice once, however many rounds run."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import PermissionDeniedError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.services.deadlines import DeadlineCursor, process_deadlines
from crmflow.services.users import (
    actor_by_username,
    add_group_member,
    create_group,
    create_user,
)
from crmflow.store.schema import notifications, outbox, task_events, tasks
from crmflow.worker import run_once
from tests.conftest import FrozenClock
from tests.integration.helpers import history

FLOW = """\
schema_version: 1
key: leave
name: Leave request
record_type: contact
controller: carla
catch_up: {{mode: {catch_up}}}
triggers: [{{type: manual}}]
steps:
{step}
  - key: approved
    actions: [{{type: history, message: approved}}]
    next: done
  - key: refused
    actions: [{{type: history, message: refused}}]
  - key: done
    type: end
"""
APPROVAL = """\
  - key: approve
    type: approval
    responsibility: {type: user, user: bogdan}
    message: "Leave for {{ record.first_name }}?"
    deadline: {days: 3, remind_every_days: 1, escalate: {after_days: 2, decide: refuse}}
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse, goto: refused}"""


def _start(
    ctx: Context, admin: Actor, step: str, *, catch_up: str = "run_late", head: str = ""
) -> tuple[int, int]:
    create_user(ctx, admin, username="carla", role="manager", email="carla@ex.org")
    create_user(ctx, admin, username="bogdan", role="member", email="bogdan@ex.org")
    create_user(ctx, admin, username="andrei", role="member", email="andrei@ex.org")
    flows.create_flow(ctx, admin, head + FLOW.format(step=step, catch_up=catch_up))
    flows.change_status(ctx, admin, "leave", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    return rid, runs.start_record(ctx, admin, "leave", rid).id


def _told(ctx: Context, who: str) -> list[str]:
    with ctx.engine.connect() as conn:
        query = sa.select(notifications.c.message).where(notifications.c.target_ref == who)
        return list(conn.execute(query.order_by(notifications.c.id)).scalars())


def _caught(ctx: Context) -> list[Any]:
    """The emails the mail catcher holds, once the dispatcher has sent what is pending."""
    Dispatcher(ctx).run_once()
    with ctx.engine.connect() as conn:
        query = sa.select(outbox).where(outbox.c.status == "caught").order_by(outbox.c.id)
        return list(conn.execute(query))


def test_an_approval_is_reminded_marked_late_then_decided_automatically(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid, _ = _start(ctx, admin, APPROVAL)
    assert run_once(ctx) == 0
    [asked] = _told(ctx, "bogdan")  # the decision is in bogdan's inbox, nothing more yet
    assert asked.startswith("Decision needed: 'Leave for Claire?'")

    clock.advance(days=1)
    run_once(ctx)
    run_once(ctx)  # a second round sends nothing again
    [_, reminder] = _told(ctx, "bogdan")
    assert reminder.startswith("Reminder: task 'Leave for Claire?' is due on 2026-11-26")
    [email] = _caught(ctx)
    assert (email.payload["to"], email.payload["subject"]) == (
        ["bogdan@ex.org"],
        "crmflow: reminder, Leave for Claire?",
    )

    clock.advance(days=2)  # the deadline: late
    run_once(ctx)
    run_once(ctx)
    late = (
        "Step 'approve' is late: task 'Leave for Claire?', given to bogdan, was due on 2026-11-26"
    )
    assert late in history(ctx, rid)
    [told] = _told(ctx, "carla")
    assert told == f"{late} (flow 'leave', record {rid}, step 'approve')"
    to_carla = [e for e in _caught(ctx) if e.payload["to"] == ["carla@ex.org"]]
    assert [e.payload["subject"] for e in to_carla] == [
        f"crmflow: step approve of flow leave is late (record {rid})"
    ]
    assert late in to_carla[0].payload["body"]
    assert run_views.record_status(ctx, admin, rid).enrollments[0].step == "approve"

    clock.advance(days=2, seconds=-1)
    run_once(ctx)
    assert run_views.record_status(ctx, admin, rid).enrollments[0].step == "approve"
    clock.advance(seconds=1)  # two days after the deadline: decided automatically
    run_once(ctx)
    run_once(ctx)
    [status] = run_views.record_status(ctx, admin, rid).enrollments
    assert status.status == "finished"
    lines = history(ctx, rid)
    assert "Step 'approve': decided automatically after 2 days late (button 'refuse')" in lines
    assert (lines.count("refused"), lines.count("approved")) == (1, 0)  # the refusal branch
    with ctx.engine.connect() as conn:
        statuses = list(conn.scalars(sa.select(tasks.c.status).where(tasks.c.record_id == rid)))
    assert statuses == ["done"]
    # One reminder to bogdan (the second day's came with the late notice's round: not sent,
    # since only the latest reminder before the deadline goes), one late notice to carla.
    assert len(_told(ctx, "carla")) == 1


def test_a_deadline_of_a_paused_flow_waits_for_it_and_moves_by_the_pause(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid, _ = _start(ctx, admin, APPROVAL)
    flows.change_status(ctx, admin, "leave", LifecycleAction.PAUSE, confirm_inside=1)
    clock.advance(days=4)
    run_once(ctx)
    assert _told(ctx, "carla") == []
    assert not any("late" in line for line in history(ctx, rid))
    # The flow's catch-up policy is run_late: on resume the late step is said late at once.
    flows.change_status(ctx, admin, "leave", LifecycleAction.RESUME)
    run_once(ctx)
    assert len(_told(ctx, "carla")) == 1


def test_with_shift_delays_a_pause_moves_the_deadline(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    rid, _ = _start(ctx, admin, APPROVAL, catch_up="shift_delays")
    flows.change_status(ctx, admin, "leave", LifecycleAction.PAUSE, confirm_inside=1)
    clock.advance(days=2)
    flows.change_status(ctx, admin, "leave", LifecycleAction.RESUME)
    clock.advance(days=2)  # 4 days after the start, 2 of them paused: not late yet
    run_once(ctx)
    assert _told(ctx, "carla") == []
    clock.advance(days=1)  # the deadline, moved by the pause (3 + 2 days)
    run_once(ctx)
    assert len(_told(ctx, "carla")) == 1
    late = (
        "Step 'approve' is late: task 'Leave for Claire?', given to bogdan, was due on 2026-11-28"
    )
    assert late in history(ctx, rid)


TASK = """\
  - key: call
    responsibility: {type: user, user: bogdan}
    deadline: {days: 2, notify_controller: false, escalate: {after_days: 1, to: andrei}}
    actions:
      - type: create_task
        title: "Call {{ record.first_name }}"
  - key: wait
    type: wait
    until: record.status == "client"
    timeout: {amount: 30, unit: days}
    on_timeout: refused"""


def test_a_late_task_is_handed_to_the_escalation_user(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    task_service = pytest.importorskip("crmflow.services.tasks")
    rid, _ = _start(ctx, admin, TASK)
    with ctx.engine.connect() as conn:
        task_id = conn.scalars(sa.select(tasks.c.id).where(tasks.c.record_id == rid)).one()
    task_service.start(ctx, actor_by_username(ctx, "bogdan"), task_id)  # started, not done
    clock.advance(days=2)
    run_once(ctx)
    assert "Step 'call' is late: task 'Call Claire', given to bogdan, was due on 2026-11-25" in (
        history(ctx, rid)
    )
    assert _told(ctx, "carla") == []  # notify_controller: false
    clock.advance(days=1)
    run_once(ctx)
    run_once(ctx)
    with ctx.engine.connect() as conn:
        [task] = conn.execute(sa.select(tasks).where(tasks.c.record_id == rid))
    assert (task.assignee_ref, task.status) == ("andrei", "in_progress")
    assert "Task 'Call Claire' of step 'call' given to andrei: escalated after 1 day late" in (
        history(ctx, rid)
    )
    assert any("was given to you" in m for m in _told(ctx, "andrei"))


def test_a_late_approval_handed_to_another_user_is_theirs_to_decide(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    step = APPROVAL.replace("decide: refuse", "to: andrei")
    rid, eid = _start(ctx, admin, step)
    clock.advance(days=5)
    run_once(ctx)
    lines = history(ctx, rid)
    assert (
        "Task 'Leave for Claire?' of step 'approve' given to andrei: escalated after 2 days late"
        in lines
    )
    bogdan, andrei = actor_by_username(ctx, "bogdan"), actor_by_username(ctx, "andrei")
    with pytest.raises(PermissionDeniedError, match="asked of 'andrei'"):
        runs.decide(ctx, bogdan, eid, "approve", "validate")
    runs.decide(ctx, andrei, eid, "approve", "validate")
    assert "approved" in history(ctx, rid)


def test_an_approvals_escalation_that_cannot_be_done_leaves_the_decision_where_it_was(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    # The flow is private and its escalation's group gained a member outside the flow: the
    # task cannot go to that group, so the escalation is not done, and bogdan, still asked,
    # still decides.
    create_group(ctx, admin, "leads")
    step = APPROVAL.replace("decide: refuse", "to: {type: group, group: leads}")
    private = "visibility: private\nmembers: [carla, bogdan, andrei]\n"
    rid, eid = _start(ctx, admin, step, head=private)
    create_user(ctx, admin, username="eva", role="member")
    add_group_member(ctx, admin, "leads", "eva")
    clock.advance(days=5)
    run_once(ctx)
    lines = history(ctx, rid)
    assert any("its escalation was not done" in line for line in lines), lines
    runs.decide(ctx, actor_by_username(ctx, "bogdan"), eid, "approve", "validate")
    assert "approved" in history(ctx, rid)


GROUP_TASK = """\
  - key: call
    responsibility: {type: group, group: crew}
    deadline: {days: 3, remind_every_days: 1, notify_controller: false}
    actions:
      - type: create_task
        title: "Call {{ record.first_name }}"
  - key: wait
    type: wait
    until: record.status == "client"
    timeout: {amount: 30, unit: days}
    on_timeout: refused"""


def test_a_group_reminder_is_emailed_to_each_active_member_with_an_address(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    create_group(ctx, admin, "crew")
    create_user(ctx, admin, username="eva", role="member")  # no address
    _start(ctx, admin, GROUP_TASK)
    for name in ("bogdan", "andrei", "eva"):
        add_group_member(ctx, admin, "crew", name)
    _caught(ctx)  # whatever the start sent is out of the way
    clock.advance(days=1)
    run_once(ctx)
    run_once(ctx)  # once each, however many rounds
    reminders = [
        e for e in _caught(ctx) if e.payload["subject"] == "crmflow: reminder, Call Claire"
    ]
    assert sorted(tuple(e.payload["to"]) for e in reminders) == [
        ("andrei@ex.org",),
        ("bogdan@ex.org",),
    ]
    [told] = [m for m in _told(ctx, "crew") if m.startswith("Reminder:")]
    assert "(no email sent to eva: no email)" in told


def test_passes_cut_short_by_their_time_limit_go_on_where_the_last_one_stopped(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    """12 late tasks, read 5 at a time by passes with no time to spare (each reads one page):
    with the worker's cursor the third pass reaches the last of them; a pass that started
    again at the first task each time would never tell the tail it is late."""
    rid, _ = _start(ctx, admin, TASK)
    data = {"first_name": "Claire", "last_name": "Martin"}
    for n in range(11):
        other = records.create_record(ctx, admin, "contact", {**data, "email": f"c{n}@ex.org"})
        runs.start_record(ctx, admin, "leave", other.id)
    clock.advance(days=2)
    cursor = DeadlineCursor()
    passes = [
        process_deadlines(ctx, now=ctx.now(), page=5, time_limit=0, cursor=cursor).late
        for _ in range(3)
    ]
    assert passes == [5, 5, 2]
    with ctx.engine.connect() as conn:
        late = conn.scalars(sa.select(task_events.c.task_id).where(task_events.c.action == "late"))
        assert len(set(late)) == 12
    # The list was seen whole: the next pass starts again at the first task, and finds
    # nothing more to say.
    assert cursor.after == 0
    assert process_deadlines(ctx, now=ctx.now(), page=5, time_limit=0, cursor=cursor).total == 0
    assert "Step 'call' is late" in " ".join(history(ctx, rid))
