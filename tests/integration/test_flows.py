"""Flows through their lifecycle on both backends: what an admin sees at each step."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction as A
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from crmflow.services import flows, queries
from crmflow.services.context import Actor, Context
from crmflow.store.schema import enrollments, records
from crmflow.store.schema import flows as flows_table
from tests.conftest import make_user

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers:
  - type: record_created
steps:
  - key: note
    actions:
      - type: history
        message: "Welcome {{ record.first_name }}"
"""


def _promo(query: str = "six-months") -> str:
    return f"""\
schema_version: 1
key: promo
name: Six-month promotion
record_type: contact
triggers:
  - type: start_list
    query: {query}
steps:
  - key: note
    actions:
      - type: history
        message: "Promotion sent"
"""


def _contacts(ctx: Context, client_since: list[str]) -> None:
    now = ctx.now()
    rows = [
        {
            "type": "contact",
            "owner_id": None,
            "data": {"last_name": f"C{i}", "client_since": day},
            "created_at": now,
            "updated_at": now,
        }
        for i, day in enumerate(client_since)
    ]
    with ctx.engine.begin() as conn:
        conn.execute(records.insert(), rows)


def test_a_new_flow_is_a_draft_at_version_one_and_its_creation_is_recorded(
    ctx: Context, admin: Actor
) -> None:
    view = flows.create_flow(ctx, admin, WELCOME, source="welcome.yaml")
    assert (view.key, view.status, view.version) == ("welcome", FlowStatus.DRAFT, 1)
    assert view.owner == admin.username
    [created] = flows.flow_history(ctx, admin, "welcome")
    assert (created.actor, created.from_status, created.to_status) == ("system", None, "draft")


def test_only_admins_create_and_change_flows(ctx: Context, admin: Actor) -> None:
    manager = make_user(ctx, "maria", "manager")
    with pytest.raises(PermissionDeniedError, match="only admins may create flows"):
        flows.create_flow(ctx, manager, WELCOME)
    flows.create_flow(ctx, admin, WELCOME)
    with pytest.raises(PermissionDeniedError):
        flows.change_status(ctx, manager, "welcome", A.START)
    with pytest.raises(PermissionDeniedError):
        flows.delete_flow(ctx, manager, "welcome")
    assert flows.get_flow(ctx, manager, "welcome").status is FlowStatus.DRAFT


def test_an_invalid_flow_is_refused_whole_and_nothing_is_stored(ctx: Context, admin: Actor) -> None:
    broken = WELCOME.replace("message:", "mesage:").replace("contact", "contakt")
    with pytest.raises(InvalidInputError) as caught:
        flows.create_flow(ctx, admin, broken, source="welcome.yaml")
    assert len(caught.value.problems) >= 2
    assert flows.list_flows(ctx, admin) == []


def test_the_same_key_twice_is_refused(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    with pytest.raises(ConflictError, match="already exists"):
        flows.create_flow(ctx, admin, WELCOME)


def test_a_draft_is_edited_in_place(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    view = flows.update_flow(ctx, admin, "welcome", WELCOME.replace("Welcome\n", "Hello\n"))
    assert (view.name, view.version) == ("Hello", 1)


def test_an_active_flow_is_locked_and_a_paused_edit_makes_a_new_version(
    ctx: Context, admin: Actor, clock: object
) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    assert flows.change_status(ctx, admin, "welcome", A.START).status is FlowStatus.ACTIVE
    with pytest.raises(ConflictError, match="pause it"):
        flows.update_flow(ctx, admin, "welcome", WELCOME.replace("Welcome\n", "Hello\n"))
    flows.change_status(ctx, admin, "welcome", A.PAUSE)
    edited = flows.update_flow(ctx, admin, "welcome", WELCOME.replace("Welcome\n", "Hello\n"))
    assert (edited.version, edited.name, edited.status) == (2, "Hello", FlowStatus.PAUSED)
    old = flows.get_flow_version(ctx, admin, "welcome", 1)
    assert old["document"]["name"] == "Welcome"
    assert "name: Welcome" in old["source"]
    assert flows.change_status(ctx, admin, "welcome", A.RESUME).version == 2
    history = [
        (c.from_status, c.to_status, c.version) for c in flows.flow_history(ctx, admin, "welcome")
    ]
    assert history == [
        (None, "draft", 1),
        ("draft", "active", 1),
        ("active", "paused", 1),
        ("paused", "paused", 2),
        ("paused", "active", 2),
    ]


def test_editing_cannot_change_the_status(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    with pytest.raises(InvalidInputError, match="editing does not change the status"):
        flows.update_flow(ctx, admin, "welcome", WELCOME + "status: active\n")


def test_refused_transitions_say_why(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    with pytest.raises(ConflictError, match="a draft has not started"):
        flows.change_status(ctx, admin, "welcome", A.PAUSE)
    flows.change_status(ctx, admin, "welcome", A.START)
    flows.change_status(ctx, admin, "welcome", A.DRAIN)
    with pytest.raises(ConflictError, match="resume"):
        flows.change_status(ctx, admin, "welcome", A.START)
    archived = flows.change_status(ctx, admin, "welcome", A.ARCHIVE)
    assert archived.status is FlowStatus.ARCHIVED
    assert flows.change_status(ctx, admin, "welcome", A.RESUME).status is FlowStatus.ACTIVE


def test_starting_with_a_start_list_needs_the_count_confirmed(ctx: Context, admin: Actor) -> None:
    today = ctx.now().astimezone(ctx.zone).date()
    target = (today - timedelta(days=180)).isoformat()
    other = (today - timedelta(days=181)).isoformat()
    _contacts(ctx, [target, target, target, other])
    queries.save_query(
        ctx,
        admin,
        name="six-months",
        record_type="contact",
        filter={"all": [{"field": "client_since", "op": "=", "value": "today - 180 days"}]},
    )
    flows.create_flow(ctx, admin, _promo())
    assert flows.start_list_count(ctx, admin, "promo") == 3
    with pytest.raises(flows.ConfirmationRequiredError) as asked:
        flows.change_status(ctx, admin, "promo", A.START)
    assert asked.value.count == 3
    assert "3 record(s)" in asked.value.message
    with pytest.raises(flows.ConfirmationRequiredError, match="holds 3 record"):
        flows.change_status(ctx, admin, "promo", A.START, confirm_count=5)
    assert flows.get_flow(ctx, admin, "promo").status is FlowStatus.DRAFT
    started = flows.change_status(ctx, admin, "promo", A.START, confirm_count=3)
    assert started.status is FlowStatus.ACTIVE
    assert "3 record(s)" in flows.flow_history(ctx, admin, "promo")[-1].note


def test_a_record_in_two_start_lists_is_counted_once(ctx: Context, admin: Actor) -> None:
    today = ctx.now().astimezone(ctx.zone).date()
    recent = (today - timedelta(days=10)).isoformat()
    old = (today - timedelta(days=400)).isoformat()
    _contacts(ctx, [recent, recent, old])
    for name, op in (("recent", ">="), ("everyone", "is not empty")):
        condition = {"field": "client_since", "op": op}
        if op == ">=":
            condition["value"] = "today - 30 days"
        queries.save_query(
            ctx, admin, name=name, record_type="contact", filter={"all": [condition]}
        )
    two_lists = _promo("recent").replace(
        "steps:", "  - type: start_list\n    query: everyone\nsteps:"
    )
    flows.create_flow(ctx, admin, two_lists)
    assert flows.start_list_count(ctx, admin, "promo") == 3


def test_a_flow_that_ran_cannot_be_deleted_but_a_draft_can(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.delete_flow(ctx, admin, "welcome")
    with pytest.raises(NotFoundError):
        flows.get_flow(ctx, admin, "welcome")
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", A.START)
    flows.change_status(ctx, admin, "welcome", A.ARCHIVE)
    with pytest.raises(ConflictError, match="archive it instead"):
        flows.delete_flow(ctx, admin, "welcome")


def _enroll(ctx: Context, key: str, count: int, status: str = "active") -> None:
    with ctx.engine.begin() as conn:
        flow_id = conn.execute(sa.select(flows_table.c.id).where(flows_table.c.key == key)).scalar()
        conn.execute(
            enrollments.insert(),
            [
                {
                    "flow_id": flow_id,
                    "flow_version": 1,
                    "record_id": 1000 + i,
                    "status": status,
                    "step_key": "note",
                    "entered_at": ctx.now(),
                }
                for i in range(count)
            ],
        )


def test_a_draft_that_had_records_inside_cannot_be_deleted(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    _enroll(ctx, "welcome", 2, status="finished")
    with pytest.raises(ConflictError, match="2 record"):
        flows.delete_flow(ctx, admin, "welcome")


def test_archiving_with_records_inside_needs_their_number(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", A.START)
    _enroll(ctx, "welcome", 12)
    assert flows.get_flow(ctx, admin, "welcome").inside == 12
    with pytest.raises(flows.ConfirmationRequiredError, match="12 record"):
        flows.change_status(ctx, admin, "welcome", A.ARCHIVE)
    archived = flows.change_status(ctx, admin, "welcome", A.ARCHIVE, confirm_inside=12)
    assert archived.status is FlowStatus.ARCHIVED


PRIVATE = """\
schema_version: 1
key: service-orders
name: Service orders
record_type: order
visibility: private
members: [bogdan]
triggers:
  - type: manual
steps:
  - key: diagnose
    actions:
      - type: history
        message: Diagnosis
"""


def test_private_flows_are_invisible_to_non_members(ctx: Context, admin: Actor) -> None:
    bogdan = make_user(ctx, "bogdan", "member")
    andrei = make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, PRIVATE)
    assert [f.key for f in flows.list_flows(ctx, bogdan)] == ["service-orders"]
    assert flows.list_flows(ctx, andrei) == []
    with pytest.raises(NotFoundError):
        flows.get_flow(ctx, andrei, "service-orders")
    flows.add_member(ctx, admin, "service-orders", "andrei")
    assert flows.get_flow(ctx, andrei, "service-orders").members == ("andrei", "bogdan", "system")
    # Several flows coexist, each separate: a public one is seen by everyone.
    flows.create_flow(ctx, admin, WELCOME)
    assert {f.key for f in flows.list_flows(ctx, andrei)} == {"service-orders", "welcome"}


def test_start_at_without_an_offset_is_read_in_the_flow_time_zone(
    ctx: Context, admin: Actor
) -> None:
    text = WELCOME.replace(
        "record_type: contact",
        "record_type: contact\ntimezone: America/New_York\nstart_at: 2026-12-01T09:00:00",
    )
    view = flows.create_flow(ctx, admin, text)
    assert view.start_at is not None
    assert view.start_at.isoformat() == "2026-12-01T14:00:00+00:00"


def test_a_new_active_flow_with_an_unconfirmed_start_list_leaves_nothing_behind(
    ctx: Context, admin: Actor
) -> None:
    queries.save_query(ctx, admin, name="six-months", record_type="contact", filter={})
    _contacts(ctx, ["2026-01-01", "2026-01-02"])
    active = _promo() + "status: active\n"
    with pytest.raises(flows.ConfirmationRequiredError, match="2 record"):
        flows.create_flow(ctx, admin, active)
    assert flows.list_flows(ctx, admin) == []
    view = flows.create_flow(ctx, admin, active, confirm_count=2)
    assert view.status is FlowStatus.ACTIVE
    assert [c.to_status for c in flows.flow_history(ctx, admin, "promo")] == ["draft", "active"]


def test_pausing_with_records_inside_needs_their_number(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", A.START)
    _enroll(ctx, "welcome", 3)
    with pytest.raises(flows.ConfirmationRequiredError, match=r"3 record.*frozen") as asked:
        flows.change_status(ctx, admin, "welcome", A.PAUSE)
    # The command to confirm takes the one flag name every confirmation takes.
    assert asked.value.confirm_with == "crmflow flows pause welcome --confirm 3"
    paused = flows.change_status(ctx, admin, "welcome", A.PAUSE, confirm_inside=3)
    assert paused.status is FlowStatus.PAUSED


def test_membership_changes_are_in_the_history(ctx: Context, admin: Actor) -> None:
    make_user(ctx, "bogdan", "member")
    make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, PRIVATE)
    flows.add_member(ctx, admin, "service-orders", "andrei")
    flows.remove_member(ctx, admin, "service-orders", "andrei")
    notes = [c.note for c in flows.flow_history(ctx, admin, "service-orders")]
    assert notes[-2:] == ["member added: andrei", "member removed: andrei"]
    view = flows.remove_member(ctx, admin, "service-orders", admin.username)
    assert admin.username not in view.members
    # The owner of a private flow always sees it, member or not.
    assert flows.get_flow(ctx, admin, "service-orders").owner == admin.username


def test_a_saved_query_used_by_a_flow_cannot_be_deleted(ctx: Context, admin: Actor) -> None:
    queries.save_query(ctx, admin, name="six-months", record_type="contact", filter={})
    flows.create_flow(ctx, admin, _promo())
    with pytest.raises(ConflictError, match="used by the flow"):
        queries.delete_query(ctx, admin, "six-months")
    flows.delete_flow(ctx, admin, "promo")
    queries.delete_query(ctx, admin, "six-months")


def test_records_waiting_at_a_step_count_as_inside(ctx: Context, admin: Actor) -> None:
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", A.START)
    _enroll(ctx, "welcome", 2, status="waiting")  # e.g. held at an approval
    _enroll(ctx, "welcome", 1, status="finished")
    assert flows.get_flow(ctx, admin, "welcome").inside == 2
    with pytest.raises(flows.ConfirmationRequiredError, match="2 record"):
        flows.change_status(ctx, admin, "welcome", A.PAUSE)


@pytest.mark.parametrize("key", flows.RESERVED_KEYS)
def test_a_flow_key_the_web_pages_use_is_refused_with_another_suggested(
    ctx: Context, admin: Actor, key: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        flows.create_flow(ctx, admin, WELCOME.replace("key: welcome", f"key: {key}"))
    [problem] = refused.value.problems
    assert problem.path == "key"
    assert f"/flows/{key}" in problem.message
    assert f"{key}-flow" in problem.hint
    assert flows.list_flows(ctx, admin) == []
