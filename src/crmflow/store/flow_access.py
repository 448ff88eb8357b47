"""The statements behind who may see which flow (`services.flow_access` says the rule): every
public flow, and the private flows a user owns or is a member of.

Only reads: `flows` and `flow_members` are written where flows are created and edited.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import Visibility
from crmflow.store.schema import flow_members, flows

__all__ = [
    "FlowFilter",
    "every_flow",
    "find_flow_by_key",
    "flow_member_ids",
    "flows_visible_to",
    "is_flow_member",
]

# A WHERE clause over `flows`, for the store's queries that list flows for a user.
FlowFilter = sa.ColumnElement[bool]


def flows_visible_to(user_id: int) -> FlowFilter:
    """The flows user `user_id` can see, as a WHERE clause over `flows`."""
    mine = sa.select(flow_members.c.flow_id).where(flow_members.c.user_id == user_id)
    return sa.or_(
        flows.c.visibility == Visibility.PUBLIC.value,
        flows.c.owner_id == user_id,
        flows.c.id.in_(mine),
    )


def every_flow() -> FlowFilter:
    """Every flow, as a WHERE clause over `flows` (what an admin sees)."""
    return sa.true()


def is_flow_member(conn: sa.Connection, flow_id: int, user_id: int) -> bool:
    member = conn.execute(
        sa.select(flow_members.c.user_id).where(
            flow_members.c.flow_id == flow_id, flow_members.c.user_id == user_id
        )
    ).first()
    return member is not None


def flow_member_ids(conn: sa.Connection, flow_id: int) -> set[int]:
    """The ids of the members of flow `flow_id` (its owner is not one unless listed)."""
    query = sa.select(flow_members.c.user_id).where(flow_members.c.flow_id == flow_id)
    return {int(user_id) for user_id in conn.execute(query).scalars()}


def find_flow_by_key(
    conn: sa.Connection, key: str, *, for_update: bool = False
) -> sa.Row[Any] | None:
    """The `flows` row with `key`, whoever may see it; `for_update` locks it (PostgreSQL) until
    the transaction ends, so that an edit and a status change of one flow happen one after the
    other."""
    query = sa.select(flows).where(flows.c.key == key)
    return conn.execute(query.with_for_update() if for_update else query).first()
