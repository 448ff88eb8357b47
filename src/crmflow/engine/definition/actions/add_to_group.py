"""The `add_to_group` action's document: the record joins a named list of records."""

from __future__ import annotations

from typing import Literal

from crmflow.engine.definition.action_base import ActionBase

__all__ = ["AddToGroupAction"]


class AddToGroupAction(ActionBase):
    """Adds the record to a named group of records (a list, e.g. a mailing list)."""

    type: Literal["add_to_group"]
    group: str
