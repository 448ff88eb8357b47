"""What a resume does to a record that changed while its flow was paused, and a timer that fires
for a date the record has moved since: the pure engine, with a frozen clock and no database.

A paused flow hears nothing; on resume each changed record is looked at as it is now, then the
catch-up policy applies. Never early: a step never runs before the record's current date says.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.definition import CatchUpPolicy, FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import (
    EnrollmentStatus,
    RecordChanged,
    RecordSnapshot,
    StepStatus,
    WaitKind,
)
from crmflow.engine.transition import Outcome, advance, catch_up, enter, resume_recheck
from crmflow.engine.validation import ValidationContext, flow_from_data

ZONE = ZoneInfo("Europe/Paris")
TYPES = type_catalog()
ENTERED = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PAUSED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
RESUMED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
REMINDER: list[dict[str, Any]] = [
    {"key": "welcome", "actions": [{"type": "history", "message": "Registered"}]},
    {
        "key": "remind",
        "timing": {"type": "date", "field": "start", "days": 1, "direction": "before"},
        "actions": [{"type": "history", "message": "See you tomorrow"}],
    },
]


def make_flow(
    steps: list[dict[str, Any]], record_type: str = "event", **extra: Any
) -> FlowDefinition:
    data = {
        "schema_version": 1,
        "key": "resume-flow",
        "name": "Resume flow",
        "record_type": record_type,
        "owner": "maria",
        "triggers": [{"type": "manual"}],
        "steps": steps,
        "timezone": "Europe/Paris",
        **extra,
    }
    return flow_from_data(data, context=ValidationContext(record_types=TYPES))


def event(start: str) -> RecordSnapshot:
    values: dict[str, Any] = {key: None for key in TYPES["event"].field_keys}
    values.update({"title": "Gala", "start": start, "status": "planned"})
    return RecordSnapshot(id=7, type="event", values=values, owner="andrei")


def contact(**changes: Any) -> RecordSnapshot:
    values: dict[str, Any] = {key: None for key in TYPES["contact"].field_keys}
    values.update({"first_name": "Claire", "last_name": "Martin", "status": "lead"})
    values.update(changes)
    return RecordSnapshot(id=8, type="contact", values=values, owner="andrei")


def enter_at(flow: FlowDefinition, record: RecordSnapshot) -> Outcome:
    rtype = TYPES[flow.record_type]
    return enter(
        flow,
        enrollment_id=1,
        flow_version=1,
        record=record,
        now=ENTERED,
        zone=ZONE,
        record_type=rtype,
    )


def recheck(
    flow: FlowDefinition,
    entered: Outcome,
    record: RecordSnapshot,
    change: RecordChanged | None,
    policy: CatchUpPolicy | None = None,
) -> Outcome:
    return resume_recheck(
        flow,
        entered.state,
        record,
        change=change,
        paused_at=PAUSED,
        resumed_at=RESUMED,
        zone=ZONE,
        policy=policy,
        record_type=TYPES[flow.record_type],
    )


def moved(field: str, before: Any, after: Any) -> RecordChanged:
    return RecordChanged("updated", (field,), {field: before}, {field: after}, by="maria")


def said(outcome: Outcome) -> list[str]:
    """The history entries the outcome writes on the record."""
    return [c.message for c in outcome.commands if c.kind == "history"]


# -- a date moved while paused ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["run_late", "skip_missed"])
def test_a_date_moved_later_while_paused_moves_the_step_at_the_resume(mode: str) -> None:
    flow = make_flow(REMINDER, catch_up={"mode": mode})
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    assert entered.state.due_at == datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    later = event("2026-12-20T18:00:00Z")
    out = recheck(
        flow, entered, later, moved("start", "2026-12-03T18:00:00Z", later.values["start"])
    )
    # Dec 19, as in a flow that kept running, not the Dec 2 computed from the old date.
    assert out.state.due_at == datetime(2026, 12, 19, 18, 0, tzinfo=UTC)
    assert out.state.step_key == "remind" and not out.log and not out.commands
    assert out.state.waiting is not None and "2026-12-20" in out.state.waiting.description
    # And on Dec 2, when the old time comes, nothing runs.
    early = advance(flow, out.state, later, now=datetime(2026, 12, 2, 18, 0, tzinfo=UTC), zone=ZONE)
    assert early.not_due and not early.log


def test_shift_delays_leaves_a_time_set_by_the_records_date_where_the_date_puts_it() -> None:
    """Shifting a "1 day before the event" reminder by the pause would send it after the event:
    a date is not a delay, and keeps its time (recomputed from the date as it is now)."""
    flow = make_flow(REMINDER, catch_up={"mode": "shift_delays"})
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    later = event("2026-12-20T18:00:00Z")
    out = recheck(
        flow, entered, later, moved("start", "2026-12-03T18:00:00Z", later.values["start"])
    )
    assert out.state.due_at == datetime(2026, 12, 19, 18, 0, tzinfo=UTC)
    unchanged = recheck(flow, entered, event("2026-12-03T18:00:00Z"), None)
    assert unchanged.state.due_at == datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def test_an_unchanged_record_only_goes_through_the_catch_up_policy() -> None:
    """No change during the pause: the policy alone decides (shift_delays moves a delay)."""
    flow = make_flow(
        [
            {"key": "welcome", "actions": [{"type": "history", "message": "Registered"}]},
            {
                "key": "follow-up",
                "timing": {"type": "after", "amount": 3, "unit": "days"},
                "actions": [{"type": "history", "message": "How was it?"}],
            },
        ],
        catch_up={"mode": "shift_delays"},
    )
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    due = entered.state.due_at
    assert due is not None
    out = recheck(flow, entered, event("2026-12-03T18:00:00Z"), None)
    assert out.state.due_at == due + (RESUMED - PAUSED)


def test_a_date_moved_earlier_into_the_pause_runs_late_not_at_the_old_time() -> None:
    flow = make_flow(REMINDER)  # run_late
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    sooner = event("2026-11-27T18:00:00Z")
    out = recheck(
        flow, entered, sooner, moved("start", "2026-12-03T18:00:00Z", sooner.values["start"])
    )
    due = out.state.due_at
    assert due == datetime(2026, 11, 26, 18, 0, tzinfo=UTC)  # fell due during the pause
    ran = advance(flow, out.state, sooner, now=RESUMED, zone=ZONE)
    assert said(ran) == ["See you tomorrow"]


def test_a_date_emptied_while_paused_holds_the_step_until_the_record_has_one() -> None:
    flow = make_flow(REMINDER)
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    out = recheck(flow, entered, event(""), moved("start", "2026-12-03T18:00:00Z", None))
    assert out.state.due_at is None and out.state.status is EnrollmentStatus.ACTIVE
    assert out.state.waiting is not None and "no start" in out.state.waiting.description


# -- the timer re-checks the date -----------------------------------------------------------------


def test_a_timer_for_a_date_that_moved_later_reschedules_instead_of_running() -> None:
    flow = make_flow(REMINDER)
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    later = event("2026-12-20T18:00:00Z")
    # The change was not heard (the flow was paused then): the timer fires at the old time.
    fired = advance(
        flow, entered.state, later, now=datetime(2026, 12, 2, 18, 0, tzinfo=UTC), zone=ZONE
    )
    assert not fired.log and not fired.commands
    assert fired.state.due_at == datetime(2026, 12, 19, 18, 0, tzinfo=UTC)
    assert fired.state.step_key == "remind"
    at_time = advance(
        flow, fired.state, later, now=datetime(2026, 12, 19, 18, 0, tzinfo=UTC), zone=ZONE
    )
    assert said(at_time) == ["See you tomorrow"]


def test_a_timer_for_an_unchanged_date_runs_the_step() -> None:
    flow = make_flow(REMINDER)
    record = event("2026-12-03T18:00:00Z")
    entered = enter_at(flow, record)
    ran = advance(
        flow, entered.state, record, now=datetime(2026, 12, 2, 18, 0, tzinfo=UTC), zone=ZONE
    )
    assert said(ran) == ["See you tomorrow"]
    assert ran.state.status is EnrollmentStatus.FINISHED


# -- waits, goals and deletions --------------------------------------------------------------------


WAIT_FOR_CLIENT: list[dict[str, Any]] = [
    {
        "key": "until_client",
        "type": "wait",
        "until": 'record.status == "client"',
        "timeout": {"amount": 30, "unit": "days"},
    },
    {"key": "thanks", "actions": [{"type": "history", "message": "Welcome aboard"}]},
]


def test_a_condition_that_came_true_while_paused_goes_on_at_the_resume() -> None:
    flow = make_flow(WAIT_FOR_CLIENT, record_type="contact")
    entered = enter_at(flow, contact())
    assert entered.state.waiting is not None
    assert entered.state.waiting.kind is WaitKind.CONDITION
    out = recheck(flow, entered, contact(status="client"), moved("status", "lead", "client"))
    assert said(out) == ["Welcome aboard"]
    assert out.state.status is EnrollmentStatus.FINISHED and out.state.finished_at == RESUMED
    assert out.log[0].status is StepStatus.DONE and "now holds" in out.log[0].reason


def test_a_field_changed_while_paused_releases_a_wait_for_that_change() -> None:
    steps: list[dict[str, Any]] = [
        {"key": "phone_change", "type": "wait", "fields": ["phone"], "timeout": {"amount": 5}},
        {"key": "call", "actions": [{"type": "history", "message": "Call the new number"}]},
    ]
    flow = make_flow(steps, record_type="contact")
    entered = enter_at(flow, contact())
    out = recheck(
        flow, entered, contact(phone="+33612345678"), moved("phone", None, "+33612345678")
    )
    assert said(out) == ["Call the new number"]


def test_a_condition_still_false_keeps_waiting_with_its_timeout_caught_up() -> None:
    flow = make_flow(WAIT_FOR_CLIENT, record_type="contact", catch_up={"mode": "shift_delays"})
    entered = enter_at(flow, contact())
    out = recheck(flow, entered, contact(status="prospect"), moved("status", "lead", "prospect"))
    assert not out.log and out.state.step_key == "until_client"
    assert entered.state.due_at is not None
    assert out.state.due_at == entered.state.due_at + (RESUMED - PAUSED)


def test_a_goal_met_while_paused_makes_the_record_leave_at_the_resume() -> None:
    flow = make_flow(REMINDER, goal='record.status == "cancelled"')
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    gone = event("2026-12-03T18:00:00Z")
    gone = gone.with_values({"status": "cancelled"})
    out = recheck(flow, entered, gone, moved("status", "planned", "cancelled"))
    assert out.state.status is EnrollmentStatus.LEFT
    assert "goal" in out.state.end_reason and out.state.finished_at == RESUMED
    assert not said(out)


def test_a_record_deleted_while_paused_leaves_at_the_resume() -> None:
    flow = make_flow(REMINDER)
    entered = enter_at(flow, event("2026-12-03T18:00:00Z"))
    out = recheck(flow, entered, event("2026-12-03T18:00:00Z"), RecordChanged("deleted"))
    assert out.state.status is EnrollmentStatus.LEFT
    assert out.state.end_reason == "the record was deleted"


# -- the policy of the version the flow resumes on ---------------------------------------------


def test_catch_up_applies_the_policy_it_is_given_not_the_old_versions() -> None:
    daily = [{"key": "daily", "timing": {"type": "at_time", "time": "09:30"}}]
    old = make_flow(daily, record_type="contact")  # run_late
    entered = enter_at(old, contact())
    assert entered.state.due_at == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    paused = ENTERED + timedelta(hours=1)  # the 09:30 of the 24th comes while paused
    kept = catch_up(old, entered.state, contact(), paused_at=paused, resumed_at=RESUMED, zone=ZONE)
    assert kept.due_at == entered.state.due_at  # run_late: runs late, at once
    skipped = catch_up(
        old,
        entered.state,
        contact(),
        paused_at=paused,
        resumed_at=RESUMED,
        zone=ZONE,
        policy=CatchUpPolicy(mode="skip_missed"),
    )
    assert skipped.due_at == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)  # the next 09:30 after
