"""The writes of flows, their versions, members and history: the one place that writes
`flows`, `flow_versions`, `flow_members` and `flow_status_changes`. Every change of a flow row
adds one to its `revision` (If-Match compares it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.schema import flow_members, flow_status_changes, flow_versions, flows

__all__ = [
    "FlowFields",
    "VersionFields",
    "add_member",
    "bump_revision",
    "delete_flow",
    "insert_flow",
    "insert_status_change",
    "insert_version",
    "remove_member",
    "replace_version",
    "set_members",
    "set_paused",
    "set_status",
    "update_flow",
]


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
