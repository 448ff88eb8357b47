"""What a message that failed for good does to the run that wrote it: the `on_failure` option
of the kinds that send something out (send_email, send_sms, webhook).

- `continue` (the default): the run goes on as if the message had gone;
- `stop`: the record leaves the flow, its run cancelled with the failure as the reason;
- `{goto: STEP}`: the run moves to STEP, a failure branch.

An action without `on_failure` takes the flow's `on_delivery_failure` (itself `continue` by
default). The flow's controller is told in every case. What the policy does to a run, once the
message has failed, is `crmflow.engine.delivery_failure`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Tag

from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.common import Definition, Key

__all__ = ["FailureGoto", "MessagingActionBase", "OnFailure", "default_branch"]


class FailureGoto(Definition):
    """`on_failure: {goto: STEP}`: the run moves to STEP when the message fails for good."""

    goto: Key


def _form(value: Any) -> str:
    # A mapping is a failure branch; anything else is a word. One form is checked, so that a
    # mistake gets one message rather than one per form; the validator leaves the tags (`~...`)
    # out of the paths it shows.
    return "~branch" if isinstance(value, dict | FailureGoto) else "~word"


OnFailure = Annotated[
    Annotated[Literal["continue", "stop"], Tag("~word")] | Annotated[FailureGoto, Tag("~branch")],
    Discriminator(_form),
]


class MessagingActionBase(ActionBase):
    """What every action that becomes an outbox message has besides the common fields."""

    on_failure: OnFailure | None = None  # None: the flow's on_delivery_failure


def default_branch(step: object, default: OnFailure) -> list[str]:
    """The failure branch the flow's `on_delivery_failure` (`default`) gives `step`: its step
    when it is a goto and one of the step's sending actions has no `on_failure` of its own."""
    if not isinstance(default, FailureGoto):
        return []
    actions = getattr(step, "actions", ())
    uses = any(isinstance(a, MessagingActionBase) and a.on_failure is None for a in actions)
    return [default.goto] if uses else []
