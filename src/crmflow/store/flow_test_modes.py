"""Flows in test mode (`flow_test_modes`): the only module that reads or writes them.
services.test_mode says what test mode does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import enrollments, flow_test_modes, flow_versions, flows, users

__all__ = ["FlowTestMode", "set_test_mode", "test_flows_of", "test_mode_of"]


@dataclass(frozen=True)
class FlowTestMode:
    enabled: bool
    changed_by: str | None  # None: the user was deleted since
    changed_at: datetime


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        flow_test_modes
    )


def set_test_mode(
    conn: sa.Connection, flow_id: int, *, enabled: bool, by: int, now: datetime
) -> None:
    values = {"enabled": enabled, "changed_by": by, "changed_at": now}
    conn.execute(
        _insert(conn)
        .values(flow_id=flow_id, **values)
        .on_conflict_do_update(index_elements=["flow_id"], set_=values)
    )


def test_mode_of(conn: sa.Connection, flow_id: int) -> FlowTestMode | None:
    """The flow's test mode as last switched (None: never switched, so off)."""
    t = flow_test_modes.c
    row = conn.execute(
        sa.select(t.enabled, t.changed_at, users.c.username)
        .select_from(flow_test_modes.outerjoin(users, users.c.id == t.changed_by))
        .where(t.flow_id == flow_id)
    ).first()
    if row is None:
        return None
    return FlowTestMode(bool(row.enabled), row.username, row.changed_at)


def test_flows_of(
    conn: sa.Connection, enrollment_ids: Iterable[int]
) -> tuple[dict[int, int], dict[int, list[str]]]:
    """Of `enrollment_ids`, those of flows in test mode: ({enrollment id: flow id}, {flow id:
    its current version's test recipients}). One indexed query, usually empty (flows in test
    mode are few), and one more for their definitions when not."""
    ids = sorted(set(enrollment_ids))
    if not ids:
        return {}, {}
    e, t = enrollments.c, flow_test_modes.c
    rows = conn.execute(
        sa.select(e.id, e.flow_id)
        .select_from(enrollments.join(flow_test_modes, t.flow_id == e.flow_id))
        .where(e.id.in_(ids), t.enabled.is_(True))
    ).all()
    if not rows:
        return {}, {}
    by_enrollment = {int(r.id): int(r.flow_id) for r in rows}
    v = flow_versions.c
    documents = conn.execute(
        sa.select(v.flow_id, v.document)
        .select_from(
            flow_versions.join(
                flows, sa.and_(flows.c.id == v.flow_id, flows.c.current_version == v.version)
            )
        )
        .where(v.flow_id.in_(sorted(set(by_enrollment.values()))))
    )
    recipients = {
        int(r.flow_id): [str(x) for x in (r.document or {}).get("test_recipients") or []]
        for r in documents
    }
    return by_enrollment, recipients
