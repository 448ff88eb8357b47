"""What a message that failed for good does to the run that wrote it (issue 10): the `on_failure`
policy of the action that wrote it (`definition.delivery_policy`), applied to the run as it is
when the message fails, which may be hours after its step ran (retries wait).

Pure: `services.delivery_failures` reads the run, its flow and the message, and writes what this
module decides in the transaction that marks the message failed, so a failure is applied once.

The rules, in `decide`:

- The policy is the one of the action in the version of the flow the run is on now, found by its
  step key and its action key (or its place in the step, `#2`), else the flow's
  `on_delivery_failure`. An action no longer there, and a message no action wrote (an
  invitation), continue.
- continue: the run goes on as if the message had gone.
- stop: a run still inside the flow is cancelled, the failure as its reason; its messages not
  sent yet are not sent. A run that has ended stays as it ended.
- goto STEP: a run still inside the flow moves to STEP wherever it is now (it may have gone on
  since the message was written), and STEP runs at once when it is due. Not when the run has
  ended (a failure branch does not bring back a record that left), when another message of the
  same step run has already failed and stopped the run or taken a branch (a step run takes its
  failure branch once), or when the flow is not running (paused, archived: no step runs; the
  record stays where it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from crmflow.engine.budget import DEFAULT_LIMITS, EvaluationLimits
from crmflow.engine.commands import action_ref
from crmflow.engine.definition import ActionStep, FlowDefinition
from crmflow.engine.definition.delivery_policy import (
    FailureGoto,
    MessagingActionBase,
    OnFailure,
)
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import EnrollmentState, RecordSnapshot
from crmflow.engine.transition import Outcome, cancel, move_to

__all__ = [
    "FailedMessage",
    "PolicyDecision",
    "action_ref_of",
    "apply_decision",
    "decide",
    "describe_message",
    "policy_name",
    "policy_of",
]


@dataclass(frozen=True)
class FailedMessage:
    """A message that failed for good: `what` it was ("Email to a@b.org"), after how many
    attempts, with which error, and the step and action that wrote it."""

    what: str
    attempts: int
    error: str
    step_key: str
    action_ref: str | None  # None: no action wrote it (an invitation)

    @property
    def text(self) -> str:
        """The line the record's history gets."""
        tries = "attempt" if self.attempts == 1 else "attempts"
        return f"{self.what} failed after {self.attempts} {tries}: {self.error}"


def describe_message(kind: str, payload: Mapping[str, Any]) -> str:
    """What a message was, in words, from its kind and payload."""
    if kind == "email":
        return "Email to " + ", ".join(str(a) for a in payload.get("to", ()))
    if kind == "sms":
        return f"SMS to {payload.get('to', '?')}"
    if kind == "webhook":
        return f"Webhook {payload.get('method', 'POST')} {payload.get('url', '?')}"
    return f"{kind.capitalize()} message"


def action_ref_of(idempotency_key: str) -> str | None:
    """The action part of a key written by a step's action (`crmflow:<run>:<step run>:<ref>`),
    or None for a key of another form (an invitation, a failure notice)."""
    parts = idempotency_key.split(":", 3)
    if len(parts) != 4 or parts[0] != "crmflow":
        return None
    return parts[3]


def policy_of(flow: FlowDefinition, step_key: str, ref: str | None) -> OnFailure:
    """The `on_failure` of the action `ref` of step `step_key` in `flow`, else the flow's
    `on_delivery_failure`; "continue" when there is no such sending action."""
    step = flow.step(step_key)
    if ref is None or not isinstance(step, ActionStep):
        return "continue"
    for index, action in enumerate(step.actions):
        if action_ref(action.key, index) == ref:
            if isinstance(action, MessagingActionBase):
                return action.on_failure or flow.on_delivery_failure
            break
    return "continue"


def policy_name(policy: OnFailure) -> str:
    """The policy as written: `continue`, `stop`, `goto STEP`."""
    return f"goto {policy.goto}" if isinstance(policy, FailureGoto) else policy


@dataclass(frozen=True)
class PolicyDecision:
    """What the policy does to the run: nothing, stop it, or move it to `target`; `note` says
    what happened, in words."""

    kind: Literal["nothing", "stop", "goto"]
    note: str
    target: str | None = None


def decide(
    policy: OnFailure,
    state: EnrollmentState | None,
    *,
    flow_running: bool,
    already_applied: bool,
) -> PolicyDecision:
    """What `policy` does to the run now in `state` (None: the run never entered).
    `already_applied`: another message of the same step run failed before this one and its
    policy stopped the run or took a branch. `flow_running`: the flow is active or draining."""
    name = f"on_failure: {policy_name(policy)}"
    if policy == "continue":
        return PolicyDecision("nothing", f"the run goes on ({name})")
    if state is None or state.is_over:
        how = f"{state.status.value}: {state.end_reason}" if state is not None else "not entered"
        return PolicyDecision("nothing", f"{name} not applied: the run had already ended ({how})")
    if already_applied:
        return PolicyDecision(
            "nothing",
            f"{name} not applied: another message of the same step run had already failed "
            "and its policy was applied",
        )
    if policy == "stop":
        return PolicyDecision("stop", f"the record was taken out of the flow ({name})")
    if not flow_running:
        return PolicyDecision(
            "nothing",
            f"{name} not applied: the flow is not running; the record stays at step "
            f"{state.step_key!r}",
        )
    target = policy.goto
    return PolicyDecision("goto", f"the run moved to step {target!r} ({name})", target)


def apply_decision(
    flow: FlowDefinition,
    state: EnrollmentState,
    record: RecordSnapshot,
    decision: PolicyDecision,
    failed: FailedMessage,
    *,
    now: datetime,
    zone: ZoneInfo,
    record_type: RecordType | None = None,
    limits: EvaluationLimits = DEFAULT_LIMITS,
) -> Outcome | None:
    """The run's outcome under `decision` (None: nothing changes): cancelled with the failure as
    its reason, or moved to the failure step (which runs at once when it is due)."""
    if decision.kind == "stop":
        reason = f"stopped: {failed.text} (on_failure: stop)"
        return Outcome(state=cancel(state, now=now, reason=reason), record=record)
    if decision.kind == "goto" and decision.target is not None:
        return move_to(
            flow,
            state,
            record,
            decision.target,
            now=now,
            zone=zone,
            record_type=record_type,
            limits=limits,
        )
    return None
