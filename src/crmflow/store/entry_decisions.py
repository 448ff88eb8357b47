"""Why records did not enter flows (`entry_decisions`): one row per refusal, with the reason
written for the person who asks "why did this record not enter?" (the rules are the engine's,
`engine.entry`). The one place that writes the table: the batch runner's decisions, the set-based
refusals of a start list or a schedule (one `INSERT ... SELECT`), the refusals a change drops,
and the page of them people read."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.entry import Decision
from crmflow.store.flow_access import FlowFilter
from crmflow.store.schema import entry_decisions, flows, records
from crmflow.store.types import UTCDateTime

__all__ = [
    "delete_entry_decisions",
    "drop_refusals",
    "insert_decisions",
    "insert_refusals",
    "refusals_page",
    "refuse_records",
]

# Records per `IN (...)` list of `drop_refusals`: well below SQLite's parameter limit.
_IDS_CHUNK = 5_000

_COLUMNS = ["flow_id", "record_id", "trigger", "reason", "at"]


def insert_decisions(conn: sa.Connection, decisions: Sequence[Decision], *, now: datetime) -> None:
    """Keep `decisions`, made at `now`, in one statement."""
    if decisions:
        conn.execute(entry_decisions.insert(), [_decision_row(d, now) for d in decisions])


def _decision_row(d: Decision, now: datetime) -> dict[str, Any]:
    return {
        "flow_id": d.flow_id,
        "record_id": d.record_id,
        "trigger": d.trigger,
        "change_id": d.change_id,
        "reason": d.reason,
        "at": now,
    }


def _at(now: datetime) -> sa.BindParameter[datetime]:
    return sa.bindparam(None, now, type_=UTCDateTime())


def insert_refusals(
    conn: sa.Connection,
    *,
    flow_id: int,
    refused: sa.Subquery,
    ids: sa.Subquery,
    trigger: str,
    now: datetime,
) -> int:
    """The records of `ids` (a set of record ids, `store.enrollments.record_ids`) that `refused`
    (record_id, reason: those a re-entry policy keeps out) holds get their refusal, in one
    `INSERT ... SELECT`; how many."""
    # preserve_rowcount: psycopg's rowcount of an INSERT ... SELECT is otherwise not kept.
    return int(
        conn.execute(
            entry_decisions.insert()
            .execution_options(preserve_rowcount=True)
            .from_select(
                _COLUMNS,
                sa.select(
                    sa.literal(flow_id),
                    refused.c.record_id,
                    sa.literal(trigger),
                    refused.c.reason,
                    _at(now),
                ).where(refused.c.record_id.in_(sa.select(ids.c.id))),
            )
        ).rowcount
    )


def refuse_records(
    conn: sa.Connection,
    flow_id: int,
    ids: sa.Subquery | Sequence[int],
    *,
    trigger: str,
    reason: str,
    now: datetime,
) -> None:
    """Each record of `ids` (a set of record ids, `store.enrollments.record_ids`, or a list of
    record ids: those of them that exist) gets the entry decision `reason`, in one
    `INSERT ... SELECT`."""
    if isinstance(ids, sa.Subquery):
        selected: sa.Select[Any] = sa.select(ids.c.id)
    else:
        selected = sa.select(records.c.id).where(records.c.id.in_(ids))
    refused = selected.subquery("refused")
    conn.execute(
        entry_decisions.insert().from_select(
            _COLUMNS,
            sa.select(
                sa.literal(flow_id), refused.c[0], sa.literal(trigger), sa.literal(reason), _at(now)
            ),
        )
    )


def drop_refusals(conn: sa.Connection, pairs: Collection[tuple[int, int]], *, reason: str) -> None:
    """Delete the entry decisions with `reason` of the (flow id, record id) `pairs`: found a
    chunk of records at a time, deleted a chunk of ids at a time."""
    d = entry_decisions.c
    flow_ids = sorted({f for f, _ in pairs})
    record_ids = sorted({r for _, r in pairs})
    stale: list[int] = []
    for i in range(0, len(record_ids), _IDS_CHUNK):
        stale += [
            int(r.id)
            for r in conn.execute(
                sa.select(d.id, d.flow_id, d.record_id)
                .where(d.record_id.in_(record_ids[i : i + _IDS_CHUNK]))
                .where(d.flow_id.in_(flow_ids), d.reason == reason)
            )
            if (r.flow_id, r.record_id) in pairs
        ]
    for i in range(0, len(stale), _IDS_CHUNK):
        conn.execute(entry_decisions.delete().where(d.id.in_(stale[i : i + _IDS_CHUNK])))


def refusals_page(
    conn: sa.Connection,
    visible: FlowFilter,
    *,
    flow_id: int | None,
    record_id: int | None,
    limit: int,
) -> list[sa.Row[Any]]:
    """The newest `limit` entry decisions of the flows `visible` lets through (of flow
    `flow_id`, of record `record_id`, when given), each with its flow's key as `flow_key`."""
    d = entry_decisions.c
    query = (
        sa.select(entry_decisions, flows.c.key.label("flow_key"))
        .join(flows, flows.c.id == d.flow_id)
        .where(visible)
        .order_by(d.id.desc())
        .limit(limit)
    )
    if flow_id is not None:
        query = query.where(d.flow_id == flow_id)
    if record_id is not None:
        query = query.where(d.record_id == record_id)
    return list(conn.execute(query).all())


def delete_entry_decisions(conn: sa.Connection, ids: Sequence[int]) -> int:
    """Delete the not-entered reasons `ids` (pruning, services.retention); how many were asked."""
    if ids:
        conn.execute(entry_decisions.delete().where(entry_decisions.c.id.in_(ids)))
    return len(ids)
