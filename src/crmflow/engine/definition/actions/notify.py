"""The `notify` action's document: an in-app notification."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["NotifyAction"]


class NotifyAction(ActionBase):
    """An in-app notification to users and groups (and the step's responsible person)."""

    type: Literal["notify"]
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    responsible: bool = False
    message: str
