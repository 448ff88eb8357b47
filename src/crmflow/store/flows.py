"""Flows, their versions, members and history: the one place that writes `flows`,
`flow_versions`, `flow_members` and `flow_status_changes` (`services.flows` edits them,
`services.lifecycle` moves them through their statuses; who may see which flow is
`store.flow_access`), and the reads the other services need about flows (the started flows an
inbound webhook may start, the flow row a start locks, the current definitions that use a saved
query, the flows whose triggers hear a record type).

Every change of a flow row adds one to its `revision` (If-Match compares it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import FlowStatus
from crmflow.store.enrollments import RUNNING
from crmflow.store.flow_access import FlowFilter
from crmflow.store.schema import (
    enrollments,
    flow_members,
    flow_status_changes,
    flow_versions,
    flows,
    groups,
    saved_queries,
    users,
)

__all__ = [
    "FlowFields",
    "NamesInUse",
    "VersionFields",
    "active_flows",
    "add_member",
    "archives_due",
    "bump_revision",
    "current_documents",
    "current_documents_of",
    "current_versions_of",
    "delete_flow",
    "drafts_due",
    "drained_flows",
    "find_flow",
    "find_version",
    "flow_by_id",
    "flow_head",
    "flow_revision",
    "flows_seen",
    "flows_with_status",
    "insert_flow",
    "insert_status_change",
    "insert_version",
    "lock_flow",
    "member_names",
    "names_in_use",
    "next_scheduled",
    "non_draft_flows_of_types",
    "remove_member",
    "replace_version",
    "set_members",
    "set_paused",
    "set_status",
    "status_changes",
    "update_flow",
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
    conn: sa.Connection, visible: FlowFilter, *, status: str | None, record_type: str | None
) -> list[sa.Row[Any]]:
    """The `flows` rows `visible` lets through (of `status`, of `record_type`, when given), by
    key."""
    query = sa.select(flows).where(visible).order_by(flows.c.key)
    if status is not None:
        query = query.where(flows.c.status == status)
    if record_type is not None:
        query = query.where(flows.c.record_type == record_type)
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


# -- writing flows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowFields:
    """The columns of a flow row that its document sets, at its creation and at each edit."""

    name: str
    record_type: str
    owner_id: int
    visibility: str
    start_at: datetime | None
    archive_at: datetime | None


@dataclass(frozen=True)
class VersionFields:
    """A version of a flow as written: its document (without status and members), its source
    text and format, who wrote it and when."""

    document: dict[str, Any]
    source: str
    source_format: str
    created_by: int
    created_at: datetime


def _flow_values(fields: FlowFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "record_type": fields.record_type,
        "owner_id": fields.owner_id,
        "visibility": fields.visibility,
        "start_at": fields.start_at,
        "archive_at": fields.archive_at,
    }


def _version_values(fields: VersionFields) -> dict[str, Any]:
    return {
        "document": fields.document,
        "source": fields.source,
        "source_format": fields.source_format,
        "created_by": fields.created_by,
        "created_at": fields.created_at,
    }


def insert_flow(
    conn: sa.Connection,
    key: str,
    fields: FlowFields,
    *,
    status: str,
    started_at: datetime | None,
    created_by: int,
    now: datetime,
) -> int:
    """A new flow row at version 1; its id. IntegrityError when the key is taken."""
    result = conn.execute(
        flows.insert().values(
            key=key,
            status=status,
            current_version=1,
            started_at=started_at,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            **_flow_values(fields),
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_flow(
    conn: sa.Connection, flow_id: int, fields: FlowFields, *, current_version: int, now: datetime
) -> None:
    """An edit of the flow row: what its document sets, its current version, one revision
    more."""
    conn.execute(
        flows.update()
        .where(flows.c.id == flow_id)
        .values(
            current_version=current_version,
            updated_at=now,
            revision=flows.c.revision + 1,
            **_flow_values(fields),
        )
    )


def insert_version(conn: sa.Connection, flow_id: int, version: int, fields: VersionFields) -> None:
    conn.execute(
        flow_versions.insert().values(flow_id=flow_id, version=version, **_version_values(fields))
    )


def replace_version(conn: sa.Connection, flow_id: int, version: int, fields: VersionFields) -> None:
    """Version `version` written over (a draft is edited in place)."""
    conn.execute(
        flow_versions.update()
        .where(flow_versions.c.flow_id == flow_id, flow_versions.c.version == version)
        .values(**_version_values(fields))
    )


def delete_flow(conn: sa.Connection, flow_id: int) -> None:
    conn.execute(flows.delete().where(flows.c.id == flow_id))


def bump_revision(conn: sa.Connection, flow_id: int) -> None:
    """One revision more (a change kept outside the flow row: its members)."""
    conn.execute(flows.update().where(flows.c.id == flow_id).values(revision=flows.c.revision + 1))


def set_status(
    conn: sa.Connection,
    flow_id: int,
    *,
    from_status: str,
    to_status: str,
    now: datetime,
    started: bool,
    revision: int | None,
) -> bool:
    """Compare-and-set the flow's status from `from_status` (and its revision, when given) to
    `to_status`, one revision more, `started_at` set to `now` when `started`. Whether it was
    set (False: the flow changed meanwhile)."""
    values: dict[str, Any] = {
        "status": to_status,
        "updated_at": now,
        "revision": flows.c.revision + 1,
    }
    if started:
        values["started_at"] = now
    unchanged = [flows.c.id == flow_id, flows.c.status == from_status]
    if revision is not None:
        unchanged.append(flows.c.revision == revision)
    changed = conn.execute(flows.update().where(*unchanged).values(**values)).rowcount
    return bool(changed == 1)


def set_paused(
    conn: sa.Connection, flow_id: int, *, paused_at: datetime | None, position: int | None
) -> None:
    """When the flow froze and how far the change feed had read then (None, None: thawed)."""
    conn.execute(
        flows.update()
        .where(flows.c.id == flow_id)
        .values(paused_at=paused_at, paused_feed_position=position)
    )


def insert_status_change(
    conn: sa.Connection,
    *,
    flow_id: int,
    from_status: str | None,
    to_status: str,
    version: int,
    actor_id: int | None,
    at: datetime,
    note: str,
) -> None:
    """A line of the flow's history (`actor_id` None: crmflow itself)."""
    conn.execute(
        flow_status_changes.insert().values(
            flow_id=flow_id,
            from_status=from_status,
            to_status=to_status,
            version=version,
            actor_id=actor_id,
            at=at,
            note=note,
        )
    )


def set_members(conn: sa.Connection, flow_id: int, user_ids: Collection[int]) -> None:
    """The flow's members are `user_ids`, and only they."""
    conn.execute(flow_members.delete().where(flow_members.c.flow_id == flow_id))
    if user_ids:
        conn.execute(flow_members.insert(), [{"flow_id": flow_id, "user_id": i} for i in user_ids])


def add_member(conn: sa.Connection, flow_id: int, user_id: int) -> None:
    conn.execute(flow_members.insert().values(flow_id=flow_id, user_id=user_id))


def remove_member(conn: sa.Connection, flow_id: int, user_id: int) -> bool:
    """Whether `user_id` was a member (and is no more)."""
    removed = conn.execute(
        flow_members.delete().where(
            flow_members.c.flow_id == flow_id, flow_members.c.user_id == user_id
        )
    ).rowcount
    return bool(removed)


# -- the flows' own schedule (start_at, archive_at, auto-archive) -----------------------------


def drafts_due(conn: sa.Connection, now: datetime) -> list[sa.Row[Any]]:
    """(id, key, current version) of the drafts whose start_at has come, earliest first."""
    query: sa.Select[Any] = (
        sa.select(flows.c.id, flows.c.key, flows.c.current_version)
        .where(flows.c.status == FlowStatus.DRAFT.value, flows.c.start_at <= now)
        .order_by(flows.c.start_at, flows.c.id)
    )
    return list(conn.execute(query).all())


def current_documents_of(conn: sa.Connection, flow_ids: Sequence[int]) -> dict[int, Any]:
    """The document of each flow's current version, per flow id."""
    return {
        r.flow_id: r.document
        for r in conn.execute(
            sa.select(flow_versions.c.flow_id, flow_versions.c.document)
            .join(flows, flows.c.id == flow_versions.c.flow_id)
            .where(flow_versions.c.version == flows.c.current_version)
            .where(flows.c.id.in_(flow_ids))
        )
    }


def _archive_satisfied(archive_at: sa.ColumnElement[Any]) -> sa.Exists:
    """The flow was archived at or after its archive_at already (by it or by a person): the
    archive_at has done its work, and a flow resumed after it is not archived again."""
    return (
        sa.select(flow_status_changes.c.id)
        .where(
            flow_status_changes.c.flow_id == flows.c.id,
            flow_status_changes.c.to_status == FlowStatus.ARCHIVED.value,
            flow_status_changes.c.at >= archive_at,
        )
        .exists()
    )


def archives_due(conn: sa.Connection, now: datetime) -> list[sa.Row[Any]]:
    """(id, key) of the flows whose archive_at has come and not done its work yet, earliest
    first."""
    query: sa.Select[Any] = (
        sa.select(flows.c.id, flows.c.key)
        .where(
            flows.c.status != FlowStatus.ARCHIVED.value,
            flows.c.archive_at <= now,
            ~_archive_satisfied(flows.c.archive_at),
        )
        .order_by(flows.c.archive_at, flows.c.id)
    )
    return list(conn.execute(query).all())


def next_scheduled(conn: sa.Connection) -> tuple[datetime | None, datetime | None]:
    """The earliest start_at of a draft, and the earliest archive_at still to do its work."""
    start = conn.execute(
        sa.select(sa.func.min(flows.c.start_at)).where(flows.c.status == FlowStatus.DRAFT.value)
    ).scalar_one()
    archive = conn.execute(
        sa.select(sa.func.min(flows.c.archive_at)).where(
            flows.c.status != FlowStatus.ARCHIVED.value,
            ~_archive_satisfied(flows.c.archive_at),
        )
    ).scalar_one()
    return start, archive


def drained_flows(conn: sa.Connection) -> list[sa.Row[Any]]:
    """(key, current document) of the draining flows with nobody left inside, by key."""
    running = (
        sa.select(enrollments.c.id)
        .where(enrollments.c.flow_id == flows.c.id, enrollments.c.status.in_(RUNNING))
        .exists()
    )
    query: sa.Select[Any] = (
        sa.select(flows.c.key, flow_versions.c.document)
        .join(
            flow_versions,
            sa.and_(
                flow_versions.c.flow_id == flows.c.id,
                flow_versions.c.version == flows.c.current_version,
            ),
        )
        .where(flows.c.status == FlowStatus.DRAINING.value, ~running)
        .order_by(flows.c.key)
    )
    return list(conn.execute(query).all())
