"""Flows and their versions, read: the statements the record-side services need about flows
(the started flows an inbound webhook may start, the flow row a start locks, the current
definitions that use a saved query).

The table group's module (flows, flow_versions): flows are still written by `services.flows`
and `services.lifecycle`; their statements belong here when those move to the store.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from crmflow.store.schema import flow_versions, flows

__all__ = [
    "active_flows",
    "current_documents",
    "current_versions_of",
    "find_flow",
    "flow_head",
    "flows_with_status",
    "lock_flow",
    "non_draft_flows_of_types",
]


def flows_with_status(conn: sa.Connection, statuses: Collection[str]) -> list[sa.Row[Any]]:
    """The `flows` rows whose status is one of `statuses`, by key."""
    query = sa.select(flows).where(flows.c.status.in_(statuses)).order_by(flows.c.key)
    return list(conn.execute(query).all())


def find_flow(conn: sa.Connection, flow_id: int) -> sa.Row[Any] | None:
    """The `flows` row `flow_id` (not locked), or None."""
    return conn.execute(sa.select(flows).where(flows.c.id == flow_id)).first()


def non_draft_flows_of_types(
    conn: sa.Connection, record_types: Collection[str]
) -> list[sa.Row[Any]]:
    """(id, current version, started at) of the flows of `record_types` that are not drafts:
    those whose triggers may hear these types' changes, or whose records inside may."""
    query: sa.Select[Any] = (
        sa.select(flows.c.id, flows.c.current_version, flows.c.started_at)
        .where(flows.c.record_type.in_(sorted(record_types)))
        .where(flows.c.status != "draft")
    )
    return list(conn.execute(query).all())


def active_flows(conn: sa.Connection) -> list[sa.Row[Any]]:
    """(id, current version, updated at) of the active flows."""
    query: sa.Select[Any] = sa.select(
        flows.c.id, flows.c.current_version, flows.c.updated_at
    ).where(flows.c.status == "active")
    return list(conn.execute(query).all())


def flow_head(conn: sa.Connection, flow_id: int) -> sa.Row[Any]:
    """The key, status and current version of flow `flow_id` (which exists)."""
    query: sa.Select[Any] = sa.select(flows.c.key, flows.c.status, flows.c.current_version)
    return conn.execute(query.where(flows.c.id == flow_id)).one()


def lock_flow(conn: sa.Connection, flow_id: int) -> sa.Row[Any] | None:
    """The `flows` row `flow_id`, locked until the transaction ends (None if it was deleted):
    starts of one flow happen one after the other, so a record cannot enter twice."""
    query = sa.select(flows).where(flows.c.id == flow_id).with_for_update()
    return conn.execute(query).first()


def current_versions_of(conn: sa.Connection, keys: Collection[str]) -> set[tuple[int, int]]:
    """(id, current version) of the flows whose key is one of `keys` (unknown keys: none)."""
    rows = conn.execute(
        sa.select(flows.c.id, flows.c.current_version).where(flows.c.key.in_(sorted(keys)))
    )
    return {(r.id, r.current_version) for r in rows}


def current_documents(conn: sa.Connection) -> list[tuple[str, dict[str, Any]]]:
    """(key, definition document) of every flow's current version, by key."""
    rows = conn.execute(
        sa.select(flows.c.key, flow_versions.c.document)
        .join(
            flow_versions,
            sa.and_(
                flow_versions.c.flow_id == flows.c.id,
                flow_versions.c.version == flows.c.current_version,
            ),
        )
        .order_by(flows.c.key)
    )
    return [(row.key, row.document) for row in rows]
