"""The change feed as the triggers read it: its cursor (`feed_cursors`, the one place that writes
the table) and the record changes after it (`record_changes`, written by `store.records`).

The cursor is three rows: FEED, the last change id the feed has passed, and while a gap in the
ids is waited for (PostgreSQL, see `engine.feed_cursor.settle`) GAP_HORIZON and GAP_BELOW. A
feed batch holds them locked for its whole transaction (`lock_cursor`), and so does a flow's
freeze and resume (`lock_feed_position`): the changes the feed passed while a flow was frozen are
the ones it did not hear (`unheard_changes`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.engine.trigger_matching import Change
from crmflow.store.schema import feed_cursors, flows, record_changes

__all__ = [
    "FEED",
    "GAP_BELOW",
    "GAP_HORIZON",
    "HeardWindow",
    "UnheardChanges",
    "as_change",
    "cursor_positions",
    "listened_types",
    "load_changes",
    "lock_cursor",
    "lock_feed_position",
    "move_cursor",
    "newest_change_id",
    "read_feed",
    "read_heard",
    "reading_from",
    "unheard_changes",
    "unheard_of",
]

FEED = "record_changes"
# PostgreSQL only: a gap in the change ids that is being waited for (see `settle`).
GAP_HORIZON = "record_changes:gap_horizon"  # xmax of the snapshot that first saw the gap
GAP_BELOW = "record_changes:gap_below"  # the highest change id that snapshot saw
_IDS_CHUNK = 5_000

# `SELECT record_changes.record_id ... WHERE <the changes a frozen flow did not hear>`, not
# executed: for the statements of a resume (the records it looks at, their changes).
UnheardChanges = sa.Select[Any]


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(feed_cursors)


def cursor_positions(conn: sa.Connection, names: Collection[str]) -> dict[str, int]:
    """The positions of the cursor rows `names` that exist, unlocked (a look, not a batch)."""
    query = sa.select(feed_cursors.c.name, feed_cursors.c.position).where(
        feed_cursors.c.name.in_(names)
    )
    return {r.name: int(r.position) for r in conn.execute(query)}


def newest_change_id(conn: sa.Connection) -> int | None:
    """The highest change id there is (None: the table is empty)."""
    top = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar_one()
    return None if top is None else int(top)


def lock_cursor(conn: sa.Connection, now: datetime) -> dict[str, int] | None:
    """The feed's cursor rows, locked for this transaction; None when another worker holds them
    (it is ingesting right now: nothing for us to do)."""
    names = [FEED, GAP_HORIZON, GAP_BELOW]
    conn.execute(
        _insert(conn).on_conflict_do_nothing(index_elements=["name"]),
        [{"name": n, "position": 0, "updated_at": now} for n in names],
    )
    query = sa.select(feed_cursors.c.name, feed_cursors.c.position).where(
        feed_cursors.c.name.in_(names)
    )
    rows = {r.name: int(r.position) for r in conn.execute(query.with_for_update(skip_locked=True))}
    return rows if len(rows) == len(names) else None


def reading_from(conn: sa.Connection, position: int) -> int:
    """Where the feed reads from: after `position`, or from the start on SQLite when the table
    was emptied (pruned) since: SQLite gives max(id) + 1 to a new row, so ids start over below
    the cursor, and those changes must still be read."""
    if conn.dialect.name != "sqlite" or not position:
        return position
    top = newest_change_id(conn)
    return 0 if top is None or top < position else position


def read_feed(
    conn: sa.Connection, position: int, limit: int
) -> tuple[list[sa.Row[Any]], tuple[int, int] | None]:
    """The changes after `position` in id order (id, record type and kind: what it takes to
    know whether anyone listens), and (PostgreSQL) the xmin / xmax of the very snapshot they were
    read with (one statement, so one snapshot); None on SQLite."""
    c = record_changes.c
    after = (
        sa.select(c.id, c.record_type, c.kind)
        .where(c.id > position)
        .order_by(record_changes.c.id)
        .limit(limit)
        .subquery("c")
    )
    if conn.dialect.name != "postgresql":
        rows = conn.execute(sa.select(after).order_by(after.c.id)).all()
        return list(rows), None

    def xid(fn: str) -> sa.ColumnElement[int]:
        snapshot = getattr(sa.func, fn)(sa.func.pg_current_snapshot())
        return sa.cast(sa.cast(snapshot, sa.Text), sa.BigInteger)

    snap = sa.select(xid("pg_snapshot_xmin").label("lo"), xid("pg_snapshot_xmax").label("hi"))
    snap_q = snap.subquery("s")
    query = (
        sa.select(snap_q.c.lo, snap_q.c.hi, after)
        .select_from(snap_q.outerjoin(after, sa.true()))
        .order_by(after.c.id)
    )
    found = conn.execute(query).all()
    lo, hi = int(found[0].lo), int(found[0].hi)
    return [r for r in found if r.id is not None], (lo, hi)


def listened_types(conn: sa.Connection) -> set[str]:
    """The record types some flow that is not a draft runs on: those whose changes may be
    heard (by a trigger, by records inside, or as a deletion that ends them)."""
    query = sa.select(flows.c.record_type).where(flows.c.status != "draft").distinct()
    return {str(t) for t in conn.execute(query).scalars()}


@dataclass(frozen=True)
class HeardWindow:
    """What `read_heard` found after the cursor."""

    wanted: list[sa.Row[Any]]  # id, record_type, kind, k: the changes someone may hear
    settled_to: int  # every change up to this id was read: the cursor may move here
    passed: int  # how many changes there are up to `settled_to`
    more: bool  # more changes may be waiting after `settled_to`


def read_heard(
    conn: sa.Connection,
    position: int,
    limit: int,
    *,
    span: int,
    any_kind: Collection[str],
    deleted: Collection[str],
) -> HeardWindow | None:
    """The changes after `position` that someone may hear, at most `limit`, among the next
    `span` changes: those of the record types `any_kind`, and the deletions of `deleted`'s. The
    others are filtered out in the database: no row of theirs is sent, so a feed that no flow
    listens to passes `span` changes per statement, not `limit` rows read one by one.

    Each row carries `k`, its place among the changes after `position` (1 for the first):
    how many changes a cursor moved to right before it passes. None on PostgreSQL when the ids
    read are not consecutive: a gap that may still commit, for `read_feed` and
    `engine.feed_cursor.settle` to wait for (on SQLite a gap is a rollback or a pruned row).

    A first statement counts the window and the changes in it someone may hear: when there are
    none (a worker's own changes that nothing listens to, the common case), that is the answer,
    without numbering the window (five times the cost)."""
    c = record_changes.c
    after = (
        sa.select(c.id, c.record_type, c.kind)
        .where(c.id > position)
        .order_by(c.id)
        .limit(span)
        .subquery("a")
    )

    def hears(change: Any) -> sa.ColumnElement[bool]:
        return sa.or_(
            change.record_type.in_(sorted(any_kind)),
            sa.and_(change.kind == "deleted", change.record_type.in_(sorted(deleted))),
        )

    probe = sa.select(
        sa.func.count(), sa.func.max(after.c.id), sa.func.count().filter(hears(after.c))
    )
    count, top, heard = conn.execute(probe).one()
    if not count:
        return HeardWindow([], position, 0, False)
    if conn.dialect.name == "postgresql" and int(top) - position != count:
        return None
    if not heard:
        return HeardWindow([], int(top), count, count == span)
    # Numbered once cut to `span` rows (numbered first, the database might number them all).
    number = sa.func.row_number().over(order_by=after.c.id).label("k")
    window = sa.select(after, number).cte("w")
    w = window.c
    sizes = sa.select(sa.func.count().label("n"), sa.func.max(w.id).label("top")).subquery("s")
    query = (
        sa.select(sizes.c.n, sizes.c.top, w.id, w.record_type, w.kind, w.k)
        .select_from(sizes.outerjoin(window, hears(w)))
        .order_by(w.id)
        .limit(limit)
    )
    rows: list[sa.Row[Any]] = list(conn.execute(query).all())  # type: ignore[arg-type]
    # Read again by this statement (on PostgreSQL, changes may have committed since the first).
    count, top = int(rows[0].n), rows[0].top
    if not count:  # pruned meanwhile
        return HeardWindow([], position, 0, False)
    if conn.dialect.name == "postgresql" and int(top) - position != count:
        return None
    wanted = [r for r in rows if r.id is not None]
    if len(wanted) == limit:
        return HeardWindow(wanted, int(wanted[-1].id), int(wanted[-1].k), True)
    return HeardWindow(wanted, int(top), count, count == span)


def move_cursor(conn: sa.Connection, values: dict[str, int], *, now: datetime) -> None:
    """Set the cursor rows `values` (name -> position), locked by `lock_cursor`."""
    conn.execute(
        feed_cursors.update()
        .where(feed_cursors.c.name == sa.bindparam("n"))
        .values(position=sa.bindparam("p"), updated_at=now),
        [{"n": n, "p": p} for n, p in values.items()],
    )


def load_changes(conn: sa.Connection, ids: Sequence[int]) -> list[Change]:
    """The changes `ids` (seen in this transaction's read of the feed), whole, in id order."""
    out: list[Change] = []
    for i in range(0, len(ids), _IDS_CHUNK):
        query = (
            sa.select(record_changes)
            .where(record_changes.c.id.in_(ids[i : i + _IDS_CHUNK]))
            .order_by(record_changes.c.id)
        )
        out += [as_change(r) for r in conn.execute(query)]
    return out


def as_change(row: sa.Row[Any]) -> Change:
    """A row of `record_changes` as the triggers read it."""
    return Change(
        id=row.id,
        record_id=row.record_id,
        record_type=row.record_type,
        kind=row.kind,
        before=dict(row.before or {}),
        after=dict(row.after or {}),
        actor_id=row.actor_id,
        at=row.at,
    )


def lock_feed_position(conn: sa.Connection, now: datetime) -> int:
    """The change feed's position (the last change id it has passed), its cursor row locked
    until this transaction ends: a feed batch holding it is waited for (its changes then count
    as passed), and the next one cannot start before this transaction ends. A feed that never
    ran gets its row, at 0, so that its first batch too waits for, or is waited for by, this
    transaction (`on conflict do nothing`: the feed makes the row the same way)."""
    insert = _insert(conn).on_conflict_do_nothing(index_elements=["name"])
    conn.execute(insert, {"name": FEED, "position": 0, "updated_at": now})
    position = conn.execute(
        sa.select(feed_cursors.c.position).where(feed_cursors.c.name == FEED).with_for_update()
    ).scalar_one()
    return int(position)


def unheard_changes(
    conn: sa.Connection,
    record_type: str,
    paused_at: datetime,
    paused_position: int | None,
    *,
    now: datetime,
    deleted_only: bool,
) -> UnheardChanges:
    """The changes of `record_type` records that a flow frozen since `paused_at` did not hear:
    those the change feed passed between the freeze and now, ids after `paused_position` (the
    feed's position when the flow froze) up to the feed's position now, read and locked here
    (`lock_feed_position`). `deleted_only`: the deletions only (a flow whose records inside do
    not hear changes still ends them when their record is deleted). Not executed: see
    `services.lifecycle._unheard` for why ids, and why the cursor row is locked.

    A flow frozen before the position was kept (`paused_position` None, before migration 0006)
    falls back to the changes made since the freeze (`at >= paused_at`)."""
    position = lock_feed_position(conn, now)
    query = sa.select(record_changes.c.record_id).where(
        record_changes.c.record_type == record_type,
        record_changes.c.id <= position,
    )
    if paused_position is not None:
        query = query.where(record_changes.c.id > paused_position)
    else:
        query = query.where(record_changes.c.at >= paused_at)
    if deleted_only:
        query = query.where(record_changes.c.kind == "deleted")  # it ends them in any flow
    return query


def unheard_of(
    conn: sa.Connection, unheard: UnheardChanges, record_ids: Sequence[int]
) -> list[Change]:
    """The unheard changes of the records `record_ids`, whole, in id order."""
    ids = unheard.where(record_changes.c.record_id.in_(record_ids)).with_only_columns(
        record_changes.c.id
    )
    rows = conn.execute(
        sa.select(record_changes)
        .where(record_changes.c.id.in_(ids.scalar_subquery()))
        .order_by(record_changes.c.id)
    ).all()
    return [as_change(r) for r in rows]
