"""Who a step or a task goes to (engine.steps.people), with the people the runner would load
(engine.directory): managers, deactivated users, groups in turn or all at once, related
records' fields, private flows; and the fall back to the controller, saying why."""

from __future__ import annotations

from typing import Any

import pytest

from crmflow.engine.commands import CreateTask, Notify
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.directory import Directory, Person, Turns
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError
from crmflow.engine.transition import Outcome, enter
from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
from crmflow.errors import InvalidInputError
from crmflow.runner.people import responsibilities
from tests.unit.test_transition import CONTACT, NOW, ZONE, make_flow, make_record

USERS = {
    "maria": Person("maria", True),
    "ana": Person("ana", True, manager="rita"),
    "rita": Person("rita", True),
    "ion": Person("ion", False, manager="rita"),
    "dan": Person("dan", True, manager="ion"),
    "eva": Person("eva", True),
}


def people(**more: Any) -> Directory:
    return Directory(
        users=USERS,
        usernames={i: name for i, name in enumerate(USERS, start=1)},
        groups={"sales": ("ana", "eva", "rita")},
        **more,
    )


def task_flow(responsibility: dict[str, Any], **extra: Any) -> FlowDefinition:
    step = {
        "key": "call",
        "responsibility": responsibility,
        "actions": [{"type": "create_task", "title": "Call"}],
    }
    return make_flow([step], controller="maria", **extra)


def tasks_of(outcome: Outcome) -> list[str]:
    return [str(c.assignee) for c in outcome.commands if isinstance(c, CreateTask)]


def run(flow: FlowDefinition, record: RecordSnapshot, enrollment_id: int = 42) -> Outcome:
    return enter(
        flow,
        enrollment_id=enrollment_id,
        flow_version=1,
        record=record,
        now=NOW,
        zone=ZONE,
        record_type=CONTACT,
    )


def with_people(directory: Directory | None = None, **values: Any) -> RecordSnapshot:
    record = make_record(**values)
    return RecordSnapshot(record.id, record.type, record.values, "andrei", people=directory)


def test_the_manager_of_the_user_in_a_field_is_asked() -> None:
    flow = task_flow({"type": "manager_of", "field": "manager"})
    # A user field holds the user's id: 2 is ana, whose manager is rita.
    done = run(flow, with_people(people(), manager=2))
    assert tasks_of(done) == ["rita (manager of ana, the record's manager)"]


@pytest.mark.parametrize(
    ("responsibility", "manager", "why"),
    [
        ({"type": "manager_of", "field": "manager"}, None, "the record's manager is empty"),
        (
            {"type": "manager_of", "field": "manager"},
            3,
            "rita, the record's manager, has no manager",
        ),
        (
            {"type": "manager_of", "field": "manager"},
            5,  # dan, whose manager ion is deactivated
            "manager of dan, the record's manager (ion) is deactivated",
        ),
        ({"type": "field", "field": "manager"}, 4, "the record's manager (ion) is deactivated"),
        ({"type": "user", "user": "zed"}, None, "named in the flow ('zed') is not a user"),
    ],
)
def test_who_cannot_be_asked_falls_back_to_the_controller_saying_why(
    responsibility: dict[str, Any], manager: int | None, why: str
) -> None:
    done = run(task_flow(responsibility), with_people(people(), manager=manager))
    assert tasks_of(done) == [f"maria (controller): {why}"]


def test_without_a_controller_nobody_is_asked_and_the_step_says_why() -> None:
    flow = make_flow(
        [
            {
                "key": "call",
                "responsibility": {"type": "manager_of", "field": "manager"},
                "actions": [{"type": "create_task", "title": "Call"}],
            }
        ]
    )
    record = with_people(people(), manager=None)
    with pytest.raises(EvaluationError, match="empty, and the flow has no controller"):
        resolve(flow.steps[0].responsibility, flow, record)


def test_a_round_robin_group_asks_each_active_member_in_turn_from_where_it_stands() -> None:
    flow = task_flow({"type": "group", "group": "sales", "mode": "round_robin"})
    directory = people(turns=Turns({("test-flow", "call", "sales"): 4}))
    asked = [tasks_of(run(flow, with_people(directory), enrollment_id=i))[0] for i in range(4)]
    # 4 tasks given before: the fifth turn is the second member's (ana, eva, rita).
    assert asked == [
        "eva (group sales, in turn)",
        "rita (group sales, in turn)",
        "ana (group sales, in turn)",
        "eva (group sales, in turn)",
    ]


def test_a_step_run_asks_one_member_however_often_it_names_them() -> None:
    step = {
        "key": "call",
        "responsibility": {"type": "group", "group": "sales", "mode": "round_robin"},
        "actions": [
            {"type": "create_task", "title": "Call"},
            {"type": "notify", "responsible": True, "message": "{{ step.responsible }}"},
        ],
    }
    flow = make_flow([step], controller="maria")
    done = run(flow, with_people(people()))
    notified = [c for c in done.commands if isinstance(c, Notify)]
    assert tasks_of(done) == ["ana (group sales, in turn)"]
    assert [(n.users, n.message) for n in notified] == [(("ana",), "ana")]


def test_a_group_with_mode_all_gives_each_active_member_a_task() -> None:
    flow = task_flow({"type": "group", "group": "sales", "mode": "all"})
    assert tasks_of(run(flow, with_people(people()))) == [
        "ana (a member of group sales)",
        "eva (a member of group sales)",
        "rita (a member of group sales)",
    ]
    # The default: one task for the group, which any member may take.
    shared = task_flow({"type": "group", "group": "sales"})
    assert tasks_of(run(shared, with_people(people()))) == ["group sales (a group)"]


def test_a_related_records_user_field_names_the_user() -> None:
    # An order's contact (a reference field) holds the manager.
    flow = task_flow({"type": "field", "field": "contact.manager"}, record_type="order")
    directory = people(related={(7, "contact.manager"): 6})
    assert tasks_of(run(flow, with_people(directory))) == ["eva (the record's contact.manager)"]
    assert tasks_of(run(flow, with_people(people()))) == [
        "maria (controller): the record's contact.manager is empty"
    ]


def test_a_private_flow_gives_no_work_to_a_non_member() -> None:
    flow = task_flow(
        {"type": "field", "field": "manager"},
        visibility="private",
        members=["maria", "rita"],
    )
    directory = people(flow_members={"test-flow": frozenset({"maria", "rita"})})
    assert tasks_of(run(flow, with_people(directory, manager=3))) == ["rita (the record's manager)"]
    [fallback] = tasks_of(run(flow, with_people(directory, manager=2)))
    assert fallback.startswith(
        "maria (controller): the record's manager (ana) is not a member of this private flow"
    )
    assert "`crmflow flows add-member test-flow ana` gives access" in fallback


PRIVATE = """\
schema_version: 1
key: service
name: Service
record_type: {record_type}
owner: alice
controller: {controller}
visibility: private
members: [alice, maria, ana]
triggers:
  - type: manual
steps:
  - key: call
    responsibility: {responsibility}
    actions:
      - type: notify
        users: [{notified}]
        groups: [{group}]
        message: Hello
"""


def _problems(**parts: str) -> list[tuple[str, str, str]]:
    values = {
        "record_type": "contact",
        "controller": "maria",
        "responsibility": "{type: user, user: ana}",
        "notified": "ana",
        "group": "support",
        **parts,
    }
    context = ValidationContext(
        record_types=type_catalog(),
        users=frozenset({"alice", "maria", "ana", "eva"}),
        groups=frozenset({"support", "sales"}),
        group_members={"support": frozenset({"ana"}), "sales": frozenset({"ana", "eva"})},
    )
    try:
        parse_flow(PRIVATE.format(**values), context=context)
    except InvalidInputError as exc:
        return [(p.path, p.message, p.hint) for p in exc.problems]
    return []


def test_a_private_flow_gives_work_only_to_its_members_and_says_how_to_grant_access() -> None:
    assert _problems() == []
    [controller] = _problems(controller="eva")
    assert controller[:2] == (
        "controller",
        "'eva' is not a member of this private flow and could not see its work",
    )
    assert "`crmflow flows add-member service eva`" in controller[2]
    [notified] = _problems(notified="eva")
    assert notified[0] == "steps[0].actions[0].users[0]"
    [group] = _problems(group="sales")
    assert group[:2] == (
        "steps[0].actions[0].groups[0]",
        "group 'sales' has members who are not members of this private flow: eva",
    )
    [responsible] = _problems(responsibility="{type: group, group: sales, mode: all}")
    assert responsible[0] == "steps[0].responsibility.group"


def test_a_dotted_field_must_lead_to_a_user_field_through_a_reference() -> None:
    assert (
        _problems(record_type="order", responsibility="{type: field, field: contact.manager}") == []
    )
    [wrong] = _problems(
        record_type="order", responsibility="{type: manager_of, field: contact.email}"
    )
    assert wrong[:2] == (
        "steps[0].responsibility.field",
        "the contact record type (of field 'contact') has no user field 'email'",
    )
    assert wrong[2] == "its user fields: manager"
    [not_a_reference] = _problems(responsibility="{type: field, field: email.manager}")
    assert "a reference field is needed here" in not_a_reference[1]


def test_two_reads_of_the_same_people_are_the_same_directory_whatever_turns_were_taken() -> None:
    first, second = people(), people(turns=Turns({("f", "s", "sales"): 3}))
    assert first == second and second == first  # the runner reuses an outcome then
    assert first == second  # (remembered)
    changed = people(flow_members={"test-flow": frozenset({"maria"})})
    assert first != changed
    assert with_people(first) == with_people(second)
    assert with_people(first) != with_people(changed)


def test_the_people_a_flow_asks_include_its_escalations() -> None:
    document = {
        "schema_version": 1,
        "key": "late",
        "name": "Late",
        "record_type": "order",
        "controller": "maria",
        "triggers": [{"type": "manual"}],
        "steps": [
            {
                "key": "call",
                "responsibility": {"type": "user", "user": "ana"},
                "deadline": {
                    "days": 2,
                    "escalate": {
                        "after_days": 1,
                        "to": {"type": "manager_of", "field": "contact.manager"},
                    },
                },
                "actions": [{"type": "create_task", "title": "Call"}],
            }
        ],
    }
    flow = flow_from_data(document, context=ValidationContext(record_types=type_catalog()))
    asked = [(key, r.type if r else None) for key, r in responsibilities(flow)]
    assert asked == [("call", "manager_of"), ("call", "user")]
