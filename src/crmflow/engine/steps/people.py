"""Who a step or a task is for: a flow's responsibility resolved against the record.

What needs to know users (a manager, who is active, a group's members, a private flow's
members, a related record's field) comes with the record (`RecordSnapshot.people`, loaded by
the runner). A responsibility that names nobody who can take the work (an empty field, a
deactivated user, no manager, a group without active members, someone outside a private flow)
falls back to the flow's controller, and the assignee says why: "maria (controller): the
record's manager is empty".
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from crmflow.engine.commands import Assignee
from crmflow.engine.directory import Directory
from crmflow.engine.runtime import RecordSnapshot
from crmflow.engine.steps.scope import EvaluationError

if TYPE_CHECKING:
    from crmflow.engine.definition import FlowDefinition, Responsibility

__all__ = ["resolve", "resolve_each"]

# A step run's identity for a round-robin turn: (step key, anything that tells runs apart).
Turn = tuple[str, Hashable]


def resolve(
    responsibility: Responsibility | None,
    flow: FlowDefinition,
    record: RecordSnapshot,
    *,
    turn: Turn | None = None,
) -> Assignee:
    """The user or group responsible; None means the flow's owner (the documented default).

    `turn`: the step run, for a round-robin group: the same step run gets the same member.
    Without it a round-robin group is asked as a whole.
    Raises EvaluationError when nobody can be named and the flow has no controller.
    """
    found = _resolve(responsibility, flow, record, turn)
    return found if isinstance(found, Assignee) else _controller(flow, found)


def resolve_each(
    responsibility: Responsibility | None,
    flow: FlowDefinition,
    record: RecordSnapshot,
    *,
    turn: Turn | None = None,
) -> tuple[Assignee, ...]:
    """`resolve`, except that a group with `mode: all` gives each of its active members (who
    may see the flow), one assignee each."""
    people = record.people
    if (
        responsibility is not None
        and responsibility.type == "group"
        and responsibility.mode == "all"
        and people is not None
    ):
        members = _members(responsibility.group, flow, people)
        if isinstance(members, str):
            return (_controller(flow, members),)
        via = f"a member of group {responsibility.group}"
        return tuple(Assignee(kind="user", ref=m, via=via) for m in members)
    return (resolve(responsibility, flow, record, turn=turn),)


def _controller(flow: FlowDefinition, why: str) -> Assignee:
    if not flow.controller:
        raise EvaluationError(f"nobody is responsible: {why}, and the flow has no controller")
    return Assignee(kind="user", ref=flow.controller, via="controller", note=why)


def _resolve(
    responsibility: Responsibility | None,
    flow: FlowDefinition,
    record: RecordSnapshot,
    turn: Turn | None,
) -> Assignee | str:
    """The assignee, or why there is none (a str)."""
    people = record.people
    if responsibility is None or responsibility.type == "flow_owner":
        if not flow.owner:
            return "the flow has no owner"
        return _user(flow.owner, "the flow's owner", flow, people)
    if responsibility.type == "record_owner":
        if record.owner is None or record.owner == "":
            return "the record has no owner"
        return _user(record.owner, "the record's owner", flow, people)
    if responsibility.type == "user":
        return _user(responsibility.user, "named in the flow", flow, people)
    if responsibility.type == "group":
        if responsibility.mode != "round_robin" or turn is None or people is None:
            return Assignee(kind="group", ref=responsibility.group, via="a group")
        members = _members(responsibility.group, flow, people)
        if isinstance(members, str):
            return members
        step_key, run = turn
        index = people.turns.pick((flow.key, step_key, responsibility.group), run, len(members))
        via = f"group {responsibility.group}, in turn"
        return Assignee(kind="user", ref=members[index], via=via)
    held = _field_user(responsibility.field, record)
    if isinstance(held, _Why):
        return held.reason
    if responsibility.type == "field":
        return _user(held, f"the record's {responsibility.field}", flow, people)
    return _manager(responsibility.field, held, flow, people)


def _manager(
    field: str, held: str | int, flow: FlowDefinition, people: Directory | None
) -> Assignee | str:
    """The manager of user `held`, found in the record's `field`."""
    if people is None:
        return "the users' managers were not loaded"
    person = people.person(held)
    if person is None:
        return f"the record's {field} ({held!r}) is not a user"
    if person.manager is None:
        return f"{person.username}, the record's {field}, has no manager"
    return _user(
        person.manager, f"manager of {person.username}, the record's {field}", flow, people
    )


class _Why:
    """Why a field holds no user."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _field_user(path: str, record: RecordSnapshot) -> str | int | _Why:
    """The user held in field `path` of the record (`company.account_manager`: of the record
    its reference field `company` points to), or why there is none."""
    if "." in path:
        if record.people is None:
            return _Why(f"the related record of {path!r} was not loaded")
        value = record.people.related.get((record.id, path))
    else:
        value = record.values.get(path)
    if value is None or value == "":
        return _Why(f"the record's {path} is empty")
    if not isinstance(value, str | int) or isinstance(value, bool):
        return _Why(f"the record's {path} holds {value!r}, not a user")
    return value


def _user(
    ref: str | int, via: str, flow: FlowDefinition, people: Directory | None
) -> Assignee | str:
    """User `ref` (a username or an id), when they can take the work."""
    if people is None:
        return Assignee(kind="user", ref=ref, via=via)
    person = people.person(ref)
    if person is None:
        return f"{via} ({ref!r}) is not a user"
    if not person.active:
        return f"{via} ({person.username}) is deactivated"
    if not _may_see(person.username, flow, people):
        return (
            f"{via} ({person.username}) is not a member of this private flow "
            f"(`crmflow flows add-member {flow.key} {person.username}` gives access)"
        )
    return Assignee(kind="user", ref=person.username, via=via)


def _members(group: str, flow: FlowDefinition, people: Directory) -> tuple[str, ...] | str:
    """The active members of `group` who may see the flow (at least one), or why none."""
    members = tuple(m for m in people.groups.get(group, ()) if _may_see(m, flow, people))
    if not members:
        return f"group {group} has no active member who may see this flow"
    return members


def _may_see(username: str, flow: FlowDefinition, people: Directory) -> bool:
    members = people.flow_members.get(flow.key)
    return members is None or username in members or username == flow.owner
