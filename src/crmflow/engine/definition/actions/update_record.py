"""The `update_record` action's document: new values for fields of the flow's record."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase, FieldValues

__all__ = ["UpdateRecordAction"]


class UpdateRecordAction(ActionBase):
    type: Literal["update_record"]
    values: FieldValues = Field(min_length=1)
