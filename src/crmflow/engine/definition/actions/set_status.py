"""The `set_status` action's document: a new value for the record's `status` field."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["SetStatusAction"]


class SetStatusAction(ActionBase):
    type: Literal["set_status"]
    status: str
