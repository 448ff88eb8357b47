"""Due work taken in batches: which enrollments are due (`due_ids`), their rows read and locked
(`lock`), and when the next one will be (`next_due_select`, `next_due`).

A worker takes a batch in the transaction that moves it (worker.run_batch). On PostgreSQL
`due_ids` reads the due candidates of each running flow by index probes and locks them with
`FOR UPDATE SKIP LOCKED`: concurrent workers take disjoint batches without waiting for each
other, and a worker that dies is rolled back, its rows free at once. On SQLite the batch is
read on a snapshot and written under the single writer's lock. No lease is written any more;
the lease columns are still read (a row whose lease runs is skipped, and `next_due_select`
waits for its end) for the rows a worker of an older version leased during an upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa

from crmflow.store.database import read_connection
from crmflow.store.enrollments.rows import (
    RUNNING,
    RUNNING_FLOWS,
    EnrollmentRow,
    enrollment_columns,
    enrollment_row,
)
from crmflow.store.idlists import IDS, among_bound, id_list
from crmflow.store.schema import enrollments, flows
from crmflow.store.wakeups import mark_work

__all__ = [
    "CANDIDATES",
    "due_ids",
    "due_select",
    "first_due_probes",
    "inside_ids",
    "lock",
    "next_due",
    "next_due_select",
    "notify_due",
    "read_enrollments",
]


CANDIDATES = 4  # PostgreSQL: due rows read per row of a batch, before the locks (_due_ids_postgres)
# The statuses inside a flow, as literals in the SQL text: SQLite's planner (no statistics) then
# probes `ix_enrollments_flow_status_due` once per running flow and status.
INSIDE_SQL = "enrollments.status IN ({})".format(", ".join(f"'{s}'" for s in RUNNING))


def _due(now: datetime | sa.BindParameter[datetime]) -> sa.ColumnElement[bool]:
    """Due at `now`, not leased, inside a running flow: SQLite's claim (its planner, without
    statistics, reads the due rows of the running flows by `ix_enrollments_flow_status_due` and
    sorts them: as many as are due; 1 ms a batch with 100,000 due). PostgreSQL's claim reads
    its candidates by probes instead (`_due_ids_postgres`)."""
    return sa.and_(
        sa.text(INSIDE_SQL),
        enrollments.c.due_at <= now,
        sa.or_(enrollments.c.lease_until.is_(None), enrollments.c.lease_until < now),
        enrollments.c.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
    )


# SQLite's claim, built once with `now` and `limit` as parameters: a worker runs it for every
# batch, and building the statement and its cache key each time cost more than running it.
_DUE_SQLITE = (
    sa.select(enrollments.c.id)
    .where(_due(sa.bindparam("now")))
    .order_by(enrollments.c.due_at)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


def due_ids(conn: sa.Connection, *, now: datetime, limit: int) -> list[int]:
    """Up to `limit` enrollments of running flows due at `now` and not leased, due first.

    On PostgreSQL the rows are locked, skipping those another worker is claiming right now."""
    if conn.dialect.name == "postgresql":
        query = _due_ids_postgres(now, limit)
        return [int(i) for i in conn.execute(query).scalars().all()]
    # Fetched whole (`all`): iterating a result fetches its rows one by one.
    due = conn.execute(_DUE_SQLITE, {"now": now, "limit": limit}).scalars().all()
    return [int(i) for i in due]


def due_select(dialect: str, now: datetime, limit: int) -> sa.Select[Any]:
    """`due_ids`' query on `dialect`, its values bound (tests read its plan)."""
    if dialect == "postgresql":
        return _due_ids_postgres(now, limit)
    return _DUE_SQLITE.params(now=now, limit=limit)


def _due_ids_postgres(now: datetime, limit: int) -> sa.Select[Any]:
    """The candidates first, by index probes: for each running flow and each status inside,
    its first due rows in due order from `ix_enrollments_flow_status_due` (a LATERAL probe that
    stops at its LIMIT), so the rows of a paused or stopped flow are never read (walking an
    index of every row inside a flow in due order, as the claim did before, read every overdue
    row of a paused flow at each claim: 0.13 s a batch for 200,000 of them). Then the earliest
    candidates, read again and locked with SKIP LOCKED, their conditions checked again on the
    row as locked. There are CANDIDATES times the batch: a worker whose first rows are held by
    other workers takes the next ones (up to CANDIDATES - 1 other workers at once on the same
    rows)."""
    e, x = enrollments.c, enrollments.alias("x")
    statuses = sa.values(sa.column("status", sa.String), name="s").data([(s,) for s in RUNNING])
    wanted = limit * CANDIDATES
    probe = (
        sa.select(x.c.id, x.c.due_at)
        .where(
            x.c.flow_id == flows.c.id,
            x.c.status == statuses.c.status,
            x.c.due_at <= now,
            sa.or_(x.c.lease_until.is_(None), x.c.lease_until < now),
        )
        .order_by(x.c.due_at)
        .limit(wanted)
        .lateral("probe")
    )
    candidates = (
        sa.select(probe.c.id, probe.c.due_at)
        .select_from(flows.join(statuses, sa.true()).join(probe, sa.true()))
        .where(flows.c.status.in_(RUNNING_FLOWS))
        .order_by(probe.c.due_at)
        .limit(wanted)
        .cte("candidates")
        .prefix_with("MATERIALIZED")  # read first, not folded into the locking query
    )
    # Each candidate in due order, locked by its primary key alone (a LATERAL: one lookup a
    # candidate; with the due conditions inside, a planner without statistics walked another
    # index for each), then checked again as locked (another worker may have moved it since the
    # candidates were read: such a row stays locked to the end of this short transaction, and
    # is not taken), until `limit` are taken.
    locked = (
        sa.select(e.id, e.status, e.due_at, e.lease_until, e.flow_id)
        .where(e.id == candidates.c.id)
        .limit(1)  # one row by its key; and a fence: the checks below are not pushed in
        .with_for_update(skip_locked=True)
        .lateral("locked")
    )
    return (
        sa.select(locked.c.id)
        .select_from(candidates.join(locked, sa.true()))
        .where(
            locked.c.status.in_(RUNNING),
            locked.c.due_at <= now,
            sa.or_(locked.c.lease_until.is_(None), locked.c.lease_until < now),
            locked.c.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
        )
        .limit(limit)
    )


@cache
def _rows(dialect: str, *, locked: bool) -> sa.Select[Any]:
    """The enrollments `:ids` in id order (built once per dialect: every batch reads them)."""
    query = (
        sa.select(*enrollment_columns(dialect))
        .where(among_bound(enrollments.c.id, dialect))
        .order_by(enrollments.c.id)
    )
    return query.with_for_update() if locked else query


def _read(conn: sa.Connection, ids: Sequence[int], *, locked: bool) -> list[EnrollmentRow]:
    dialect = conn.dialect.name
    found = conn.execute(_rows(dialect, locked=locked), {IDS: id_list(ids, dialect)}).all()
    return [enrollment_row(r) for r in found]


def lock(conn: sa.Connection, ids: Sequence[int]) -> list[EnrollmentRow]:
    """The enrollments `ids`, locked for this transaction (PostgreSQL), in id order."""
    return _read(conn, ids, locked=True)


def read_enrollments(conn: sa.Connection, ids: Sequence[int]) -> list[EnrollmentRow]:
    """The enrollments `ids` as `lock` reads them, without locking them (what a page shows)."""
    return _read(conn, ids, locked=False)


def inside_ids(conn: sa.Connection, flow_id: int, record_id: int) -> list[int]:
    """The enrollments of a record still inside a flow (those not entered yet included)."""
    e = enrollments.c
    query = sa.select(e.id).where(
        e.flow_id == flow_id, e.record_id == record_id, e.status.in_(RUNNING)
    )
    return list(conn.execute(query).scalars().all())


def first_due_probes(*conditions: sa.ColumnElement[bool], label: str) -> list[sa.Select[Any]]:
    """For each status inside a flow, a SELECT of one row per running flow: the due time (as
    `label`) of that flow's first row in that status that meets `conditions`, one probe of
    `ix_enrollments_flow_status_due` (flow_id, status, due_at); the rows of paused and stopped
    flows are never read. Their UNION's min is the earliest such due time of any running flow
    (`next_due_select`; the due backlog's oldest row, `store.observability`)."""
    e = enrollments.c
    arms: list[sa.Select[Any]] = []
    for status in RUNNING:
        first = (
            sa.select(e.due_at)
            .where(e.flow_id == flows.c.id, e.status == status, *conditions)
            .order_by(e.due_at)
            .limit(1)
            .correlate(flows)
            .scalar_subquery()
        )
        arms.append(sa.select(first.label(label)).where(flows.c.status.in_(RUNNING_FLOWS)))
    return arms


def next_due_select() -> sa.ScalarSelect[Any]:
    """When the earliest pending enrollment of a running flow can be claimed: its due time, or
    the end of a lease on it (so an idle worker does not spin on held rows); NULL when none is
    pending. The one definition of it: `next_due`, and the `due` of `store.wakeups`' signs.

    Index probes, not a scan (issue 14: the min over every pending row read a million rows a
    look). A row not leased is free at its due time: for each running flow and each status
    inside, its first such row by due time is one probe of `ix_enrollments_flow_status_due`
    (flow_id, status, due_at), so rows of paused flows are never read. A leased row is free at
    the later of its due time and the end of its lease: the leased rows are found through the
    partial index `ix_enrollments_leased` (only rows whose lease is set: a batch moved clears
    its leases, so it holds the rows in flight at most). The earliest of the two is the same
    as min(CASE WHEN lease_until > due_at THEN lease_until ELSE due_at END) over every row
    inside a running flow (tests/integration/test_next_due_probes.py compares them)."""
    e = enrollments.c
    running = flows.c.status.in_(RUNNING_FLOWS)
    arms = first_due_probes(e.due_at.is_not(None), e.lease_until.is_(None), label="free_at")
    free_at = sa.case((e.lease_until > e.due_at, e.lease_until), else_=e.due_at)
    # The flow and status as a function's arguments: tests no index could answer, so that
    # SQLite's planner (no statistics) takes `ix_enrollments_leased` rather than reading a
    # running flow's rows by `ix_enrollments_flow_status_due`, all of them.
    arms.append(
        sa.select(free_at.label("free_at")).where(
            e.lease_until.is_not(None),
            e.due_at.is_not(None),
            sa.func.coalesce(e.status, "").in_(RUNNING),
            sa.func.coalesce(e.flow_id, 0).in_(sa.select(flows.c.id).where(running)),
        )
    )
    free = sa.union_all(*arms).subquery("free")
    return sa.select(sa.func.min(sa.type_coerce(free.c.free_at, e.due_at.type))).scalar_subquery()


def next_due(engine: sa.Engine) -> datetime | None:
    """When the earliest pending enrollment of a running flow can be claimed (`next_due_select`)."""
    with read_connection(engine) as conn:
        value: datetime | None = conn.execute(sa.select(next_due_select())).scalar_one()
    return value


def notify_due(conn: sa.Connection) -> None:
    """Wake idle workers at commit: work may be due sooner than they planned."""
    mark_work(conn)
