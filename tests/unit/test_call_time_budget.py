"""One record's run of steps is bounded in time (issue 8): the call happens inside a write
transaction, so once `call_time_limit_ms` has passed the next due step waits for the next batch,
due at once, and runs there exactly once. The engine's clock is replaced by one that only moves
when a step runs (each action step "takes" a second), so nothing here depends on the machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine import step_loop
from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import type_catalog
from crmflow.engine.runtime import EnrollmentStatus, RecordSnapshot, WaitKind
from crmflow.engine.simulation import simulate
from crmflow.engine.steps.base import StepResult, StepRun
from crmflow.engine.transition import Outcome, advance, enter
from crmflow.engine.validation import ValidationContext, flow_from_data

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Paris")
CONTACT = type_catalog()["contact"]
STEP_SECONDS = 1.0
BUDGET = EvaluationLimits(call_time_limit_ms=1_500)  # room for two steps of a second


class SteppedClock:
    """time.monotonic() for the engine: it moves only when a step's actions run."""

    def __init__(self) -> None:
        self.seconds = 1_000.0

    def monotonic(self) -> float:
        return self.seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    clock = SteppedClock()
    monkeypatch.setattr(step_loop, "time", clock)
    run_actions = step_loop._STARTERS["action"]

    def slow_actions(step: Any, run: StepRun) -> StepResult:
        clock.seconds += STEP_SECONDS
        result: StepResult = run_actions(step, run)
        return result

    monkeypatch.setitem(step_loop._STARTERS, "action", slow_actions)
    return clock


def chain(*keys: str, loop: bool = False) -> FlowDefinition:
    """Action steps that run one after the other (the last going back to the first: `loop`)."""
    steps: list[dict[str, Any]] = [
        {"key": k, "actions": [{"type": "history", "message": f"ran {k}"}]} for k in keys
    ]
    if loop:
        steps[-1]["next"] = keys[0]
    data = {
        "schema_version": 1,
        "key": "chain",
        "name": "Chain",
        "record_type": "contact",
        "triggers": [{"type": "manual"}],
        "steps": steps,
    }
    return flow_from_data(data, context=ValidationContext(record_types=type_catalog()))


def record() -> RecordSnapshot:
    values: dict[str, Any] = {key: None for key in CONTACT.field_keys}
    values.update({"first_name": "Claire", "last_name": "Martin", "email": "c@example.org"})
    return RecordSnapshot(id=7, type="contact", values=values, owner="andrei")


def enter_at(flow: FlowDefinition, limits: EvaluationLimits) -> Outcome:
    return enter(
        flow,
        enrollment_id=1,
        flow_version=1,
        record=record(),
        now=NOW,
        zone=ZONE,
        record_type=CONTACT,
        limits=limits,
    )


def next_batch(
    flow: FlowDefinition, outcome: Outcome, at: datetime, limits: EvaluationLimits
) -> Outcome:
    """What the worker does with a due enrollment: a timer call (no event)."""
    return advance(
        flow, outcome.state, outcome.record, now=at, zone=ZONE, record_type=CONTACT, limits=limits
    )


def ran(*outcomes: Outcome) -> list[str]:
    """The history messages written, in order: one per step that ran."""
    return [c.message for o in outcomes for c in o.commands if c.kind == "history"]


def runs(*outcomes: Outcome) -> list[tuple[str, int, str]]:
    return [(log.step_key, log.step_run, log.status.value) for o in outcomes for log in o.log]


def test_a_run_of_steps_past_its_budget_stops_due_now_and_the_next_batch_finishes_it(
    clock: SteppedClock,
) -> None:
    flow = chain("a", "b", "c", "d", "e")
    first = enter_at(flow, BUDGET)
    assert ran(first) == ["ran a", "ran b"]
    state = first.state
    assert (state.status, state.step_key, state.due_at) == (EnrollmentStatus.ACTIVE, "c", NOW)
    assert state.waiting is not None and state.waiting.kind is WaitKind.TIMER
    assert state.waiting.description == (
        "continues in the next batch: this run of steps went over its time budget of 1,500 ms"
    )
    assert first.next_due == NOW  # the worker finds it due in its next batch

    later = NOW + timedelta(seconds=3)
    second = next_batch(flow, first, later, EvaluationLimits(call_time_limit_ms=10_000))
    assert ran(second) == ["ran c", "ran d", "ran e"]
    assert second.state.status is EnrollmentStatus.FINISHED
    # Each step ran once, each its own run number, c at the second batch's time.
    assert runs(first, second) == [
        ("a", 1, "done"),
        ("b", 2, "done"),
        ("c", 3, "done"),
        ("d", 4, "done"),
        ("e", 5, "done"),
        ("e", 5, "ended"),
    ]
    [c_run] = [log for log in second.log if log.step_key == "c"]
    assert c_run.at == later
    assert c_run.reason.startswith("ran in the next batch: the run of steps before it went over")


def test_a_long_chain_goes_on_batch_after_batch_each_step_once(clock: SteppedClock) -> None:
    keys = [f"s{i}" for i in range(7)]
    flow = chain(*keys)
    outcomes = [enter_at(flow, BUDGET)]
    at = NOW
    while not outcomes[-1].state.is_over:
        assert outcomes[-1].next_due == at  # cut: due at the time of the call that stopped
        at += timedelta(seconds=1)
        outcomes.append(next_batch(flow, outcomes[-1], at, BUDGET))
    assert [len(ran(o)) for o in outcomes] == [2, 2, 2, 1]
    assert ran(*outcomes) == [f"ran {k}" for k in keys]
    step_runs = [n for _, n, status in runs(*outcomes) if status == "done"]
    assert step_runs == list(range(1, 8))


def test_the_first_step_of_a_call_always_runs_even_past_the_budget(clock: SteppedClock) -> None:
    flow = chain("a", "b", "c")
    nothing = EvaluationLimits(call_time_limit_ms=0)
    first = enter_at(flow, nothing)
    assert ran(first) == ["ran a"]
    second = next_batch(flow, first, NOW + timedelta(seconds=1), nothing)
    assert ran(second) == ["ran b"]
    assert second.state.step_key == "c"


def test_an_endless_loop_is_still_cancelled_when_every_call_is_cut(
    clock: SteppedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step_loop, "MAX_STEPS_PER_CALL", 10)
    flow = chain("ping", "pong", loop=True)
    outcome = enter_at(flow, BUDGET)
    at = NOW
    calls = 1
    while not outcome.state.is_over:
        assert outcome.state.step_key in ("ping", "pong")
        at += timedelta(seconds=1)
        outcome = next_batch(flow, outcome, at, BUDGET)
        calls += 1
    assert calls == 5  # two steps a call: the eleventh step in a row is refused
    assert outcome.state.status is EnrollmentStatus.CANCELLED
    assert outcome.state.end_reason.startswith(
        "more than 10 steps ran in a row without waiting; the flow loops"
    )


def test_a_simulation_is_never_cut_by_the_call_budget(clock: SteppedClock) -> None:
    flow = chain("a", "b", "c", "d", "e")
    sim = simulate(
        flow,
        record(),
        start=NOW,
        until=NOW + timedelta(days=1),
        zone=ZONE,
        record_type=CONTACT,
        limits=BUDGET,
    )
    done = [(e.step, e.at) for e in sim.timeline if e.status == "done" and e.action is None]
    assert done == [(key, NOW) for key in "abcde"]
    assert "next batch" not in " ".join(e.text for e in sim.timeline)
    assert sim.state is not None
    assert sim.state.status is EnrollmentStatus.FINISHED
