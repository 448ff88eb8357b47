"""What people see of enrollments: one run, a record's runs, a flow's runs page and counts (per
status and step, inside now, ever)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from crmflow.store.enrollments.rows import RUNNING
from crmflow.store.flow_access import FlowFilter
from crmflow.store.schema import enrollments, flows, records

__all__ = [
    "count_by_status_and_step",
    "enrollment_with_flow_key",
    "enrollments_ever",
    "enrollments_of_record",
    "inside_counts",
    "position",
    "runs_page",
]


def _with_flow_key() -> sa.Select[Any]:
    return sa.select(enrollments, flows.c.key.label("flow_key")).join(
        flows, flows.c.id == enrollments.c.flow_id
    )


def enrollment_with_flow_key(conn: sa.Connection, enrollment_id: int) -> sa.Row[Any]:
    """The enrollment `enrollment_id` (which exists): every column, and its flow's `.flow_key`."""
    return conn.execute(_with_flow_key().where(enrollments.c.id == enrollment_id)).one()


def position(conn: sa.Connection, enrollment_id: int) -> tuple[str, str | None]:
    """Where the enrollment `enrollment_id` (which exists) is: its status and step key."""
    e = enrollments.c
    row = conn.execute(sa.select(e.status, e.step_key).where(e.id == enrollment_id)).one()
    return row.status, row.step_key


def enrollments_of_record(
    conn: sa.Connection, record_id: int, visible: FlowFilter
) -> list[sa.Row[Any]]:
    """The record's enrollments in the flows `visible` lets through, oldest first (as
    `enrollment_with_flow_key`)."""
    query = (
        _with_flow_key()
        .where(enrollments.c.record_id == record_id, visible)
        .order_by(enrollments.c.id)
    )
    return list(conn.execute(query))


def count_by_status_and_step(
    conn: sa.Connection, flow_id: int
) -> list[tuple[str, str | None, int]]:
    """How many of a flow's enrollments there are per (status, step key)."""
    e = enrollments.c
    query = (
        sa.select(e.status, e.step_key, sa.func.count())
        .where(e.flow_id == flow_id)
        .group_by(e.status, e.step_key)
    )
    return [(r[0], r[1], int(r[2])) for r in conn.execute(query)]


def inside_counts(conn: sa.Connection, flow_ids: Collection[int]) -> dict[int, int]:
    """How many records are inside each of `flow_ids` now (a flow with none is left out)."""
    query = (
        sa.select(enrollments.c.flow_id, sa.func.count().label("count"))
        .where(enrollments.c.flow_id.in_(flow_ids), enrollments.c.status.in_(RUNNING))
        .group_by(enrollments.c.flow_id)
    )
    return {r[0]: int(r[1]) for r in conn.execute(query)}


def enrollments_ever(conn: sa.Connection, flow_id: int) -> int:
    """How many enrollments flow `flow_id` ever had (those finished and cancelled too)."""
    query = sa.select(sa.func.count()).select_from(enrollments)
    return int(conn.execute(query.where(enrollments.c.flow_id == flow_id)).scalar_one())


def runs_page(
    conn: sa.Connection,
    flow_id: int,
    *,
    status: str | None,
    step: str | None,
    after: int | None,
    limit: int,
) -> list[sa.Row[Any]]:
    """Up to `limit` of a flow's enrollments after id `after`, in id order, with `status` / at
    `step` when given: their columns for a list, and the record's `.data` (None once deleted)."""
    e = enrollments.c
    query = (
        sa.select(
            e.id,
            e.record_id,
            e.status,
            e.step_key,
            e.due_at,
            e.entered_at,
            e.finished_at,
            e.state,
            records.c.data,
        )
        .outerjoin(records, records.c.id == e.record_id)
        .where(e.flow_id == flow_id)
        .order_by(e.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(e.status == status)
    if step is not None:
        query = query.where(e.step_key == step)
    if after is not None:
        query = query.where(e.id > after)
    return list(conn.execute(query))
