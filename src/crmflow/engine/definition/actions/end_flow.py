"""The `end_flow` action's document: the flow ends after this step, with a reason."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["EndFlowAction"]


class EndFlowAction(ActionBase):
    type: Literal["end_flow"]
    reason: str = ""
