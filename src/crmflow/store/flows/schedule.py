"""The flows' own schedule: drafts whose start_at has come, flows whose archive_at has come and
not done its work yet, the next of either, and the draining flows with nobody left inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import FlowStatus
from crmflow.store.enrollments import RUNNING
from crmflow.store.schema import enrollments, flow_status_changes, flow_versions, flows

__all__ = [
    "archives_due",
    "current_documents_of",
    "drafts_due",
    "drained_flows",
    "next_scheduled",
]


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
