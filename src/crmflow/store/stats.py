"""Figures of flows for the statistics pages (`services.stats`): runs per flow and status,
entries and exits per day, actions per state, messages per kind and status, and the outbox's
messages a page at a time. Only reads, each one grouped query (or one page) whatever the
number of runs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.flow_access import FlowFilter
from crmflow.store.schema import enrollments, flows, outbox

__all__ = [
    "OutboxLine",
    "actions_by_state",
    "messages_by_status",
    "outbox_line",
    "outbox_page",
    "per_day",
    "runs_by_flow_and_status",
]


def runs_by_flow_and_status(
    conn: sa.Connection, flow_ids: Collection[int]
) -> dict[int, dict[str, int]]:
    """For each of `flow_ids` that has runs, how many there are per status."""
    if not flow_ids:
        return {}
    e = enrollments.c
    query = (
        sa.select(e.flow_id, e.status, sa.func.count())
        .where(e.flow_id.in_(sorted(flow_ids)))
        .group_by(e.flow_id, e.status)
    )
    out: dict[int, dict[str, int]] = {}
    for flow_id, status, count in conn.execute(query):
        out.setdefault(int(flow_id), {})[str(status)] = int(count)
    return out


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def per_day(conn: sa.Connection, flow_id: int, *, since: datetime, column: str) -> dict[date, int]:
    """How many of a flow's runs entered (`column="entered_at"`) or ended (`"finished_at"`)
    each day (UTC) since `since`."""
    at = enrollments.c[column]
    day = sa.func.date(at)
    query = (
        sa.select(day, sa.func.count())
        .where(enrollments.c.flow_id == flow_id, at >= since)
        .group_by(day)
    )
    return {_day(d): int(n) for d, n in conn.execute(query) if d is not None}


def actions_by_state(conn: sa.Connection, flow_id: int) -> dict[str, int]:
    """How many of a flow's actions ended in each state (done, failed, skipped, ...), from the
    action logs of its step runs."""
    in_flow = "select id from enrollments where flow_id = :flow_id"
    if conn.dialect.name == "postgresql":
        sql = (
            "select a->>'status' as state, count(*) from step_runs s,"
            " jsonb_array_elements(s.actions) a"
            f" where s.enrollment_id in ({in_flow}) group by 1"
        )
    else:
        sql = (
            "select json_extract(a.value, '$.status') as state, count(*) from step_runs s,"
            " json_each(s.actions) a"
            f" where s.enrollment_id in ({in_flow}) group by 1"
        )
    rows = conn.execute(sa.text(sql), {"flow_id": flow_id})
    return {str(state): int(n) for state, n in rows if state is not None}


def messages_by_status(conn: sa.Connection, flow_id: int) -> dict[tuple[str, str], int]:
    """How many of a flow's outbox messages there are per (kind, status)."""
    in_flow = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id)
    o = outbox.c
    query = (
        sa.select(o.kind, o.status, sa.func.count())
        .where(o.enrollment_id.in_(in_flow))
        .group_by(o.kind, o.status)
    )
    return {(str(k), str(s)): int(n) for k, s, n in conn.execute(query)}


@dataclass(frozen=True)
class OutboxLine:
    """An outbox message as the messages page lists it."""

    id: int
    kind: str  # email | sms | webhook
    status: str  # pending | retrying | sent | caught | failed | cancelled | suppressed | ...
    test: bool
    flow_key: str | None
    record_id: int | None
    step_key: str
    payload: dict[str, Any]
    created_at: datetime
    not_before: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    attempts: int
    last_error: str | None
    rendered: str | None


def _outbox_query(*, with_rendered: bool) -> sa.Select[Any]:
    o = outbox.c
    columns = [
        o.id,
        o.kind,
        o.status,
        o.test,
        flows.c.key.label("flow_key"),
        enrollments.c.record_id,
        o.step_key,
        o.payload,
        o.created_at,
        o.not_before,
        o.next_attempt_at,
        o.delivered_at,
        o.attempts,
        o.last_error,
        (o.rendered if with_rendered else sa.null()).label("rendered"),
    ]
    return (
        sa.select(*columns)
        .join(enrollments, enrollments.c.id == o.enrollment_id)
        .join(flows, flows.c.id == enrollments.c.flow_id)
    )


def _line(row: sa.Row[Any]) -> OutboxLine:
    return OutboxLine(
        id=int(row.id),
        kind=str(row.kind),
        status=str(row.status),
        test=bool(row.test),
        flow_key=row.flow_key,
        record_id=row.record_id,
        step_key=str(row.step_key),
        payload=dict(row.payload or {}),
        created_at=row.created_at,
        not_before=row.not_before,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        attempts=int(row.attempts),
        last_error=row.last_error,
        rendered=row.rendered,
    )


def outbox_page(
    conn: sa.Connection,
    *,
    visible: FlowFilter,
    kind: str | None,
    statuses: Collection[str] | None,
    before: int | None,
    limit: int,
) -> list[OutboxLine]:
    """Up to `limit` outbox messages of the flows `visible` selects, newest first, with ids
    below `before` when given; only of `kind` / in `statuses` when given."""
    query = _outbox_query(with_rendered=False).where(visible)
    if kind is not None:
        query = query.where(outbox.c.kind == kind)
    if statuses is not None:
        query = query.where(outbox.c.status.in_(sorted(statuses)))
    if before is not None:
        query = query.where(outbox.c.id < before)
    query = query.order_by(outbox.c.id.desc()).limit(limit)
    return [_line(r) for r in conn.execute(query)]


def outbox_line(conn: sa.Connection, message_id: int, *, visible: FlowFilter) -> OutboxLine | None:
    """One outbox message with its rendered text, if it is of a flow `visible` selects."""
    query = _outbox_query(with_rendered=True).where(outbox.c.id == message_id, visible)
    row = conn.execute(query).first()
    return _line(row) if row is not None else None
