"""Reads of flows: the rows other services need (by status, by id, locked for a start), the
names a flow document is checked against, and what the views show (a flow's rows, members,
versions and history).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from crmflow.store.flow_access import FlowFilter
from crmflow.store.schema import (
    flow_members,
    flow_status_changes,
    flow_versions,
    flows,
    groups,
    saved_queries,
    users,
)

__all__ = [
    "NamesInUse",
    "active_flows",
    "current_documents",
    "current_versions_of",
    "find_flow",
    "find_version",
    "flow_by_id",
    "flow_head",
    "flow_revision",
    "flows_seen",
    "flows_with_status",
    "lock_flow",
    "member_names",
    "names_in_use",
    "non_draft_flows_of_types",
    "status_changes",
    "version_document",
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


# -- what a flow document is checked against ---------------------------------------------------


@dataclass(frozen=True)
class NamesInUse:
    """The names a flow document may use: users, groups, saved queries (name -> record type)
    and flows (key -> record type)."""

    users: frozenset[str]
    groups: frozenset[str]
    queries: dict[str, str]
    flows: dict[str, str]


def names_in_use(conn: sa.Connection, visible: FlowFilter) -> NamesInUse:
    """Every user, group and saved query, and the flows `visible` lets through."""
    usernames = frozenset(conn.execute(sa.select(users.c.username)).scalars())
    group_names = frozenset(conn.execute(sa.select(groups.c.name)).scalars())
    queries = {
        r.name: r.record_type
        for r in conn.execute(sa.select(saved_queries.c.name, saved_queries.c.record_type))
    }
    seen = {
        r.key: r.record_type
        for r in conn.execute(sa.select(flows.c.key, flows.c.record_type).where(visible))
    }
    return NamesInUse(usernames, group_names, queries, seen)


# -- reading flows -------------------------------------------------------------------------------


def flows_seen(
    conn: sa.Connection,
    visible: FlowFilter,
    *,
    status: str | None,
    record_type: str | None,
    statuses: Collection[str] | None = None,
    after_key: str | None = None,
    limit: int | None = None,
) -> list[sa.Row[Any]]:
    """The `flows` rows `visible` lets through (of `status`, of `record_type`, of one of
    `statuses`, when given), by key; a page of them with `after_key` (keys after it) and
    `limit`."""
    query = sa.select(flows).where(visible).order_by(flows.c.key)
    if status is not None:
        query = query.where(flows.c.status == status)
    if statuses is not None:
        query = query.where(flows.c.status.in_(list(statuses)))
    if record_type is not None:
        query = query.where(flows.c.record_type == record_type)
    if after_key is not None:
        query = query.where(flows.c.key > after_key)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).all())


def flow_by_id(conn: sa.Connection, flow_id: int) -> sa.Row[Any]:
    """The `flows` row `flow_id`, which the caller knows exists (it holds it locked)."""
    return conn.execute(sa.select(flows).where(flows.c.id == flow_id)).one()


def flow_revision(conn: sa.Connection, flow_id: int) -> int:
    """The revision flow `flow_id` is at now."""
    query = sa.select(flows.c.revision).where(flows.c.id == flow_id)
    return int(conn.execute(query).scalar_one())


def member_names(conn: sa.Connection, flow_ids: Collection[int]) -> dict[int, list[str]]:
    """The usernames of each flow's members, by username, per flow id (one query)."""
    members: dict[int, list[str]] = {}
    for m in conn.execute(
        sa.select(flow_members.c.flow_id, users.c.username)
        .join(users, users.c.id == flow_members.c.user_id)
        .where(flow_members.c.flow_id.in_(flow_ids))
        .order_by(users.c.username)
    ):
        members.setdefault(m.flow_id, []).append(m.username)
    return members


def version_document(conn: sa.Connection, flow_id: int, version: int) -> dict[str, Any]:
    """The stored document of version `version` of flow `flow_id` (which exists)."""
    query = sa.select(flow_versions.c.document).where(
        flow_versions.c.flow_id == flow_id, flow_versions.c.version == version
    )
    document: dict[str, Any] = conn.execute(query).scalar_one()
    return document


def find_version(conn: sa.Connection, flow_id: int, version: int) -> sa.Row[Any] | None:
    """The `flow_versions` row of version `version` of flow `flow_id`, or None."""
    query = sa.select(flow_versions).where(
        flow_versions.c.flow_id == flow_id, flow_versions.c.version == version
    )
    return conn.execute(query).first()


def status_changes(conn: sa.Connection, flow_id: int) -> list[sa.Row[Any]]:
    """The flow's history, oldest first: each row of `flow_status_changes` with `username`, the
    actor's (None for crmflow itself)."""
    query = (
        sa.select(flow_status_changes, users.c.username)
        .outerjoin(users, users.c.id == flow_status_changes.c.actor_id)
        .where(flow_status_changes.c.flow_id == flow_id)
        .order_by(flow_status_changes.c.id)
    )
    return list(conn.execute(query).all())
