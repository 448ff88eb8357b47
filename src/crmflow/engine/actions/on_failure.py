"""The check the kinds that send something out (send_email, send_sms, webhook) share on their
`on_failure` option (`crmflow.engine.definition.delivery_policy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmflow.engine.definition.delivery_policy import FailureGoto, MessagingActionBase

if TYPE_CHECKING:
    from crmflow.engine.actions.kind import ActionChecker
    from crmflow.engine.definition import ActionStep

__all__ = ["check_on_failure"]


def check_on_failure(
    checker: ActionChecker, path: str, action: MessagingActionBase, step: ActionStep
) -> None:
    """`on_failure: {goto: STEP}` names another step: one that exists (the flow checker sees it
    among the step's targets) and not the action's own step, which would send the same message
    again each time it fails, for as long as the address or the server keeps refusing it. An
    action without `on_failure` is checked with the flow's `on_delivery_failure`."""
    own = action.on_failure is not None
    policy = (
        action.on_failure if action.on_failure is not None else checker.flow.on_delivery_failure
    )
    if isinstance(policy, FailureGoto) and policy.goto == step.key:
        whose = "the failure branch" if own else "the flow's on_delivery_failure"
        checker.add(
            f"{path}.on_failure.goto" if own else f"{path}.type",
            f"{whose} goes back to step {step.key!r}, which sent the message: it would be sent "
            "again each time it fails",
            "point goto at a step that handles the failure (a task, a note, another channel), "
            "or use on_failure: stop" + ("" if own else " on this action"),
        )
