"""The `history` action's document: a line in the record's history."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["HistoryAction"]


class HistoryAction(ActionBase):
    type: Literal["history"]
    message: str
