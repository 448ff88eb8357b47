"""A step whose date had already passed when the record reached it runs at once, and its run
says so (it used to have an empty reason)."""

from __future__ import annotations

from datetime import timedelta

from crmflow.engine.runtime import StepStatus
from tests.unit.test_transition import NOW, make_flow, make_record, start


def test_a_date_already_past_runs_at_once_and_the_run_says_when_it_was_due() -> None:
    flow = make_flow(
        [
            {
                "key": "greet",
                "timing": {"type": "date", "field": "birth_date", "time": "09:00"},
                "actions": [{"type": "history", "message": "Happy birthday"}],
            }
        ]
    )
    past = (NOW - timedelta(days=20)).date().isoformat()  # NOW is 2026-03-02 09:00 UTC
    entered = start(flow, make_record(birth_date=past))
    [run] = [log for log in entered.log if log.status is StepStatus.DONE]
    assert run.step_key == "greet"
    assert run.at == NOW  # at once, not at the (past) date
    assert run.reason == (
        f"due {past} 09:00 Europe/Paris, already past when the record reached this step: "
        "ran at once"
    )


def test_a_date_still_to_come_waits_and_its_run_has_no_such_note() -> None:
    flow = make_flow(
        [
            {
                "key": "greet",
                "timing": {"type": "date", "field": "birth_date", "time": "09:00"},
                "actions": [{"type": "history", "message": "Happy birthday"}],
            }
        ]
    )
    entered = start(flow, make_record(birth_date="2026-03-20"))
    assert not [log for log in entered.log if log.step_key == "greet"]
    assert entered.state.due_at is not None and entered.state.due_at > NOW
