"""Which of a flow's change triggers a record change fires: record_created, record_updated (any
field, or one of `fields`), record_deleted, field_changed and status_changed (narrowed by a
`from` / `to` value). Pure rules; the change feed (`services.triggers.record_changes`) reads the
changes and the flows, and enters the records these rules pick.

A trigger's `from` / `to` values are written by a person (`2026-12-01`, `"12"`), while a change
holds values as records store them (a date as ISO text, a number as a number): each value is put
in stored form once, when the flow's triggers are read (`change_triggers`), and the values of a
change are compared with it as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.definition.triggers import (
    FieldChangedTrigger,
    RecordUpdatedTrigger,
    StatusChangedTrigger,
    Trigger,
)
from crmflow.engine.recordtypes import RecordType, normalise_value

__all__ = [
    "CHANGE_TRIGGERS",
    "Change",
    "ChangeTrigger",
    "change_triggers",
    "fires",
    "first_fired",
    "stored_value",
]

# The trigger types a record change fires.
CHANGE_TRIGGERS = frozenset(
    {"record_created", "record_updated", "record_deleted", "field_changed", "status_changed"}
)


@dataclass(frozen=True)
class Change:
    """One record change as triggers read it: `before` / `after` are the record's values as
    stored (empty before a creation, after a deletion)."""

    id: int
    record_id: int
    record_type: str
    kind: str  # created | updated | deleted
    before: dict[str, Any]
    after: dict[str, Any]
    actor_id: int | None
    at: datetime

    @property
    def changed(self) -> set[str]:
        """The keys whose value differs between before and after."""
        keys = self.before.keys() | self.after.keys()
        return {k for k in keys if self.before.get(k) != self.after.get(k)}


@dataclass(frozen=True)
class ChangeTrigger:
    """One change trigger of a flow: its index among the flow's triggers, itself, and its
    `from` / `to` in stored form (None: any value; always None but for field_changed and
    status_changed)."""

    index: int
    trigger: Trigger
    from_value: Any = None
    to_value: Any = None


def stored_value(rtype: RecordType | None, key: str, value: Any, zone: ZoneInfo) -> Any:
    """A trigger's from/to value as records store it (dates as text, numbers as numbers)."""
    fdef = rtype.field(key) if rtype is not None else None
    if value is None or fdef is None:
        return value
    try:
        return normalise_value(fdef, value, zone=zone)
    except ValueError:  # checked when the flow was saved; a changed type keeps the raw value
        return value


def change_triggers(
    definition: FlowDefinition, rtype: RecordType | None, zone: ZoneInfo
) -> list[ChangeTrigger]:
    """The change triggers of `definition`, in order, with their from/to in stored form for
    the flow's record type `rtype` (read in the flow's time zone `zone`)."""
    found: list[ChangeTrigger] = []
    for index, t in enumerate(definition.triggers):
        if t.type not in CHANGE_TRIGGERS:
            continue
        if isinstance(t, FieldChangedTrigger | StatusChangedTrigger):
            key = t.field if isinstance(t, FieldChangedTrigger) else "status"
            old, new = stored_value(rtype, key, t.from_, zone), stored_value(rtype, key, t.to, zone)
            found.append(ChangeTrigger(index, t, old, new))
        else:
            found.append(ChangeTrigger(index, t))
    return found


def fires(found: ChangeTrigger, change: Change) -> bool:
    """Whether the trigger fires for `change`."""
    trigger = found.trigger
    if trigger.type == "record_created":
        return change.kind == "created"
    if trigger.type == "record_deleted":
        return change.kind == "deleted"
    if change.kind != "updated":
        return False
    if isinstance(trigger, RecordUpdatedTrigger):
        return not trigger.fields or bool(set(trigger.fields) & change.changed)
    key = trigger.field if isinstance(trigger, FieldChangedTrigger) else "status"
    before, after = change.before.get(key), change.after.get(key)
    if before == after:
        return False
    old, new = found.from_value, found.to_value
    return (old is None or before == old) and (new is None or after == new)


def first_fired(
    triggers: Sequence[ChangeTrigger], change: Change, *, started_at: datetime | None
) -> ChangeTrigger | None:
    """The first of a flow's change `triggers` that `change` fires, or None (also when the
    change happened before the flow ever started, `started_at`: a flow hears only what happens
    once it runs)."""
    if started_at is None or change.at < started_at:
        return None
    return next((t for t in triggers if fires(t, change)), None)
