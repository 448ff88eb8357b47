"""Who may see which flow: every public flow, and the private flows a user owns or belongs to.

For anyone else a private flow does not exist (NotFoundError, as for a key that does not exist),
so that its name does not leak. Every service that reads flows, enrollments or entry decisions
for a user filters with these (their statements are in `store.flow_access`).
"""

from __future__ import annotations

from crmflow.engine.definition import Visibility
from crmflow.errors import NotFoundError
from crmflow.services.context import Actor
from crmflow.store import flow_access as stored
from crmflow.store.database import Connection, Row

__all__ = ["can_see_flow", "visible_flow", "visible_flows"]


def visible_flows(actor: Actor) -> stored.FlowFilter:
    """A WHERE clause over `flows`: the flows `actor` can see."""
    return stored.flows_visible_to(actor.id)


def can_see_flow(conn: Connection, actor: Actor, row: Row) -> bool:
    """Whether `actor` can see the flow `row` (a row of `flows`)."""
    if row.visibility != Visibility.PRIVATE.value or row.owner_id == actor.id:
        return True
    return stored.is_flow_member(conn, row.id, actor.id)


def visible_flow(conn: Connection, actor: Actor, key: str, *, for_update: bool = False) -> Row:
    """The `flows` row with `key`, or NotFoundError when there is none that `actor` can see."""
    # FOR UPDATE: an edit and a status change of the same flow happen one after the other.
    row = stored.find_flow_by_key(conn, key, for_update=for_update)
    if row is None or not can_see_flow(conn, actor, row):
        raise NotFoundError(f"no flow with key {key!r} that you can see (see `crmflow flows list`)")
    return row
