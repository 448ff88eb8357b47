"""The `create_record` action's document: a related record, linked back to the flow's record."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crmflow.engine.definition.action_base import ActionBase, FieldValues

__all__ = ["CreateRecordAction"]


class CreateRecordAction(ActionBase):
    """A related record; `link_field` on the new record points back at this one.

    `invitation: ics` sends an .ics invitation for an appointment (an event).
    """

    type: Literal["create_record"]
    record_type: str
    values: FieldValues = Field(default_factory=dict)
    link_field: str | None = None
    invitation: Literal["ics"] | None = None
