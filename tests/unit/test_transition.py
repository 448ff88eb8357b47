"""The step transition function, rule by rule, with a frozen `now` and no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.commands import (
    CreateTask,
    EmailPayload,
    OutboxMessage,
    StartFlow,
    UpdateRecord,
)
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import (
    ActionStatus,
    DecisionMade,
    EnrollmentState,
    EnrollmentStatus,
    RecordChanged,
    RecordSnapshot,
    StepStatus,
    WaitKind,
)
from crmflow.engine.transition import (
    MAX_STEPS_PER_CALL,
    Outcome,
    advance,
    cancel,
    catch_up,
    enter,
    restart,
    sequence_progress,
)
from crmflow.engine.validation import ValidationContext, flow_from_data

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
ZONE = ZoneInfo("Europe/Paris")
CONTACT = type_catalog()["contact"]


Step = dict[str, Any]


def make_flow(steps: list[Step], **extra: Any) -> FlowDefinition:
    data = {
        "schema_version": 1,
        "key": "test-flow",
        "name": "Test flow",
        "record_type": "contact",
        "owner": "maria",
        "triggers": [{"type": "manual"}],
        "steps": steps,
        **extra,
    }
    return flow_from_data(data, context=ValidationContext(record_types=type_catalog()))


def make_record(**values: Any) -> RecordSnapshot:
    base: dict[str, Any] = {key: None for key in CONTACT.field_keys}
    base.update({"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"})
    base.update(values)
    return RecordSnapshot(id=7, type="contact", values=base, owner="andrei")


def start(flow: FlowDefinition, record: RecordSnapshot | None = None, **kw: Any) -> Outcome:
    return enter(
        flow,
        enrollment_id=42,
        flow_version=1,
        record=record or make_record(),
        now=kw.pop("now", NOW),
        zone=ZONE,
        record_type=CONTACT,
        **kw,
    )


def step_path(*outcomes: Outcome) -> list[tuple[str, str]]:
    return [(e.step_key, e.status.value) for o in outcomes for e in o.log]


def history(outcome: Outcome) -> list[str]:
    return [c.message for c in outcome.commands if c.kind == "history"]


def changed(
    flow: FlowDefinition, outcome: Outcome, at: datetime, **values: Any
) -> tuple[Outcome, RecordSnapshot]:
    before = dict(outcome.record.values)
    record = outcome.record.with_values(values, at=at)
    event = RecordChanged(
        change="updated", fields=tuple(values), before=before, after=dict(record.values), at=at
    )
    done = advance(flow, outcome.state, record, now=at, zone=ZONE, event=event, record_type=CONTACT)
    return done, record


def timer(flow: FlowDefinition, outcome: Outcome, at: datetime) -> Outcome:
    return advance(flow, outcome.state, outcome.record, now=at, zone=ZONE, record_type=CONTACT)


# -- timing ------


def test_a_step_never_runs_before_it_is_due() -> None:
    flow = make_flow(
        [
            {
                "key": "later",
                "timing": {"type": "after", "amount": 2, "unit": "days"},
                "actions": [{"type": "history", "message": "ran"}],
            },
        ]
    )
    entered = start(flow)
    assert entered.state.status is EnrollmentStatus.ACTIVE
    assert entered.state.waiting is not None and entered.state.waiting.kind is WaitKind.TIMER
    due = entered.next_due
    assert due == NOW + timedelta(days=2)
    assert not entered.commands

    early = timer(flow, entered, due - timedelta(seconds=1))
    assert early.not_due
    assert early.state == entered.state
    assert not early.commands and not early.log

    on_time = timer(flow, entered, due)
    assert history(on_time) == ["ran"]
    assert on_time.state.status is EnrollmentStatus.FINISHED


def test_immediate_steps_run_in_order_within_one_call_following_next() -> None:
    flow = make_flow(
        [
            {"key": "a", "actions": [{"type": "history", "message": "a"}], "next": "c"},
            {"key": "b", "actions": [{"type": "history", "message": "b"}], "next": "done"},
            {"key": "c", "actions": [{"type": "history", "message": "c"}], "next": "b"},
            {"key": "done", "type": "end"},
        ]
    )
    outcome = start(flow)
    assert history(outcome) == ["a", "c", "b"]
    assert outcome.state.status is EnrollmentStatus.FINISHED
    assert "end step 'done'" in outcome.state.end_reason
    assert outcome.state.step_runs == 4


def test_steps_follow_their_order_field() -> None:
    flow = make_flow(
        [
            {"key": "second", "order": 2, "actions": [{"type": "history", "message": "2"}]},
            {"key": "first", "order": 1, "actions": [{"type": "history", "message": "1"}]},
        ]
    )
    assert history(start(flow)) == ["1", "2"]


def test_a_date_timing_is_recomputed_when_the_date_changes() -> None:
    flow = make_flow(
        [
            {
                "key": "birthday",
                "timing": {"type": "date", "field": "birth_date", "time": "09:00"},
                "actions": [{"type": "history", "message": "happy birthday"}],
            },
        ]
    )
    entered = start(flow, make_record(birth_date="2026-03-20"))
    assert entered.next_due == datetime(2026, 3, 20, 8, 0, tzinfo=UTC)
    moved, _ = changed(flow, entered, NOW + timedelta(hours=1), birth_date="2026-04-10")
    assert moved.next_due == datetime(2026, 4, 10, 7, 0, tzinfo=UTC)  # CEST by then
    assert not moved.commands
    ran = timer(flow, moved, datetime(2026, 4, 10, 7, 0, tzinfo=UTC))
    assert history(ran) == ["happy birthday"]


def test_records_of_one_definition_each_get_their_own_due_time() -> None:
    """One parsed definition serves every record of a batch: a time that depends on the record
    is its own, and a delay counts from each record's own instant (across a DST change too)."""
    flow = make_flow(
        [
            {"key": "hello", "actions": [{"type": "history", "message": "hi"}]},
            {
                "key": "birthday",
                "timing": {"type": "date", "field": "birth_date", "time": "09:00"},
                "actions": [{"type": "history", "message": "hb"}],
            },
            {
                "key": "later",
                "timing": {"type": "after", "amount": 1, "unit": "days"},
                "actions": [{"type": "history", "message": "later"}],
            },
        ]
    )
    first = start(flow, make_record(birth_date="2026-03-28"))
    second = start(flow, make_record(birth_date="2026-03-29"))
    assert first.next_due == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert second.next_due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 09:00 CEST

    # Paris goes to summer time in the night of 28 to 29 March 2026: 1 day after 09:00 local
    # is 09:00 local the next day, 23 or 24 hours later depending on the day.
    before = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    after = datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    for _ in range(2):  # asked twice: the answer kept for an instant is that instant's
        ran_before = timer(flow, first, before)
        ran_after = timer(flow, second, after)
        assert ran_before.next_due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
        assert ran_after.next_due == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_a_date_the_record_lacks_holds_the_step_until_it_is_set() -> None:
    flow = make_flow(
        [
            {
                "key": "birthday",
                "timing": {"type": "date", "field": "birth_date"},
                "actions": [{"type": "history", "message": "hb"}],
            }
        ]
    )
    entered = start(flow)
    assert entered.next_due is None
    assert entered.state.waiting is not None
    assert "no birth_date" in entered.state.waiting.description
    assert timer(flow, entered, NOW + timedelta(days=400)).not_due
    past, _ = changed(flow, entered, NOW + timedelta(days=1), birth_date="2026-03-01")
    assert history(past) == ["hb"]  # the date is already past: it runs at once, not earlier


# -- decisions, merges, conditions, active flags ------


DECISION: list[Step] = [
    {
        "key": "size",
        "type": "decision",
        "branches": [
            {"if": "record.last_donation_amount >= 1000.0", "goto": "major"},
            {"if": "record.last_donation_amount >= 100.0", "goto": "regular"},
        ],
        "else": "small",
    },
    {"key": "major", "actions": [{"type": "history", "message": "major"}], "next": "together"},
    {"key": "regular", "actions": [{"type": "history", "message": "regular"}], "next": "together"},
    {"key": "small", "actions": [{"type": "history", "message": "small"}]},
    {"key": "together", "type": "merge"},
    {"key": "after", "actions": [{"type": "history", "message": "after"}]},
]


@pytest.mark.parametrize(
    ("amount", "path"),
    [
        (5000, ["major", "after"]),
        (1000, ["major", "after"]),
        (150, ["regular", "after"]),
        (10, ["small", "after"]),
    ],
)
def test_a_decision_takes_the_first_true_branch_else_its_else(amount: int, path: list[str]) -> None:
    outcome = start(make_flow(DECISION), make_record(last_donation_amount=amount))
    assert history(outcome) == path
    assert ("together", "done") in step_path(outcome)


def test_a_decision_without_else_goes_on_and_leaves_when_nothing_follows() -> None:
    steps: list[Step] = [
        {
            "key": "check",
            "type": "decision",
            "branches": [{"if": "record.newsletter == true", "goto": "news"}],
        },
        {"key": "plain", "actions": [{"type": "history", "message": "plain"}], "next": "done"},
        {"key": "news", "actions": [{"type": "history", "message": "news"}]},
        {"key": "done", "type": "end"},
    ]
    assert history(start(make_flow(steps), make_record(newsletter=False))) == ["plain"]

    last = make_flow(
        [
            {"key": "first", "actions": [{"type": "history", "message": "x"}]},
            {
                "key": "check",
                "type": "decision",
                "branches": [{"if": "record.newsletter == true", "goto": "first"}],
            },
        ]
    )
    outcome = start(last, make_record(newsletter=False))
    assert outcome.state.status is EnrollmentStatus.LEFT
    assert "no branch of decision 'check' holds" in outcome.state.end_reason


def test_a_branch_that_cannot_be_evaluated_counts_as_false_and_says_why() -> None:
    steps: list[Step] = [
        {
            "key": "check",
            "type": "decision",
            "branches": [{"if": "record.total_donations + 1 > 10", "goto": "big"}],
            "else": "small",
        },
        {"key": "big", "type": "end"},
        {"key": "small", "type": "end"},
    ]
    outcome = start(make_flow(steps), make_record(total_donations=None))
    decision = next(e for e in outcome.log if e.step_key == "check")
    assert "going to 'small'" in decision.reason
    assert "branch 1 counted as false" in decision.reason


def test_a_step_whose_condition_is_false_is_skipped_and_the_log_says_so() -> None:
    flow = make_flow(
        [
            {
                "key": "news",
                "condition": "record.newsletter == true",
                "actions": [{"type": "history", "message": "news"}],
            },
            {"key": "bye", "actions": [{"type": "history", "message": "bye"}]},
        ]
    )
    outcome = start(flow, make_record(newsletter=False))
    assert history(outcome) == ["bye"]
    skipped = outcome.log[0]
    assert (skipped.step_key, skipped.status) == ("news", StepStatus.SKIPPED)
    assert "condition false: record.newsletter == true" in skipped.reason


def test_inactive_steps_and_actions_are_skipped_and_said_so() -> None:
    flow = make_flow(
        [
            {
                "key": "off",
                "active": False,
                "timing": {"type": "after", "amount": 5},
                "actions": [{"type": "history", "message": "never"}],
            },
            {
                "key": "on",
                "actions": [
                    {"type": "history", "message": "yes"},
                    {"type": "history", "message": "no", "active": False},
                ],
            },
        ]
    )
    outcome = start(flow)
    assert history(outcome) == ["yes"]  # the inactive step did not wait its 5 days either
    off, on = outcome.log[0], outcome.log[1]
    assert off.status is StepStatus.SKIPPED and off.reason == "the step is inactive"
    assert [a.status for a in on.actions] == [ActionStatus.DONE, ActionStatus.SKIPPED]
    assert on.actions[1].detail == "the action is inactive"


def test_the_goal_makes_the_record_leave_wherever_it_is() -> None:
    flow = make_flow(
        [
            {
                "key": "wait",
                "timing": {"type": "after", "amount": 30},
                "actions": [{"type": "history", "message": "late"}],
            }
        ],
        goal="record.total_donations > 1000.0",
    )
    entered = start(flow, make_record(total_donations=10))
    assert entered.state.step_key == "wait"
    left, _ = changed(flow, entered, NOW + timedelta(days=3), total_donations=5000)
    assert left.state.status is EnrollmentStatus.LEFT
    assert "goal" in left.state.end_reason
    assert left.state.finished_at == NOW + timedelta(days=3)
    assert not left.commands
    assert left.next_due is None

    already = start(flow, make_record(total_donations=2000))
    assert already.state.status is EnrollmentStatus.LEFT


def test_a_deleted_record_leaves_the_flow() -> None:
    flow = make_flow([{"key": "w", "timing": {"type": "after", "amount": 3}}])
    entered = start(flow)
    gone = advance(
        flow,
        entered.state,
        entered.record,
        now=NOW,
        zone=ZONE,
        event=RecordChanged(change="deleted"),
    )
    assert gone.state.status is EnrollmentStatus.LEFT
    assert gone.state.end_reason == "the record was deleted"


# -- waiting for events ------


WAIT: list[Step] = [
    {
        "key": "answer",
        "type": "wait",
        "until": 'record.status == "client"',
        "fields": ["email"],
        "timeout": {"amount": 14, "unit": "days"},
        "on_timeout": "chase",
    },
    {"key": "thank", "actions": [{"type": "history", "message": "thank"}], "next": "done"},
    {"key": "chase", "actions": [{"type": "history", "message": "chase"}]},
    {"key": "done", "type": "end"},
]


def test_a_wait_step_holds_until_its_condition_becomes_true() -> None:
    flow = make_flow(WAIT)
    entered = start(flow, make_record(status="prospect"))
    assert entered.state.status is EnrollmentStatus.WAITING
    assert entered.state.waiting is not None
    assert entered.state.waiting.kind is WaitKind.CONDITION
    assert entered.next_due == NOW + timedelta(days=14)

    unrelated, _record = changed(flow, entered, NOW + timedelta(days=1), first_name="Clara")
    assert unrelated.state == entered.state and not unrelated.commands

    became, _ = changed(flow, entered, NOW + timedelta(days=2), status="client")
    assert history(became) == ["thank"]
    assert became.state.status is EnrollmentStatus.FINISHED


def test_a_wait_step_goes_on_when_a_watched_field_changes() -> None:
    flow = make_flow(WAIT)
    entered = start(flow, make_record(status="prospect"))
    moved, _ = changed(flow, entered, NOW + timedelta(days=1), email="new@example.org")
    assert history(moved) == ["thank"]


def test_a_wait_step_takes_its_timeout_branch_at_the_timeout() -> None:
    flow = make_flow(WAIT)
    entered = start(flow, make_record(status="prospect"))
    assert timer(flow, entered, NOW + timedelta(days=13)).not_due
    late = timer(flow, entered, NOW + timedelta(days=14))
    assert history(late) == ["chase"]
    assert "within 14 days: going to 'chase'" in late.log[0].reason


def test_event_timing_starts_the_step_on_the_event_or_goes_to_on_timeout() -> None:
    flow = make_flow(
        [
            {
                "key": "paid",
                "timing": {
                    "type": "event",
                    "condition": 'record.status == "client"',
                    "timeout": {"amount": 30, "unit": "days"},
                    "on_timeout": "late",
                },
                "actions": [{"type": "history", "message": "paid"}],
                "next": "done",
            },
            {"key": "late", "actions": [{"type": "history", "message": "late"}]},
            {"key": "done", "type": "end"},
        ]
    )
    entered = start(flow, make_record(status="prospect"))
    assert entered.state.waiting is not None
    assert entered.state.waiting.kind is WaitKind.EVENT
    on_event, _ = changed(flow, entered, NOW + timedelta(days=3), status="client")
    assert history(on_event) == ["paid"]
    timed_out = timer(flow, entered, NOW + timedelta(days=30))
    assert history(timed_out) == ["late"]


# -- approvals ------


APPROVAL: list[Step] = [
    {
        "key": "manager",
        "type": "approval",
        "responsibility": {"type": "field", "field": "manager"},
        "message": "Hire {{ record.first_name }}?",
        "buttons": [
            {"key": "validate", "label": "Validate", "goto": "yes"},
            {"key": "refuse", "label": "Refuse", "goto": "no", "comment_required": True},
        ],
    },
    {"key": "yes", "actions": [{"type": "history", "message": "approved"}], "next": "done"},
    {"key": "no", "actions": [{"type": "history", "message": "refused"}]},
    {"key": "done", "type": "end"},
]


def decide(
    flow: FlowDefinition, outcome: Outcome, step: str, button: str, comment: str = ""
) -> Outcome:
    event = DecisionMade(step_key=step, button=button, by="maria", comment=comment)
    return advance(
        flow, outcome.state, outcome.record, now=NOW + timedelta(hours=5), zone=ZONE, event=event
    )


def test_an_approval_asks_the_responsible_person_and_holds_the_record() -> None:
    flow = make_flow(APPROVAL)
    entered = start(flow, make_record(manager="maria"))
    state = entered.state
    assert state.status is EnrollmentStatus.WAITING
    assert state.waiting is not None and state.waiting.kind is WaitKind.APPROVAL
    assert [b.key for b in state.waiting.buttons] == ["validate", "refuse"]
    assert state.waiting.asked_of == "maria"
    assert entered.next_due is None
    (task,) = entered.commands
    assert isinstance(task, CreateTask)
    assert task.assignee.ref == "maria" and task.title == "Hire Claire?"
    assert task.buttons == (("validate", "Validate"), ("refuse", "Refuse"))


def test_a_decision_continues_along_the_pressed_button() -> None:
    flow = make_flow(APPROVAL)
    entered = start(flow, make_record(manager="maria"))
    assert history(decide(flow, entered, "manager", "validate")) == ["approved"]
    refused = decide(flow, entered, "manager", "refuse", comment="no budget")
    assert history(refused) == ["refused"]
    assert "maria pressed Refuse (no budget)" in refused.log[0].reason


@pytest.mark.parametrize(
    ("step", "button", "comment", "message"),
    [
        ("manager", "maybe", "", "has no button 'maybe'"),
        ("manager", "refuse", "", "needs a comment"),
        ("yes", "validate", "", "is not at step 'yes'"),
    ],
)
def test_a_decision_that_cannot_be_taken_is_refused_and_changes_nothing(
    step: str, button: str, comment: str, message: str
) -> None:
    flow = make_flow(APPROVAL)
    entered = start(flow, make_record(manager="maria"))
    refused = decide(flow, entered, step, button, comment)
    assert refused.refused is not None and message in refused.refused
    assert refused.state == entered.state
    assert not refused.commands and not refused.log


def test_an_approval_with_nobody_to_ask_still_waits_and_says_why() -> None:
    entered = start(make_flow(APPROVAL), make_record(manager=None))
    assert entered.state.waiting is not None
    assert entered.state.waiting.asked_of is None
    assert "nobody could be asked" in entered.log[0].reason


# -- loops and chaining guard ------


def test_an_endless_goto_loop_is_cancelled_with_the_reason() -> None:
    flow = make_flow(
        [
            {"key": "ping", "actions": [{"type": "history", "message": "ping"}], "next": "pong"},
            {"key": "pong", "next": "ping"},
        ]
    )
    outcome = start(flow)
    assert outcome.state.status is EnrollmentStatus.CANCELLED
    assert f"more than {MAX_STEPS_PER_CALL} steps" in outcome.state.end_reason
    assert "ping -> pong" in outcome.state.end_reason


# -- actions ------


def test_actions_see_the_record_as_the_previous_actions_left_it() -> None:
    flow = make_flow(
        [
            {
                "key": "update",
                "actions": [
                    {
                        "type": "update_record",
                        "values": {
                            "status": "client",
                            "first_name": "{{ record.first_name | upper }}",
                            "total_donations": {
                                "cel": "record.total_donations + record.last_donation_amount"
                            },
                        },
                    },
                    {
                        "type": "history",
                        "message": "{{ record.first_name }} gave {{ record.total_donations }}",
                    },
                ],
            }
        ]
    )
    outcome = start(flow, make_record(total_donations=100, last_donation_amount=50))
    update = outcome.commands[0]
    assert isinstance(update, UpdateRecord)
    assert update.values == {"status": "client", "first_name": "CLAIRE", "total_donations": 150}
    assert history(outcome) == ["CLAIRE gave 150"]
    assert outcome.record.values["status"] == "client"


def test_a_failing_action_is_marked_failed_and_the_others_still_run() -> None:
    flow = make_flow(
        [
            {
                "key": "s",
                "actions": [
                    {
                        "type": "update_record",
                        "values": {"total_donations": {"cel": "record.first_name"}},
                    },
                    {"type": "history", "message": "{{ record.first_name.nope() }}"},
                    {"type": "history", "message": "still here"},
                ],
            },
            {"key": "next", "actions": [{"type": "history", "message": "next step"}]},
        ]
    )
    outcome = start(flow)
    run = outcome.log[0]
    assert run.status is StepStatus.FAILED and run.reason == "2 of 3 actions failed"
    assert [a.status for a in run.actions] == [
        ActionStatus.FAILED,
        ActionStatus.FAILED,
        ActionStatus.DONE,
    ]
    assert "total_donations: expected a number" in run.actions[0].detail
    assert "failed" in run.actions[1].detail
    assert history(outcome) == ["still here", "next step"]


def test_end_flow_ends_after_the_actions_of_its_step() -> None:
    flow = make_flow(
        [
            {
                "key": "s",
                "actions": [
                    {"type": "end_flow", "reason": "unsubscribed"},
                    {"type": "history", "message": "after end_flow"},
                ],
            },
            {"key": "never", "actions": [{"type": "history", "message": "never"}]},
        ]
    )
    outcome = start(flow)
    assert history(outcome) == ["after end_flow"]
    assert outcome.state.status is EnrollmentStatus.FINISHED
    assert outcome.state.end_reason == "unsubscribed"


def test_tasks_follow_the_responsibility_defaults_and_follow_ups_their_delay() -> None:
    flow = make_flow(
        [
            {
                "key": "s",
                "responsibility": {"type": "record_owner"},
                "actions": [
                    {"type": "create_task", "title": "Call {{ record.first_name }}", "due_days": 3},
                    {
                        "type": "create_task",
                        "title": "Flow owner's",
                        "assignee": {"type": "flow_owner"},
                    },
                    {
                        "type": "start_flow",
                        "flow": "other",
                        "delay": {"amount": 30, "unit": "days"},
                    },
                ],
            }
        ]
    )
    outcome = start(flow)
    first, second, follow = outcome.commands
    assert isinstance(first, CreateTask) and isinstance(second, CreateTask)
    assert (first.assignee.ref, first.title, first.due_at) == (
        "andrei",
        "Call Claire",
        NOW + timedelta(days=3),
    )
    assert second.assignee.ref == "maria"
    assert isinstance(follow, StartFlow)
    assert (follow.flow, follow.record_id) == ("other", 7)
    # 30 calendar days keep the local time: 10:00 in Paris, which is 08:00 UTC once DST began.
    assert follow.at == datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


def test_emails_count_towards_the_sequence_progress() -> None:
    flow = make_flow(
        [
            {"key": "one", "actions": [{"type": "send_email", "subject": "1", "body": "x"}]},
            {
                "key": "two",
                "timing": {"type": "after", "amount": 2},
                "actions": [{"type": "send_email", "subject": "2", "body": "x"}],
            },
        ]
    )
    first = start(flow)
    assert sequence_progress(flow, first.state) == (1, 2)
    (email,) = first.commands
    assert isinstance(email, OutboxMessage)
    assert isinstance(email.payload, EmailPayload)
    assert email.payload.to == ("claire@example.org",)
    second = timer(flow, first, NOW + timedelta(days=2))
    assert sequence_progress(flow, second.state) == (2, 2)
    again = restart(flow, second.state, second.record, now=NOW + timedelta(days=3), zone=ZONE)
    assert again.state.status is EnrollmentStatus.ACTIVE
    assert again.state.entered_at == NOW
    assert sequence_progress(flow, again.state) == (1, 2)
    assert again.state.step_runs == 3  # run numbers keep growing: keys never repeat


# -- state ------


def test_the_state_round_trips_through_json() -> None:
    entered = start(make_flow(APPROVAL), make_record(manager="maria"))
    data = entered.state.model_dump(mode="json")
    assert EnrollmentState.model_validate(data) == entered.state
    assert data["waiting"]["buttons"][0] == {
        "key": "validate",
        "label": "Validate",
        "comment_required": False,
    }


def test_an_ended_enrollment_does_not_move_and_cancel_keeps_the_reason() -> None:
    flow = make_flow([{"key": "w", "timing": {"type": "after", "amount": 1}}])
    entered = start(flow)
    stopped = cancel(entered.state, now=NOW, reason="loop guard")
    assert (stopped.status, stopped.end_reason) == (EnrollmentStatus.CANCELLED, "loop guard")
    later = advance(flow, stopped, entered.record, now=NOW + timedelta(days=9), zone=ZONE)
    assert later.state == stopped and not later.commands


def test_catch_up_policies_after_a_pause() -> None:
    steps = [{"key": "daily", "timing": {"type": "at_time", "time": "09:30"}}]
    paused, resumed = NOW + timedelta(hours=1), NOW + timedelta(days=3, hours=5)
    for mode, expected in [
        ("run_late", datetime(2026, 3, 2, 8, 30, tzinfo=UTC)),
        ("shift_delays", datetime(2026, 3, 5, 12, 30, tzinfo=UTC)),
        ("skip_missed", datetime(2026, 3, 6, 8, 30, tzinfo=UTC)),
    ]:
        flow = make_flow(steps, catch_up={"mode": mode}, timezone="Europe/Paris")
        entered = start(flow, now=NOW - timedelta(hours=1))
        state = catch_up(
            flow, entered.state, entered.record, paused_at=paused, resumed_at=resumed, zone=ZONE
        )
        assert state.due_at == expected, mode


def test_a_state_evolved_is_the_one_model_copy_makes_and_leaves_the_original_as_it_was() -> None:
    # The engine folds a call's changes in with `evolve`, a cheaper `model_copy(update=...)`:
    # the two must give the same state, field for field, as JSON and as pydantic sees it.
    before = EnrollmentState(
        enrollment_id=7, flow_key="f", flow_version=2, record_id=9, entered_at=NOW, step_runs=1
    )
    changes: dict[str, Any] = {
        "status": EnrollmentStatus.WAITING,
        "step_key": "later",
        "due_at": NOW + timedelta(days=1),
        "step_runs": 2,
    }
    evolved = before.evolve(changes)
    copied = before.model_copy(update=changes)
    assert evolved == copied
    assert evolved.model_dump_json() == copied.model_dump_json()
    assert evolved.model_fields_set == copied.model_fields_set
    assert EnrollmentState.model_validate_json(evolved.model_dump_json()) == evolved
    assert (before.status, before.step_key, before.step_runs) == (
        EnrollmentStatus.ACTIVE,
        None,
        1,
    )
    with pytest.raises(ValueError, match="frozen"):
        evolved.step_runs = 3  # type: ignore[misc]


def test_a_state_made_as_a_record_enters_is_the_one_the_constructor_makes() -> None:
    entering = EnrollmentState.entering(
        enrollment_id=7, flow_key="f", flow_version=2, record_id=9, entered_at=NOW
    )
    made = EnrollmentState(
        enrollment_id=7, flow_key="f", flow_version=2, record_id=9, entered_at=NOW
    )
    assert entering == made and entering.model_dump_json() == made.model_dump_json()
    assert entering.model_fields_set == made.model_fields_set
