"""The `assign_owner` action's document: a lead distributor's strategy and candidates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["AssignOwnerAction"]


class AssignOwnerAction(ActionBase):
    """A lead distributor: picks the record's new owner among `users` and the `group`'s members."""

    type: Literal["assign_owner"]
    strategy: Literal["round_robin", "weighted", "least_loaded"] = "round_robin"
    users: list[str] = Field(default_factory=list)
    group: str | None = None
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)
