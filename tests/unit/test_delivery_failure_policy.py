"""`on_failure` on send_email, send_sms and webhook (issue 10): what the validator accepts and
refuses, and what the policy does to a run, decided by the engine (pure) for each case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.definition.delivery_policy import FailureGoto, OnFailure
from crmflow.engine.delivery_failure import (
    FailedMessage,
    action_ref_of,
    apply_decision,
    decide,
    describe_message,
    policy_of,
)
from crmflow.engine.runtime import EnrollmentState, EnrollmentStatus, RecordSnapshot, StepStatus
from crmflow.engine.transition import cancel, enter
from crmflow.engine.validation import flow_from_data
from tests.unit.test_flow_validation import CONTEXT, flow, paths

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Paris")
RECORD = RecordSnapshot(7, "contact", {"first_name": "Ana", "email": "ana@example.org"})
FAILED = FailedMessage("Email to ana@example.org", 5, "550 no such user", "tell", "mail")


def steps(policy: Any, action: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    sent = action or {"type": "send_email", "subject": "Hi", "body": "Hello"}
    return [
        {"key": "tell", "actions": [{**sent, "key": "mail", "on_failure": policy}]},
        {
            "key": "later",
            "type": "wait",
            "until": "false",
            "timeout": {"amount": 3, "unit": "days"},
            "on_timeout": "fix",
        },
        {"key": "done", "type": "end"},
        {"key": "fix", "actions": [{"type": "history", "message": "the email bounced"}]},
    ]


def parsed(policy: Any, action: dict[str, Any] | None = None) -> FlowDefinition:
    return flow_from_data(flow(steps=steps(policy, action)), context=CONTEXT)


# -- the flow document -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        {"type": "send_email", "subject": "Hi", "body": "Hello"},
        {"type": "send_sms", "message": "Hello"},
        {"type": "webhook", "url": "https://hooks.example.org/x"},
    ],
)
def test_each_sending_kind_takes_a_failure_branch_that_makes_its_step_reachable(
    action: dict[str, Any],
) -> None:
    definition = parsed({"goto": "fix"}, action)
    assert policy_of(definition, "tell", "mail") == FailureGoto(goto="fix")
    # The branch also round-trips through the stored document.
    again = flow_from_data(definition.to_document(), context=CONTEXT)
    assert policy_of(again, "tell", "mail") == FailureGoto(goto="fix")


def test_continue_is_the_default_and_a_step_reached_only_by_a_failure_branch_is_unreachable() -> (
    None
):
    definition = parsed("stop")
    assert policy_of(definition, "tell", "mail") == "stop"
    doc = flow(steps=steps("continue"))
    del doc["steps"][0]["actions"][0]["on_failure"]
    del doc["steps"][1]["on_timeout"]
    assert "steps[3]" in paths(doc)  # fix: nothing leads to it


def test_the_validator_refuses_a_wrong_word_an_unknown_step_and_a_branch_to_its_own_step() -> None:
    wrong = paths(flow(steps=steps("halt")))
    assert wrong["steps[0].actions[0].on_failure"].message == (
        "'halt' is not allowed: expected 'continue' or 'stop'"
    )
    unknown = paths(flow(steps=steps({"goto": "fixx"})))
    assert unknown["steps[0].actions[0].on_failure.goto"].hint == "did you mean 'fix'?"
    loop = paths(flow(steps=steps({"goto": "tell"})))
    problem = loop["steps[0].actions[0].on_failure.goto"]
    assert "would be sent again each time it fails" in problem.message
    extra = paths(flow(steps=steps({"goto": "fix", "then": "stop"})))
    assert extra["steps[0].actions[0].on_failure.then"].message == "unknown field 'then'"


def test_actions_that_send_nothing_have_no_on_failure() -> None:
    doc = flow(steps=steps("stop"))
    doc["steps"][3]["actions"][0]["on_failure"] = "stop"
    assert paths(doc)["steps[3].actions[0].on_failure"].message == "unknown field 'on_failure'"


def test_the_policy_is_found_by_the_action_key_or_its_place_and_else_continues() -> None:
    definition = parsed("stop")
    assert policy_of(definition, "tell", action_ref_of("crmflow:12:3:mail")) == "stop"
    assert policy_of(definition, "tell", "#0") == "continue"  # it has a key: the key names it
    assert policy_of(definition, "gone", "mail") == "continue"
    assert policy_of(definition, "fix", "#0") == "continue"  # a history action sends nothing
    assert action_ref_of("invitation:abc:2") is None
    assert policy_of(definition, "tell", None) == "continue"


def test_what_failed_is_said_in_words() -> None:
    assert describe_message("email", {"to": ["a@x.org", "b@x.org"]}) == "Email to a@x.org, b@x.org"
    assert describe_message("sms", {"to": "+40721234567"}) == "SMS to +40721234567"
    assert describe_message("webhook", {"method": "PUT", "url": "https://h.org/1"}) == (
        "Webhook PUT https://h.org/1"
    )
    assert FAILED.text == "Email to ana@example.org failed after 5 attempts: 550 no such user"


# -- what the policy does to a run ---------------------------------------------------------------


def running(definition: FlowDefinition) -> EnrollmentState:
    """A run that sent its email and went on to wait at `later`."""
    outcome = enter(definition, enrollment_id=1, flow_version=1, record=RECORD, now=NOW, zone=ZONE)
    assert outcome.state.step_key == "later"
    return outcome.state


def test_continue_changes_nothing() -> None:
    definition = parsed("continue")
    decision = decide("continue", running(definition), flow_running=True, already_applied=False)
    assert (decision.kind, decision.note) == ("nothing", "the run goes on (on_failure: continue)")


def test_stop_cancels_a_running_run_with_the_failure_as_its_reason() -> None:
    definition = parsed("stop")
    state = running(definition)
    decision = decide("stop", state, flow_running=True, already_applied=False)
    assert decision.kind == "stop"
    later = NOW + timedelta(hours=2)
    outcome = apply_decision(definition, state, RECORD, decision, FAILED, now=later, zone=ZONE)
    assert outcome is not None
    assert (outcome.state.status, outcome.state.finished_at) == (EnrollmentStatus.CANCELLED, later)
    assert outcome.state.end_reason == (
        "stopped: Email to ana@example.org failed after 5 attempts: 550 no such user "
        "(on_failure: stop)"
    )


def test_goto_moves_the_run_from_wherever_it_is_and_runs_the_failure_step() -> None:
    definition = parsed({"goto": "fix"})
    state = running(definition)
    decision = decide(FailureGoto(goto="fix"), state, flow_running=True, already_applied=False)
    assert (decision.kind, decision.target) == ("goto", "fix")
    outcome = apply_decision(definition, state, RECORD, decision, FAILED, now=NOW, zone=ZONE)
    assert outcome is not None
    assert [(log.step_key, log.status) for log in outcome.log] == [
        ("fix", StepStatus.DONE),
        ("fix", StepStatus.ENDED),
    ]
    assert outcome.state.status is EnrollmentStatus.FINISHED  # fix is the last step


@pytest.mark.parametrize("policy", ["stop", FailureGoto(goto="fix")])
def test_a_run_that_has_ended_stays_as_it_ended(policy: OnFailure) -> None:
    definition = parsed(policy if isinstance(policy, str) else {"goto": "fix"})
    ended = cancel(running(definition), now=NOW, reason="cancelled by maria")
    decision = decide(policy, ended, flow_running=True, already_applied=False)
    assert decision.kind == "nothing"
    assert decision.note.endswith("the run had already ended (cancelled: cancelled by maria)")


@pytest.mark.parametrize("policy", ["stop", FailureGoto(goto="fix")])
def test_a_step_run_takes_its_failure_policy_once(policy: OnFailure) -> None:
    state = running(parsed("stop"))
    decision = decide(policy, state, flow_running=True, already_applied=True)
    assert decision.kind == "nothing"
    assert "another message of the same step run had already failed" in decision.note


def test_in_a_paused_flow_a_failure_branch_waits_not_but_stop_still_stops() -> None:
    state = running(parsed({"goto": "fix"}))
    branch = decide(FailureGoto(goto="fix"), state, flow_running=False, already_applied=False)
    assert (branch.kind, branch.note) == (
        "nothing",
        "on_failure: goto fix not applied: the flow is not running; the record stays at step "
        "'later'",
    )
    assert decide("stop", state, flow_running=False, already_applied=False).kind == "stop"


# -- the flow's default ----------------------------------------------------------------------------


def test_an_action_without_on_failure_takes_the_flows_on_delivery_failure() -> None:
    doc = flow(steps=steps("stop"), on_delivery_failure={"goto": "fix"})
    del doc["steps"][0]["actions"][0]["on_failure"]
    del doc["steps"][1]["on_timeout"]  # fix is reached through the flow's failure branch alone
    definition = flow_from_data(doc, context=CONTEXT)
    assert policy_of(definition, "tell", "mail") == FailureGoto(goto="fix")
    doc["steps"][0]["actions"][0]["on_failure"] = "continue"  # the action's own wins
    assert "steps[3]" in paths(doc)  # and nothing leads to fix any more
    doc["steps"][1]["on_timeout"] = "fix"
    assert policy_of(flow_from_data(doc, context=CONTEXT), "tell", "mail") == "continue"


def test_the_flows_failure_branch_is_checked_too() -> None:
    unknown = paths(flow(steps=steps("stop"), on_delivery_failure={"goto": "fixx"}))
    assert unknown["on_delivery_failure.goto"].message == "there is no step 'fixx'"
    doc = flow(steps=steps("stop"), on_delivery_failure={"goto": "tell"})
    del doc["steps"][0]["actions"][0]["on_failure"]
    problem = paths(doc)["steps[0].actions[0].type"]
    assert problem.message.startswith("the flow's on_delivery_failure goes back to step 'tell'")
