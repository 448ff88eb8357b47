"""An action step whose create_task has `wait: true` holds the record until its tasks are done
(a TaskDone event), then goes on; without `wait` it goes on at once, as before. Pure engine:
frozen `now`, no database."""

from __future__ import annotations

from datetime import timedelta

from crmflow.engine.commands import CreateTask
from crmflow.engine.runtime import EnrollmentStatus, StepStatus, TaskDone, WaitKind
from crmflow.engine.transition import advance
from tests.unit.test_transition import NOW, ZONE, history, make_flow, start


def _steps(wait: bool) -> list[dict[str, object]]:
    return [
        {
            "key": "prepare",
            "actions": [
                {
                    "type": "create_task",
                    "title": "Call {{ record.first_name }}",
                    "assignee": {"type": "user", "user": "andrei"},
                    "wait": wait,
                }
            ],
        },
        {"key": "after", "actions": [{"type": "history", "message": "called"}]},
    ]


def test_a_waiting_task_holds_the_step_until_it_is_done() -> None:
    flow = make_flow(_steps(wait=True))
    entered = start(flow)
    state = entered.state
    assert (state.status, state.step_key) == (EnrollmentStatus.WAITING, "prepare")
    assert state.waiting is not None and state.waiting.kind is WaitKind.TASK
    assert state.waiting.description == "waiting for the task 'Call Claire' to be done"
    assert state.waiting.asked_of == "andrei"
    assert [type(c) for c in entered.commands] == [CreateTask]
    assert [(log.status, log.step_run) for log in entered.log] == [(StepStatus.WAITING, 1)]
    assert history(entered) == []

    # A timer does not move it: only the tasks being done does.
    later = NOW + timedelta(days=30)
    assert advance(flow, state, entered.record, now=later, zone=ZONE).state == state
    event = TaskDone(step_key="prepare", by="andrei", task="Call Claire")
    done = advance(flow, state, entered.record, now=later, zone=ZONE, event=event)
    assert done.state.status is EnrollmentStatus.FINISHED
    assert history(done) == ["called"]
    assert (done.log[0].step_run, done.log[0].status, done.log[0].reason) == (
        1,
        StepStatus.DONE,
        "task 'Call Claire' done by andrei",
    )


def test_a_task_done_at_another_step_is_refused_and_changes_nothing() -> None:
    flow = make_flow(_steps(wait=True))
    entered = start(flow)
    event = TaskDone(step_key="after", by="andrei")
    refused = advance(flow, entered.state, entered.record, now=NOW, zone=ZONE, event=event)
    assert refused.refused == "the record does not wait for tasks at step 'after'"
    assert refused.state == entered.state


def test_without_wait_the_step_goes_on_at_once() -> None:
    entered = start(make_flow(_steps(wait=False)))
    assert entered.state.status is EnrollmentStatus.FINISHED
    assert history(entered) == ["called"]
    [task] = [c for c in entered.commands if isinstance(c, CreateTask)]
    assert task.title == "Call Claire"
