"""Who a step or a task is for: a flow's responsibility resolved against the record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmflow.engine.commands import Assignee
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.definition import FlowDefinition, Responsibility

__all__ = ["resolve"]


def resolve(
    responsibility: Responsibility | None, flow: FlowDefinition, record: RecordSnapshot
) -> Assignee:
    """The user or group responsible; None means the flow's owner (the documented default).

    Raises EvaluationError when nobody can be named (no owner, an empty user field).
    """
    if responsibility is None or responsibility.type == "flow_owner":
        if not flow.owner:
            raise EvaluationError("nobody is responsible: the flow has no owner")
        return Assignee(kind="user", ref=flow.owner, via="the flow's owner")
    if responsibility.type == "record_owner":
        if record.owner is None or record.owner == "":
            raise EvaluationError("nobody is responsible: the record has no owner")
        return Assignee(kind="user", ref=record.owner, via="the record's owner")
    if responsibility.type == "user":
        return Assignee(kind="user", ref=responsibility.user, via="named in the flow")
    if responsibility.type == "group":
        return Assignee(kind="group", ref=responsibility.group, via="a group")
    value = record.values.get(responsibility.field)
    if value is None or value == "":
        raise EvaluationError(
            f"nobody is responsible: the record's {responsibility.field!r} field is empty"
        )
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise EvaluationError(
            f"the record's {responsibility.field!r} field holds {value!r}, not a user"
        )
    return Assignee(kind="user", ref=value, via=f"the record's {responsibility.field}")
