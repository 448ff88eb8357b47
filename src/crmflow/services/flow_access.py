"""Who may see which flow: every public flow, and the private flows a user owns or belongs to.

For anyone else a private flow does not exist (NotFoundError, as for a key that does not exist),
so that its name does not leak. Every service that reads flows, enrollments or entry decisions
for a user filters with these.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import Visibility
from crmflow.errors import NotFoundError
from crmflow.services.context import Actor
from crmflow.store.schema import flow_members, flows

__all__ = ["can_see_flow", "visible_flow", "visible_flows"]


def visible_flows(actor: Actor) -> sa.ColumnElement[bool]:
    """A WHERE clause over `flows`: the flows `actor` can see."""
    mine = sa.select(flow_members.c.flow_id).where(flow_members.c.user_id == actor.id)
    return sa.or_(
        flows.c.visibility == Visibility.PUBLIC.value,
        flows.c.owner_id == actor.id,
        flows.c.id.in_(mine),
    )


def can_see_flow(conn: sa.Connection, actor: Actor, row: sa.Row[Any]) -> bool:
    """Whether `actor` can see the flow `row` (a row of `flows`)."""
    if row.visibility != Visibility.PRIVATE.value or row.owner_id == actor.id:
        return True
    member = conn.execute(
        sa.select(flow_members.c.user_id).where(
            flow_members.c.flow_id == row.id, flow_members.c.user_id == actor.id
        )
    ).first()
    return member is not None


def visible_flow(
    conn: sa.Connection, actor: Actor, key: str, *, for_update: bool = False
) -> sa.Row[Any]:
    """The `flows` row with `key`, or NotFoundError when there is none that `actor` can see."""
    query = sa.select(flows).where(flows.c.key == key)
    # FOR UPDATE: an edit and a status change of the same flow happen one after the other.
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None or not can_see_flow(conn, actor, row):
        raise NotFoundError(f"no flow with key {key!r} that you can see (see `crmflow flows list`)")
    return row
