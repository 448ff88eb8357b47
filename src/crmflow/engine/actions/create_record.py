"""create_record: a related record (an event, an appointment with an .ics invitation, a project)
linked back to the flow's record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from crmflow.engine.actions.base import ActionContext, ActionResult
from crmflow.engine.actions.kind import ActionChecker, Kind
from crmflow.engine.conditions import did_you_mean
from crmflow.engine.definition.action_base import ActionBase, FieldValues
from crmflow.engine.recordtypes import FieldType

if TYPE_CHECKING:
    from crmflow.engine.definition import ActionStep

__all__ = ["KIND", "CreateRecordAction"]


class CreateRecordAction(ActionBase):
    """A related record; `link_field` on the new record points back at this one.

    `invitation: ics` sends an .ics invitation for an appointment (an event).
    """

    type: Literal["create_record"]
    record_type: str
    values: FieldValues = Field(default_factory=dict)
    link_field: str | None = None
    invitation: Literal["ics"] | None = None


def check(checker: ActionChecker, path: str, action: CreateRecordAction, step: ActionStep) -> None:
    target = checker.scope.record_types.get(action.record_type)
    if target is None:
        checker.add(
            f"{path}.record_type",
            f"unknown record type {action.record_type!r}",
            did_you_mean(action.record_type, checker.scope.record_types),
        )
    checker.check_values(f"{path}.values", action.values, target, check_required=True)
    if target is not None and action.link_field is not None:
        fdef = target.field(action.link_field)
        if fdef is None or fdef.type is not FieldType.REFERENCE:
            checker.add(
                f"{path}.link_field",
                f"{action.link_field!r} is not a reference field of {target.key!r}",
                did_you_mean(action.link_field, target.field_keys),
            )
        elif fdef.reference_type != checker.flow.record_type:
            checker.add(
                f"{path}.link_field",
                f"{action.link_field!r} points at {fdef.reference_type!r} records, "
                f"not at {checker.flow.record_type!r}",
            )
    if target is not None and action.invitation == "ics":
        start = target.field("start")
        if start is None or start.type is not FieldType.DATETIME:
            checker.add(
                f"{path}.invitation",
                "an .ics invitation needs a record type with a datetime field 'start'",
                "create an event",
            )


def run(action: CreateRecordAction, index: int, ctx: ActionContext) -> ActionResult:
    from crmflow.engine.commands import CreateRecord  # noqa: PLC0415 - runtime only

    # The new record is of another type: its values are checked by the store, which knows it.
    values = {name: ctx.value(raw, field=f"values.{name}") for name, raw in action.values.items()}
    command = CreateRecord(
        **ctx.ids(index, action.key),
        record_type=action.record_type,
        values=values,
        link_field=action.link_field,
        link_to=ctx.scope.record.id if action.link_field else None,
        invitation=action.invitation,
    )
    return ActionResult((command,), command.describe())


KIND = Kind(CreateRecordAction, check, run)
