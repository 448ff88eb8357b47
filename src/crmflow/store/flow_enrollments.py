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
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crmflow.engine.definition import ReentryPolicy
from crmflow.store.enrollments import RUNNING, RUNNING_FLOWS
from crmflow.store.feed import UnheardChanges
from crmflow.store.flow_access import FlowFilter
from crmflow.store.queries import IdSelect
from crmflow.store.schema import enrollments, entry_decisions, flows, records
from crmflow.store.types import UTCDateTime

__all__ = [
    "RecordIds",
    "count_ids",
    "drop_refusals",
    "enrollments_ever",
    "enrollments_hearing",
    "enter_set",
    "inside_counts",
    "move_unentered",
    "record_ids",
    "refusals_page",
    "refuse_records",
    "selected_ids",
    "steps_on_other_versions",
    "thaw_candidates",
]

_IDS_CHUNK = 5_000

# A set of record ids (a subquery with an `id` column), not executed: what the set-based
# statements below enter or refuse, read in the caller's transaction.
RecordIds = sa.Subquery


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
    it keeps out, with why. (How many records `ids` held, how many entered.)

    The records kept out are found once, from the flow's own enrollments (a flow started for
    the first time has none, and the selected records go straight in: no anti-join at all)."""
    at = sa.bindparam(None, now, type_=UTCDateTime())
    refused = _refusals(reentry, flow_id, now)
    if refused is not None and not _has_enrollments(conn, flow_id):
        refused = None
    source = sa.select(ids.c.id)
    kept_out = 0
    if refused is not None:
        kept_out = conn.execute(
            entry_decisions.insert()
            .execution_options(preserve_rowcount=True)
            .from_select(
                ["flow_id", "record_id", "trigger", "reason", "at"],
                sa.select(
                    sa.literal(flow_id),
                    refused.c.record_id,
                    sa.literal(trigger),
                    refused.c.reason,
                    at,
                ).where(refused.c.record_id.in_(sa.select(ids.c.id))),
            )
        ).rowcount
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


def refuse_records(
    conn: sa.Connection,
    flow_id: int,
    ids: RecordIds | Sequence[int],
    *,
    trigger: str,
    reason: str,
    now: datetime,
) -> None:
    """Each record of `ids` (a set of ids, or a list of record ids: those of them that exist)
    gets the entry decision `reason`, in one `INSERT ... SELECT`."""
    if isinstance(ids, sa.Subquery):
        selected: sa.Select[Any] = sa.select(ids.c.id)
    else:
        selected = sa.select(records.c.id).where(records.c.id.in_(ids))
    at = sa.bindparam(None, now, type_=UTCDateTime())
    refused = selected.subquery("refused")
    conn.execute(
        entry_decisions.insert().from_select(
            ["flow_id", "record_id", "trigger", "reason", "at"],
            sa.select(
                sa.literal(flow_id), refused.c[0], sa.literal(trigger), sa.literal(reason), at
            ),
        )
    )


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


# -- per flow: how many are inside, and what a resume moves ---------------------------------------


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
