"""Records a saved query selects entering a flow, set-based: a flow's start lists when it starts,
and the records of a daily schedule at each run (`schedules`).

Without an entry condition the records enter with one `INSERT INTO enrollments ... SELECT`, and
those the re-entry policy keeps out get their reason with one `INSERT INTO entry_decisions ...
SELECT`; an entry condition (CEL) is judged in Python, a chunk of records at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from crmflow.engine.definition import ReentryPolicy
from crmflow.errors import ConfirmationRequiredError
from crmflow.services.context import Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import (
    Candidate,
    FlowRef,
    decide_entries,
    insert_enrollments,
    write_decisions,
)
from crmflow.services.queries import matching_ids
from crmflow.services.record_types import catalog_in
from crmflow.store import enrollments as repo
from crmflow.store.schema import enrollments, entry_decisions, flows
from crmflow.store.types import UTCDateTime

__all__ = ["enter_records", "enter_selected", "enter_start_lists", "flow_ref"]


_IDS_CHUNK = 5_000


def _ids_union(ctx: Context, conn: sa.Connection, names: Sequence[str]) -> sa.Subquery:
    selects = [matching_ids(ctx, conn, name) for name in names]
    union = sa.union(*selects) if len(selects) > 1 else selects[0]
    return union.subquery("ids")


def flow_ref(conn: sa.Connection, ctx: Context, flow_id: int) -> FlowRef:
    """The flow `flow_id` as entry decisions need it, at its current version."""
    row = conn.execute(
        sa.select(flows.c.key, flows.c.status, flows.c.current_version).where(flows.c.id == flow_id)
    ).one()
    [info] = repo.load_flows(
        conn, [(flow_id, row.current_version)], definitions_cache(ctx)
    ).values()
    return FlowRef(flow_id, row.key, row.status, row.current_version, info.definition)


def enter_start_lists(
    conn: sa.Connection, ctx: Context, flow_id: int, *, expected: int | None, now: datetime
) -> int:
    """The records of the flow's start lists enter it (on `conn`, the transaction that starts
    the flow): one `INSERT INTO enrollments ... SELECT`, due now, entered by the worker on its
    first claim. Returns how many entered. The lists must hold `expected` records (the count
    the user confirmed), with or without an entry condition: a different number means the lists
    changed since, ConfirmationRequiredError, and nothing happens (the caller's transaction is
    rolled back)."""
    flow = flow_ref(conn, ctx, flow_id)
    names = flow.definition.start_list_queries()
    if not names:
        return 0
    ids = _ids_union(ctx, conn, names)
    if flow.definition.entry_condition:
        selected = _selected(conn, ids)
        _check_confirmed(flow, expected, len(selected))
        return enter_records(conn, ctx, flow, selected, trigger="start_list", now=now)
    considered, entered = _enter_set(conn, flow, ids, trigger="start_list", now=now)
    _check_confirmed(flow, expected, considered)
    return entered


def _check_confirmed(flow: FlowRef, expected: int | None, found: int) -> None:
    """ConfirmationRequiredError when the start lists hold `found` records, not the `expected`
    the user confirmed."""
    if expected is None or found == expected:
        return
    raise ConfirmationRequiredError(
        f"the start list of {flow.key!r} holds {found} record(s) now, not {expected}; "
        f"check the list and confirm {found} to start",
        count=found,
        confirm_with=f"crmflow flows start {flow.key} --confirm {found}",
    )


def _selected(conn: sa.Connection, ids: sa.Subquery) -> list[int]:
    return [int(i) for i in conn.execute(sa.select(ids.c.id).order_by(ids.c.id)).scalars()]


def _refusals(policy: ReentryPolicy, flow_id: int, now: datetime) -> sa.Subquery | None:
    """The records the re-entry policy keeps out of `flow_id` now, with why: a subquery
    (record_id, reason) over the flow's own enrollments only (one row per record, whatever the
    records being considered), or None when the policy keeps nobody out."""
    e = enrollments.c
    running = e.status.in_(repo.RUNNING)
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


def enter_selected(
    conn: sa.Connection,
    ctx: Context,
    flow: FlowRef,
    ids: sa.Subquery,
    *,
    trigger: str,
    now: datetime,
) -> int:
    """The records of `ids` (a subquery with an `id` column) enter `flow` now, as far as its
    re-entry policy allows; the others get an entry decision. A flow with an entry condition
    needs CEL, which SQL cannot run: its records are judged in Python, a chunk at a time.
    How many entered."""
    if flow.definition.entry_condition:
        return enter_records(conn, ctx, flow, _selected(conn, ids), trigger=trigger, now=now)
    return _enter_set(conn, flow, ids, trigger=trigger, now=now)[1]


def _enter_set(
    conn: sa.Connection, flow: FlowRef, ids: sa.Subquery, *, trigger: str, now: datetime
) -> tuple[int, int]:
    """`enter_selected` set-based, for a flow without an entry condition: one
    `INSERT INTO enrollments ... SELECT` of the records the re-entry policy lets in and, when
    the flow has enrollments already, one `INSERT INTO entry_decisions ... SELECT` of those it
    keeps out. (How many records `ids` held, how many entered.)

    The records kept out are found once, from the flow's own enrollments (a flow started for
    the first time has none, and the selected records go straight in: no anti-join at all)."""
    at = sa.bindparam(None, now, type_=UTCDateTime())
    refused = _refusals(flow.definition.reentry, flow.id, now)
    if refused is not None and not _has_enrollments(conn, flow.id):
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
                    sa.literal(flow.id),
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
                sa.literal(flow.id),
                sa.literal(flow.version),
                admitted.c.id,
                sa.literal("active"),
                at,
                at,
                at,
            ),
        )
    ).rowcount
    if inserted:
        repo.notify_due(conn)
    return int(inserted) + int(kept_out), int(inserted)


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


def enter_records(
    conn: sa.Connection,
    ctx: Context,
    flow: FlowRef,
    record_ids: Sequence[int],
    *,
    trigger: str,
    now: datetime,
) -> int:
    """`record_ids` enter `flow` when the rules allow, a chunk at a time (one query loads a
    chunk's records, one inserts its enrollments); the others get an entry decision."""
    types = catalog_in(conn)
    entered = 0
    for i in range(0, len(record_ids), _IDS_CHUNK):
        chunk = record_ids[i : i + _IDS_CHUNK]
        snapshots = repo.load_records(conn, chunk, types)
        candidates = [
            Candidate(flow=flow, record_id=r, trigger=trigger, record=snapshots[r])
            for r in chunk
            if r in snapshots
        ]
        verdict = decide_entries(conn, ctx, candidates, now=now)
        write_decisions(conn, verdict.refused, now=now)
        entered += len(
            insert_enrollments(
                conn,
                [(c.flow.id, c.flow.version, c.record_id) for c in verdict.admitted],
                now=now,
                due_at=now,
            )
        )
    if entered:
        repo.notify_due(conn)
    return entered
