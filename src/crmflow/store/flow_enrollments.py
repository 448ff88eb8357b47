"""The enrollments and entry decisions of whole flows, set-based: what the triggers, a flow's
resume and its pages read and write of them, besides the batch runner's own statements.

- records entering a flow from a saved query with one `INSERT INTO enrollments ... SELECT`, and
  those its re-entry policy or its status keeps out with one `INSERT INTO entry_decisions ...
  SELECT` (start lists, schedules, dates reached);
- the enrollments that hear of their record's changes (the change feed), and the refusals an
  archived flow keeps one of per record;
- per flow: how many records are inside, and have ever been; per step and version, the records a
  new version moves, and those a resume looks at again.

These statements write `enrollments` and `entry_decisions`, whose other statements are in
`store.enrollments` and `store.entry_decisions` (the batch runner's): they were moved here out of
the services while those modules were being reshaped, and belong with them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa

from crmflow.store.enrollments import RUNNING, RUNNING_FLOWS
from crmflow.store.schema import enrollments, entry_decisions, flows

__all__ = ["drop_refusals", "enrollments_hearing"]

_IDS_CHUNK = 5_000


def enrollments_hearing(
    conn: sa.Connection, record_ids: Sequence[int], *, only: Collection[int] | None
) -> list[tuple[int, int, int, datetime]]:
    """(id, flow id, record id, entered at) of the enrollments of `record_ids` that are inside a
    running flow (of the flows `only`, when given) and have entered: those a change of their
    record may move. One query per 5,000 records."""
    running_flows = sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))
    if only is not None:
        running_flows = running_flows.where(flows.c.id.in_(sorted(only)))
    e = enrollments.c
    found: list[tuple[int, int, int, datetime]] = []
    for i in range(0, len(record_ids), _IDS_CHUNK):
        found += [
            (int(r.id), int(r.flow_id), int(r.record_id), r.entered_at)
            for r in conn.execute(
                sa.select(e.id, e.flow_id, e.record_id, e.entered_at)
                .where(e.record_id.in_(record_ids[i : i + _IDS_CHUNK]))
                .where(e.status.in_(RUNNING))
                .where(e.state.is_not(None))
                .where(e.flow_id.in_(running_flows))
            )
        ]
    return found


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
