"""The `create_task` action's document: a task in someone's task list."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase
from crmflow.engine.definition.people import Responsibility

__all__ = ["CreateTaskAction"]


class CreateTaskAction(ActionBase):
    """A task in someone's task list; `assignee` defaults to the step's responsibility."""

    type: Literal["create_task"]
    title: str
    description: str = ""
    assignee: Responsibility | None = None
    due_days: Annotated[int, Field(ge=0, le=3650)] | None = None
