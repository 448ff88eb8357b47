"""The `remove_from_group` action's document: the record leaves a named list of records."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["RemoveFromGroupAction"]


class RemoveFromGroupAction(ActionBase):
    type: Literal["remove_from_group"]
    group: str
