"""Who may see which flow: every public flow, and the private flows a user owns or belongs to;
an admin sees every flow.

For anyone else a private flow does not exist (NotFoundError, as for a key that does not exist),
so that its name does not leak. Every service that reads flows, enrollments or entry decisions
for a user filters with these (their statements are in `store.flow_access`).
"""

from __future__ import annotations

from crmflow.engine.commands import Assignee
from crmflow.engine.definition import Visibility
from crmflow.errors import NotFoundError
from crmflow.services.context import Actor
from crmflow.store import flow_access as stored
from crmflow.store.database import Connection, Row
from crmflow.store.groups import active_members_of_groups
from crmflow.store.users import find_user_by_name, usernames_by_id

__all__ = ["assignable_refusal", "can_see_flow", "grant_hint", "visible_flow", "visible_flows"]


def visible_flows(actor: Actor) -> stored.FlowFilter:
    """A WHERE clause over `flows`: the flows `actor` can see."""
    return stored.every_flow() if actor.is_admin else stored.flows_visible_to(actor.id)


def can_see_flow(conn: Connection, actor: Actor, row: Row) -> bool:
    """Whether `actor` can see the flow `row` (a row of `flows`)."""
    if actor.is_admin or row.visibility != Visibility.PRIVATE.value or row.owner_id == actor.id:
        return True
    return stored.is_flow_member(conn, row.id, actor.id)


def visible_flow(conn: Connection, actor: Actor, key: str, *, for_update: bool = False) -> Row:
    """The `flows` row with `key`, or NotFoundError when there is none that `actor` can see."""
    # FOR UPDATE: an edit and a status change of the same flow happen one after the other.
    row = stored.find_flow_by_key(conn, key, for_update=for_update)
    if row is None or not can_see_flow(conn, actor, row):
        raise NotFoundError(f"no flow with key {key!r} that you can see (see `crmflow flows list`)")
    return row


def grant_hint(flow_key: str, usernames: list[str]) -> str:
    """How an admin gives `usernames` access to private flow `flow_key`."""
    commands = " and ".join(f"`crmflow flows add-member {flow_key} {name}`" for name in usernames)
    return f"An admin can give access with {commands} (PUT /api/flows/{flow_key}/members/USER)"


def assignable_refusal(conn: Connection, flow_row: Row, assignee: Assignee) -> str | None:
    """Why a step or task of flow `flow_row` (a row of `flows`) may not go to `assignee`, or
    None when it may: a private flow's work goes only to its members (and its owner), since
    nobody else can see it. A group needs each of its active members to be a flow member.
    The message names the user(s), the flow and how to grant access."""
    if flow_row.visibility != Visibility.PRIVATE.value:
        return None
    allowed = stored.flow_member_ids(conn, flow_row.id)
    if flow_row.owner_id is not None:
        allowed.add(flow_row.owner_id)
    key = flow_row.key
    if assignee.kind == "group":
        members = active_members_of_groups(conn, [str(assignee.ref)])
        outside = [m.username for m in members if m.user_id not in allowed]
        if not outside:
            return None
        return (
            f"group {assignee.ref!r} has members who are not members of the private flow "
            f"{key!r}: {', '.join(outside)}; they could not see its tasks. "
            f"{grant_hint(key, outside)}, or choose a group of flow members"
        )
    if isinstance(assignee.ref, int):
        user_id: int | None = assignee.ref
        username = usernames_by_id(conn, [assignee.ref]).get(assignee.ref, str(assignee.ref))
    else:
        found = find_user_by_name(conn, assignee.ref)
        user_id, username = (None if found is None else found.id), assignee.ref
    if user_id is not None and user_id in allowed:
        return None
    return (
        f"{username!r} is not a member of the private flow {key!r} and could not see its "
        f"tasks. {grant_hint(key, [username])}, or choose a member"
    )
