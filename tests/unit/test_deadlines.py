"""Which reminders, late notices and escalations a deadline asks for, with a frozen clock; and
what the validator says about an escalation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crmflow.engine.deadlines import Watched, due_notices
from crmflow.engine.recordtypes import BUILTIN_TYPES
from crmflow.engine.validation import ValidationContext, check_flow_text
from crmflow.errors import InvalidInputError

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WATCHED = Watched(
    task_id=7,
    started_at=START,
    deadline_at=START + timedelta(days=5),
    remind_every_days=2,
    escalate_after_days=3,
)


def _keys(at: timedelta, sent: frozenset[str] = frozenset()) -> list[str]:
    return [n.key for n in due_notices(WATCHED, sent, START + at)]


def test_reminders_come_every_period_before_the_deadline_each_once() -> None:
    assert _keys(timedelta(days=1, hours=23)) == []
    assert _keys(timedelta(days=2)) == ["task:7:reminder:1"]
    assert _keys(timedelta(days=3), frozenset({"task:7:reminder:1"})) == []
    assert _keys(timedelta(days=4, hours=1)) == ["task:7:reminder:2"]


def test_a_worker_stopped_for_days_sends_only_the_latest_reminder() -> None:
    assert _keys(timedelta(days=4, hours=23)) == ["task:7:reminder:2"]


def test_the_step_is_late_at_its_deadline_once_then_escalates_after_the_days_given() -> None:
    late = due_notices(WATCHED, frozenset(), START + timedelta(days=5))
    assert [(n.key, n.days_late) for n in late] == [("task:7:late", 0)]
    assert _keys(timedelta(days=7), frozenset({"task:7:late"})) == []
    escalated = due_notices(WATCHED, frozenset({"task:7:late"}), START + timedelta(days=8))
    assert [(n.key, n.days_late) for n in escalated] == [("task:7:escalation", 3)]
    assert _keys(timedelta(days=30), frozenset({"task:7:late", "task:7:escalation"})) == []


def test_a_worker_back_after_the_escalation_time_sends_the_late_notice_then_escalates() -> None:
    assert _keys(timedelta(days=9)) == ["task:7:late", "task:7:escalation"]


def test_without_reminders_or_escalation_only_the_late_notice_goes() -> None:
    plain = Watched(task_id=1, started_at=START, deadline_at=START + timedelta(days=1))
    assert due_notices(plain, frozenset(), START + timedelta(hours=12)) == []
    assert [n.key for n in due_notices(plain, frozenset(), START + timedelta(days=90))] == [
        "task:1:late"
    ]


FLOW = """\
schema_version: 1
key: leave
name: Leave request
record_type: contact
controller: system
triggers: [{{type: manual}}]
steps:
  - key: approve
    type: {kind}
    responsibility: {{type: user, user: maria}}
    {body}
    deadline: {{days: 2, escalate: {escalate}}}
"""
APPROVAL = "buttons: [{key: yes, label: Yes}, {key: no, label: No}]"
ACTIONS = "actions: [{type: create_task, title: Call}]"
CONTEXT = ValidationContext(record_types=BUILTIN_TYPES)


def _check(kind: str, body: str, escalate: str) -> None:
    check_flow_text(FLOW.format(kind=kind, body=body, escalate=escalate), context=CONTEXT)


def test_an_escalation_decides_an_approval_or_reassigns_a_task() -> None:
    _check("approval", APPROVAL, "{after_days: 2, decide: no}")
    _check("action", ACTIONS, "{after_days: 1, to: bogdan}")
    _check("approval", APPROVAL, "{after_days: 1, to: {type: group, group: direction}}")


@pytest.mark.parametrize(
    ("kind", "body", "escalate", "message"),
    [
        ("approval", APPROVAL, "{after_days: 2, decide: maybe}", "has no button 'maybe'"),
        ("action", ACTIONS, "{after_days: 2, decide: no}", "only an approval step can be decided"),
        ("approval", APPROVAL, "{after_days: 2}", "give exactly one of them"),
        ("approval", APPROVAL, "{after_days: 2, decide: no, to: bogdan}", "exactly one"),
    ],
)
def test_a_wrong_escalation_is_refused_saying_how_to_fix_it(
    kind: str, body: str, escalate: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _check(kind, body, escalate)


WAIT = 'until: record.status == "client"\n    timeout: {amount: 3, unit: days}'
NO_TASK = "actions: [{type: history, message: late?}]"


@pytest.mark.parametrize(("kind", "body"), [("wait", WAIT), ("action", NO_TASK)])
def test_a_deadline_on_a_step_that_gives_nobody_work_is_refused(kind: str, body: str) -> None:
    """A wait step, or an action step without create_task, has nobody to chase: its deadline
    would do nothing, so the flow is refused with the fix."""
    flow = FLOW.replace("deadline: {{days: 2, escalate: {escalate}}}", "deadline: {{days: 2}}")
    text = flow.format(kind=kind, body=body, escalate="")
    with pytest.raises(InvalidInputError) as refused:
        check_flow_text(text, context=CONTEXT)
    said = str(refused.value)
    assert "steps[0].deadline" in said
    assert f"step 'approve' ({kind}) gives nobody a task or a decision" in said
    assert "add a create_task action for the work to chase" in said
    # With a task to chase, the same deadline is taken.
    check_flow_text(flow.format(kind="action", body=ACTIONS, escalate=""), context=CONTEXT)
