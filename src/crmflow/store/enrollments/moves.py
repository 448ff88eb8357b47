"""Enrollments moving on: a batch's new states written in bulk, the enrollments a change of
their record may move, and what a resume looks at again and moves to a new version."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from crmflow.engine.runtime import EnrollmentState, StepRunLog
from crmflow.store.bulk import Column, Writer
from crmflow.store.enrollments.rows import IDS_CHUNK, RUNNING, RUNNING_FLOWS, state_json
from crmflow.store.feed import UnheardChanges
from crmflow.store.schema import enrollments, flows
from crmflow.store.step_runs import write_runs

__all__ = [
    "enrollments_hearing",
    "move_unentered",
    "save",
    "steps_on_other_versions",
    "thaw_candidates",
]

# The columns `save` writes, with their PostgreSQL types (`store.bulk.Writer.update`).
_SAVED: tuple[Column, ...] = (
    ("flow_version", "int4"),
    ("status", "text"),
    ("step_key", "text"),
    ("due_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("state", "jsonb"),
    ("updated_at", "timestamptz"),
)


def save(
    conn: sa.Connection,
    states: Sequence[EnrollmentState],
    logs: Sequence[StepRunLog],
    *,
    now: datetime,
    runs_before: Mapping[int, int] | None = None,
) -> None:
    """Write the new states (columns + JSON, lease released) and the step runs, in bulk.

    `runs_before` maps an enrollment to the number of step runs its state had before this batch:
    a log of a later run is a new row for sure, and only the others (a waiting run that
    completes) are looked up and merged. Without it every log is looked up.
    """
    writer = Writer(conn)
    time = writer.time
    at = time(now)
    writer.update(
        enrollments,
        _SAVED,
        [
            (
                s.flow_version,
                str(s.status),  # its value (a StrEnum's str), without the enum's property
                s.step_key,
                None if s.is_over else time(s.due_at),
                time(s.finished_at),
                state_json(s),
                at,
                s.enrollment_id,
            )
            for s in states
        ],
        also="lease_owner = null, lease_until = null",
    )
    write_runs(writer, logs, runs_before=runs_before)


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
    for i in range(0, len(record_ids), IDS_CHUNK):
        found += [
            (int(r.id), int(r.flow_id), int(r.record_id), r.entered_at)
            for r in conn.execute(
                sa.select(e.id, e.flow_id, e.record_id, e.entered_at)
                .where(e.record_id.in_(record_ids[i : i + IDS_CHUNK]))
                .where(e.status.in_(RUNNING))
                .where(e.state.is_not(None))
                .where(e.flow_id.in_(running_flows))
            )
        ]
    return found


# -- what a resume moves -------------------------------------------------------------------------


def steps_on_other_versions(
    conn: sa.Connection, flow_id: int, version: int
) -> list[tuple[int, str, int]]:
    """(flow version, step key, records) of the records inside flow `flow_id` at a step of a
    version other than `version` (one query)."""
    e = enrollments.c
    rows = conn.execute(
        sa.select(e.flow_version, e.step_key, sa.func.count())
        .where(
            e.flow_id == flow_id,
            e.status.in_(RUNNING),
            e.step_key.is_not(None),
            e.flow_version != version,
        )
        .group_by(e.flow_version, e.step_key)
    ).all()
    return [(int(v), str(key), int(count)) for v, key, count in rows]


def _caught_up_by(
    catch_up: str, paused_at: datetime | None, now: datetime
) -> sa.ColumnElement[bool]:
    """The enrollments the catch-up policy can change (the others are not even loaded)."""
    if paused_at is None or catch_up == "run_late":
        return sa.false()
    if catch_up == "skip_missed":
        return enrollments.c.due_at < now
    return enrollments.c.due_at.is_not(None)


def thaw_candidates(
    conn: sa.Connection,
    flow_id: int,
    version: int,
    *,
    catch_up: str,
    paused_at: datetime | None,
    now: datetime,
    unheard: UnheardChanges | None,
    after: int,
    limit: int,
) -> list[int]:
    """The next `limit` ids after `after`, in order, of the enrollments inside flow `flow_id`
    that its resume (on `version`, thawing a freeze from `paused_at`) can change: those on
    another version, those the `catch_up` policy moves, and those whose record changed while
    the flow did not hear (`unheard`)."""
    e = enrollments.c
    query = (
        sa.select(e.id)
        .where(
            e.flow_id == flow_id,
            e.status.in_(RUNNING),
            sa.or_(
                e.flow_version != version,
                _caught_up_by(catch_up, paused_at, now),
                e.record_id.in_(unheard) if unheard is not None else sa.false(),
            ),
            e.id > after,
        )
        .order_by(e.id)
        .limit(limit)
    )
    return [int(i) for i in conn.execute(query).scalars()]


def move_unentered(
    conn: sa.Connection, rows: Sequence[tuple[int, int, datetime | None]], *, now: datetime
) -> None:
    """Enrollments not entered yet (id, new flow version, new due time) move to that version
    and time, in one statement."""
    if not rows:
        return
    conn.execute(
        enrollments.update()
        .where(enrollments.c.id == sa.bindparam("eid"))
        .values(
            flow_version=sa.bindparam("v_version"), due_at=sa.bindparam("v_due"), updated_at=now
        ),
        [{"eid": eid, "v_version": version, "v_due": due} for eid, version, due in rows],
    )
