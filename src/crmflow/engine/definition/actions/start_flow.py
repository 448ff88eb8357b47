"""The `start_flow` action's document: a follow-up flow to start (seed 004)."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.common import Duration

__all__ = ["StartFlowAction"]


class StartFlowAction(ActionBase):
    """Starts a follow-up flow when this step ends, or `delay` after (seed 004).

    `record_field` names a reference field: the follow-up then runs on the referenced record.
    """

    type: Literal["start_flow"]
    flow: str
    delay: Duration | None = None
    record_field: str | None = None
