"""Records entering flows: new enrollments one at a time, a batch at a time, or a whole saved
query's records at once (`INSERT INTO enrollments ... SELECT`, the records the re-entry policy
keeps out written to `entry_decisions` beside them), and the past entries the entry rules judge a
new start by."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import ReentryPolicy
from crmflow.engine.entry import PastEntry
from crmflow.store.enrollments.rows import IDS_CHUNK, RUNNING
from crmflow.store.entry_decisions import insert_refusals
from crmflow.store.queries import IdSelect
from crmflow.store.schema import enrollments
from crmflow.store.types import UTCDateTime

__all__ = [
    "RecordIds",
    "count_ids",
    "enter_set",
    "insert_enrollment",
    "insert_enrollments",
    "insert_starts",
    "past_entries",
    "record_ids",
    "selected_ids",
    "test_recipients_of",
]

# A set of record ids (a subquery with an `id` column), not executed: what the set-based
# statements enter or refuse, read in the caller's transaction.
RecordIds = sa.Subquery


def insert_enrollment(
    conn: sa.Connection,
    *,
    flow_id: int,
    flow_version: int,
    record_id: int,
    now: datetime,
    due_at: datetime,
    status: str = "active",
    test_to: Sequence[str] | None = None,
) -> int:
    """A new enrollment that enters its flow at `due_at` (its state is written when it does);
    `test_to`: a run in test mode, its messages going to these test recipients."""
    row = _new_row(flow_id, flow_version, record_id, due_at, now=now, status=status)
    if test_to is not None:
        row["test_to"] = list(test_to)
    inserted = conn.execute(enrollments.insert().values(row).returning(enrollments.c.id))
    return int(inserted.scalar_one())


def test_recipients_of(conn: sa.Connection, enrollment_ids: Iterable[int]) -> dict[int, list[str]]:
    """The test recipients of those of `enrollment_ids` that run in test mode (most runs do
    not: one indexed lookup by id, usually empty)."""
    ids = sorted(set(enrollment_ids))
    if not ids:
        return {}
    e = enrollments.c
    query = sa.select(e.id, e.test_to).where(e.id.in_(ids), e.test_to.is_not(None))
    return {int(r.id): list(r.test_to) for r in conn.execute(query)}


def insert_starts(
    conn: sa.Connection, starts: Sequence[tuple[int, int, int, datetime]], *, now: datetime
) -> None:
    """New enrollments, one per (flow id, flow version, record id, due time), each entering its
    flow at its due time: `insert_enrollment` for many at once, in one statement."""
    if starts:
        conn.execute(enrollments.insert(), [_new_row(*start, now=now) for start in starts])


def insert_enrollments(
    conn: sa.Connection,
    rows: Sequence[tuple[int, int, int]],
    *,
    now: datetime,
    due_at: datetime,
) -> list[int]:
    """New enrollments (flow id, flow version, record id) that enter at `due_at` (their state is
    written when they do), in one executemany; their ids, in the order of `rows`."""
    if not rows:
        return []
    result = conn.execute(
        enrollments.insert().returning(enrollments.c.id, sort_by_parameter_order=True),
        [_new_row(f, v, r, due_at, now=now) for f, v, r in rows],
    )
    return [int(i) for i in result.scalars()]


def _new_row(
    flow_id: int,
    flow_version: int,
    record_id: int,
    due_at: datetime,
    *,
    now: datetime,
    status: str = "active",
) -> dict[str, Any]:
    over = status not in RUNNING
    return {
        "flow_id": flow_id,
        "flow_version": flow_version,
        "record_id": record_id,
        "status": status,
        "entered_at": now,
        "finished_at": now if over else None,
        "due_at": None if over else due_at,
        "updated_at": now,
    }


def past_entries(
    conn: sa.Connection, pairs: Iterable[tuple[int, int]], *, since: datetime | None = None
) -> dict[tuple[int, int], list[PastEntry]]:
    """The enrollments of each (flow id, record id) pair, newest first, in one query per chunk
    of records: what the entry rules (`engine.entry`) judge a new start by. With `since`, only
    those that bear on the policies: inside now, or entered after `since` (the caller passes
    the longest look-back it needs), or any for 'never'."""
    wanted = set(pairs)
    out: dict[tuple[int, int], list[PastEntry]] = {}
    if not wanted:
        return out
    e = enrollments.c
    flow_ids = sorted({f for f, _ in wanted})
    record_ids = sorted({r for _, r in wanted})
    for i in range(0, len(record_ids), IDS_CHUNK):
        query = (
            sa.select(e.flow_id, e.record_id, e.status, e.step_key, e.entered_at)
            .where(e.record_id.in_(record_ids[i : i + IDS_CHUNK]))
            .where(e.flow_id.in_(flow_ids))
            .order_by(e.entered_at.desc(), e.id.desc())
        )
        if since is not None:
            query = query.where(sa.or_(e.status.in_(RUNNING), e.entered_at > since))
        for r in conn.execute(query):
            key = (r.flow_id, r.record_id)
            if key in wanted:
                out.setdefault(key, []).append(PastEntry(r.status, r.step_key, r.entered_at))
    return out


# -- a whole set of records at once (start lists, schedules, dates reached) ----------------------


def record_ids(selects: Sequence[IdSelect]) -> RecordIds:
    """The records any of `selects` (saved queries' `matching_ids`) selects, each once."""
    union = sa.union(*selects) if len(selects) > 1 else selects[0]
    return union.subquery("ids")


def count_ids(conn: sa.Connection, ids: RecordIds) -> int:
    """How many records `ids` holds now (one `SELECT count(*)`)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())


def selected_ids(conn: sa.Connection, ids: RecordIds) -> list[int]:
    """The ids `ids` holds now, in order."""
    return [int(i) for i in conn.execute(sa.select(ids.c.id).order_by(ids.c.id)).scalars()]


def _refusals(policy: ReentryPolicy, flow_id: int, now: datetime) -> sa.Subquery | None:
    """The records the re-entry policy keeps out of `flow_id` now, with why: a subquery
    (record_id, reason) over the flow's own enrollments only (one row per record, whatever the
    records being considered), or None when the policy keeps nobody out."""
    e = enrollments.c
    running = e.status.in_(RUNNING)
    if policy.mode == "always":
        return None
    if policy.mode == "never":
        counts: sa.ColumnElement[bool] = e.status != "cancelled"
        other = "re-entry: never, and the record already went through this flow"
    elif policy.mode == "once_per_days" and policy.days:
        since = sa.bindparam(None, now - timedelta(days=policy.days), type_=UTCDateTime())
        counts = sa.or_(running, sa.and_(e.status != "cancelled", e.entered_at > since))
        other = f"re-entry: once per {policy.days} days, entered within the last {policy.days}"
    else:
        counts, other = running, ""
    inside = sa.func.max(sa.case((running, 1), else_=0)) == 1
    why = sa.case((inside, sa.literal("already inside this flow")), else_=sa.literal(other))
    return (
        sa.select(e.record_id, why.label("reason"))
        .where(e.flow_id == flow_id, counts)
        .group_by(e.record_id)
        .subquery("refused")
    )


def _has_enrollments(conn: sa.Connection, flow_id: int) -> bool:
    found = conn.execute(
        sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id).limit(1)
    ).first()
    return found is not None


def _not_among(
    conn: sa.Connection, record_id: sa.ColumnElement[int], refused: sa.Subquery
) -> sa.ColumnElement[bool]:
    """`record_id` is not one of `refused`'s: an anti-join each backend runs in one pass
    (PostgreSQL: NOT EXISTS, a hash anti-join; SQLite: NOT IN, one ephemeral index)."""
    if conn.dialect.name == "postgresql":
        return ~sa.exists().where(refused.c.record_id == record_id)
    return record_id.not_in(sa.select(refused.c.record_id))


def enter_set(
    conn: sa.Connection,
    *,
    flow_id: int,
    flow_version: int,
    reentry: ReentryPolicy,
    ids: RecordIds,
    trigger: str,
    now: datetime,
) -> tuple[int, int]:
    """The records of `ids` enter the flow (at `flow_version`) now, due now, as far as its
    re-entry policy allows: one `INSERT INTO enrollments ... SELECT` of those it lets in and,
    when the flow has enrollments already, one `INSERT INTO entry_decisions ... SELECT` of those
    it keeps out, with why (`store.entry_decisions.insert_refusals`). (How many records `ids`
    held, how many entered.)

    The records kept out are found once, from the flow's own enrollments (a flow started for
    the first time has none, and the selected records go straight in: no anti-join at all)."""
    at = sa.bindparam(None, now, type_=UTCDateTime())
    refused = _refusals(reentry, flow_id, now)
    if refused is not None and not _has_enrollments(conn, flow_id):
        refused = None
    source = sa.select(ids.c.id)
    kept_out = 0
    if refused is not None:
        kept_out = insert_refusals(
            conn, flow_id=flow_id, refused=refused, ids=ids, trigger=trigger, now=now
        )
        source = source.where(_not_among(conn, ids.c.id, refused))
    admitted = source.subquery("admitted")
    # preserve_rowcount: psycopg's rowcount of an INSERT ... SELECT is otherwise not kept.
    inserted = conn.execute(
        enrollments.insert()
        .execution_options(preserve_rowcount=True)
        .from_select(
            [
                "flow_id",
                "flow_version",
                "record_id",
                "status",
                "entered_at",
                "due_at",
                "updated_at",
            ],
            sa.select(
                sa.literal(flow_id),
                sa.literal(flow_version),
                admitted.c.id,
                sa.literal("active"),
                at,
                at,
                at,
            ),
        )
    ).rowcount
    return int(inserted) + int(kept_out), int(inserted)
