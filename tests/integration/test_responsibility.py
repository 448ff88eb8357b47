"""Responsibilities through the runner and the database: the requester's manager (users'
managers), a related record's user field, a round-robin group that goes on from run to run, the
fall back to the controller written in the run's log, and a private flow's checks on save."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import InvalidInputError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import notifications, tasks
from tests.conftest import make_user
from tests.integration.helpers import history

FLOW = """\
schema_version: 1
key: callback
name: Call back
record_type: {type}
controller: maria
triggers:
  - type: manual
steps:
  - key: call
    responsibility: {responsibility}
    actions:
      - type: create_task
        title: Call back
"""


@pytest.fixture(autouse=True)
def people(ctx: Context, admin: Actor) -> None:
    make_user(ctx, "maria", "manager")
    users.create_user(ctx, admin, username="rita", role="manager")
    users.create_user(ctx, admin, username="ana", role="member", manager="rita")
    users.create_user(ctx, admin, username="ion", role="member")
    users.create_group(ctx, admin, "sales")
    for name in ("ana", "ion", "rita"):
        users.add_group_member(ctx, admin, "sales", name)


def _flow(ctx: Context, admin: Actor, responsibility: str, record_type: str = "contact") -> None:
    text = FLOW.format(type=record_type, responsibility=responsibility)
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, "callback", LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, manager: str | None = None) -> int:
    values = {"first_name": "Claire", "last_name": "Martin", "email": "c@example.org"}
    if manager is not None:
        values["manager"] = manager
    return records.create_record(ctx, admin, "contact", values).id


def _assignees(ctx: Context) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(tasks.c.assignee_ref).order_by(tasks.c.id)).scalars())


def _task_line(ctx: Context, admin: Actor, record_id: int) -> str:
    run = runs.start_record(ctx, admin, "callback", record_id)
    [step] = run.step_runs
    [action] = step.actions
    return str(action["detail"])


def test_the_requesters_manager_gets_the_task_and_an_empty_field_the_controller(
    ctx: Context, admin: Actor
) -> None:
    _flow(ctx, admin, "{type: manager_of, field: manager}")
    line = _task_line(ctx, admin, _contact(ctx, admin, manager="ana"))
    assert line.startswith("task for rita (manager of ana, the record's manager): Call back")
    empty = _contact(ctx, admin)
    fallback = _task_line(ctx, admin, empty)
    assert fallback == "task for maria (controller): Call back; the record's manager is empty"
    users.update_user(ctx, admin, "rita", active=False)
    deactivated = _task_line(ctx, admin, _contact(ctx, admin, manager="ana"))
    assert deactivated.endswith("the record's manager (rita) is deactivated")
    assert _assignees(ctx) == ["rita", "maria", "maria"]
    # The record's history says why the controller was asked.
    assert history(ctx, empty) == [
        "Step 'call': task 'Call back' asked of maria (controller): the record's manager is empty"
    ]


def test_a_related_records_user_field_names_who_does_the_work(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin, "{type: field, field: contact.manager}", record_type="order")
    contact = _contact(ctx, admin, manager="ion")
    order = records.create_record(ctx, admin, "order", {"number": "O-1", "contact": contact})
    line = _task_line(ctx, admin, order.id)
    assert line.startswith("task for ion (the record's contact.manager)")


def test_a_round_robin_group_goes_on_from_run_to_run(ctx: Context, admin: Actor) -> None:
    _flow(ctx, admin, "{type: group, group: sales, mode: round_robin}")
    for _ in range(4):
        _task_line(ctx, admin, _contact(ctx, admin))
    assert _assignees(ctx) == ["ana", "ion", "rita", "ana"]


def test_a_private_flows_group_needs_its_members_in_the_flow(ctx: Context, admin: Actor) -> None:
    text = FLOW.format(type="contact", responsibility="{type: group, group: sales}").replace(
        "controller: maria", "controller: maria\nvisibility: private\nmembers: [maria, ana]"
    )
    with pytest.raises(InvalidInputError) as refused:
        flows.create_flow(ctx, admin, text)
    [problem] = refused.value.problems
    assert problem.path == "steps[0].responsibility.group"
    assert "group 'sales' has members who are not members of this private flow: ion, rita" in (
        problem.message
    )
    assert "add them to members" in problem.hint
    flows.create_flow(ctx, admin, text.replace("[maria, ana]", "[maria, ana, ion, rita]"))


APPROVAL = """\
schema_version: 1
key: sign-off
name: Sign-off
record_type: contact
controller: maria
triggers:
  - type: manual
steps:
  - key: approve
    type: approval
    responsibility: {type: group, group: sales, mode: round_robin}
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse}
"""


def test_a_round_robin_approval_asks_one_member_in_turn(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, APPROVAL)
    flows.change_status(ctx, admin, "sign-off", LifecycleAction.START)
    reasons = [
        runs.start_record(ctx, admin, "sign-off", _contact(ctx, admin)).step_runs[0].reason
        for _ in range(2)
    ]
    assert [r.split("asked of ", 1)[1] for r in reasons] == [
        "ana (group sales, in turn)",
        "ion (group sales, in turn)",
    ]
    assert _assignees(ctx) == ["ana", "ion"]


def _told(ctx: Context) -> list[tuple[str, str, str]]:
    """(kind, to, first words) of each notification, in order."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                notifications.c.target_kind, notifications.c.target_ref, notifications.c.message
            ).order_by(notifications.c.id)
        ).all()
    return [(r.target_kind, r.target_ref, r.message.split(" '", 1)[0]) for r in rows]


def test_who_is_told_of_a_new_task_or_a_decision_follows_the_groups_mode(
    ctx: Context, admin: Actor
) -> None:
    """A round-robin approval tells the member whose turn it is, not the group; `mode: all`
    gives each member a task, and tells each; `mode: any` tells the group once."""
    flows.create_flow(ctx, admin, APPROVAL)
    flows.change_status(ctx, admin, "sign-off", LifecycleAction.START)
    runs.start_record(ctx, admin, "sign-off", _contact(ctx, admin))
    assert _told(ctx) == [("user", "ana", "Decision needed:")]

    _flow(ctx, admin, "{type: group, group: sales, mode: all}")
    _task_line(ctx, admin, _contact(ctx, admin))
    assert _told(ctx)[1:] == [
        ("user", "ana", "New task:"),
        ("user", "ion", "New task:"),
        ("user", "rita", "New task:"),
    ]
    flows.create_flow(
        ctx,
        admin,
        APPROVAL.replace("mode: round_robin", "mode: any").replace(
            "key: sign-off", "key: sign-off-any"
        ),
    )
    flows.change_status(ctx, admin, "sign-off-any", LifecycleAction.START)
    runs.start_record(ctx, admin, "sign-off-any", _contact(ctx, admin))
    assert _told(ctx)[4:] == [("group", "sales", "Decision needed:")]
