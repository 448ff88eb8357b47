"""The lifecycle of a flow (seed 000 and DESIGN.md): which status changes are allowed, and how a
flow may be edited in each status. Pure rules; the flows service applies them.

    draft --start--> active --pause--> paused --resume--> active
    active|paused --drain--> draining   (progressive stop: no new entrants, those inside finish)
    draft|active|paused|draining --archive--> archived
    draining|archived --resume--> active (each record continues where it was; finished records
    do not start again)
    archived, never started (archived as a draft) --start--> active (its start list enters then;
    it has nothing to resume)
    nothing ever goes back to draft.
"""

from __future__ import annotations

from enum import StrEnum

from crmflow.engine.definition import FlowStatus
from crmflow.errors import ConflictError

__all__ = ["EditMode", "LifecycleAction", "edit_mode", "next_status"]


class LifecycleAction(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    DRAIN = "drain"
    ARCHIVE = "archive"


class EditMode(StrEnum):
    IN_PLACE = "in_place"  # a draft: the one version is replaced
    NEW_VERSION = "new_version"  # paused or archived: a new version, the old one is kept


S = FlowStatus
A = LifecycleAction

_TRANSITIONS: dict[tuple[FlowStatus, LifecycleAction], FlowStatus] = {
    (S.DRAFT, A.START): S.ACTIVE,
    (S.DRAFT, A.ARCHIVE): S.ARCHIVED,
    (S.ACTIVE, A.PAUSE): S.PAUSED,
    (S.ACTIVE, A.DRAIN): S.DRAINING,
    (S.ACTIVE, A.ARCHIVE): S.ARCHIVED,
    (S.PAUSED, A.RESUME): S.ACTIVE,
    (S.PAUSED, A.DRAIN): S.DRAINING,
    (S.PAUSED, A.ARCHIVE): S.ARCHIVED,
    (S.DRAINING, A.RESUME): S.ACTIVE,
    (S.DRAINING, A.ARCHIVE): S.ARCHIVED,
    (S.ARCHIVED, A.RESUME): S.ACTIVE,
}

_WHY_NOT: dict[tuple[FlowStatus, LifecycleAction], str] = {
    (S.DRAFT, A.PAUSE): "a draft has not started; start it first",
    (S.DRAFT, A.RESUME): "a draft has not started; use start",
    (S.DRAFT, A.DRAIN): "a draft has nobody inside to let finish; archive it instead",
    (S.ACTIVE, A.START): "it is already active",
    (S.ACTIVE, A.RESUME): "it is already active",
    (S.PAUSED, A.START): "it has started before; use resume",
    (S.PAUSED, A.PAUSE): "it is already paused",
    (S.DRAINING, A.START): "it has started before; use resume",
    (S.DRAINING, A.PAUSE): "it is stopping progressively; resume it first, then pause",
    (S.DRAINING, A.DRAIN): "it is already stopping progressively",
    (S.ARCHIVED, A.START): "it has started before; use resume to restart it where it was",
    (S.ARCHIVED, A.PAUSE): "it is archived; resume it first",
    (S.ARCHIVED, A.DRAIN): "it is archived; nothing is running",
    (S.ARCHIVED, A.ARCHIVE): "it is already archived",
}


# A flow archived as a draft never ran: it starts (its start list enters), and has nothing to
# resume. Resuming it would make it active without its start list ever entering.
_NEVER_STARTED: dict[tuple[FlowStatus, LifecycleAction], FlowStatus] = {
    **{k: v for k, v in _TRANSITIONS.items() if k != (S.ARCHIVED, A.RESUME)},
    (S.ARCHIVED, A.START): S.ACTIVE,
}
_WHY_NOT_NEVER_STARTED = {
    (S.ARCHIVED, A.RESUME): "it was archived as a draft and has never run; use start (its "
    "start list enters then)",
}


def next_status(
    current: FlowStatus, action: LifecycleAction, *, started: bool = True
) -> FlowStatus:
    """The status after `action`, or ConflictError saying why the change is not allowed.
    `started`: whether the flow has ever been active (a flow archived as a draft has not)."""
    transitions = _TRANSITIONS if started else _NEVER_STARTED
    target = transitions.get((current, action))
    if target is None:
        why = (_WHY_NOT if started else {**_WHY_NOT, **_WHY_NOT_NEVER_STARTED}).get(
            (current, action), "that change is not allowed"
        )
        allowed = sorted(a.value for (s, a) in transitions if s is current)
        raise ConflictError(
            f"cannot {action.value} a flow that is {current.value}: {why} "
            f"(allowed now: {', '.join(allowed) or 'nothing'})"
        )
    return target


def edit_mode(current: FlowStatus) -> EditMode:
    """How a flow in `current` status may be edited, or ConflictError with what to do instead."""
    if current is S.DRAFT:
        return EditMode.IN_PLACE
    if current in (S.PAUSED, S.ARCHIVED):
        return EditMode.NEW_VERSION
    raise ConflictError(
        f"a {current.value} flow's definition is locked while it runs; pause it "
        "(`crmflow flows pause KEY`), edit it, then resume it"
    )
