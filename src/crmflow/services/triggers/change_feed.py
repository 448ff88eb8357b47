"""The feed of record changes, consumed once, in order, by one worker at a time.

`ingest_changes` reads `record_changes` after the cursor `feed_cursors['record_changes']`, a
batch at a time, hands the changes that some flow listens to to `record_changes.handle_changes`
and moves the cursor in the transaction that did the work, so a crash redoes the batch or none
of it. On PostgreSQL the cursor never passes a change that may still commit (see `settle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.services.context import Actor, Context
from crmflow.services.triggers.record_changes import Change, handle_changes, listeners
from crmflow.services.users import ensure_system_user
from crmflow.store.database import read_connection
from crmflow.store.schema import feed_cursors, record_changes

__all__ = ["FEED", "as_change", "ingest_changes", "settle"]


FEED = "record_changes"
_IDS_CHUNK = 5_000
# PostgreSQL only: a gap in the change ids that is being waited for (see `settle`).
_GAP_HORIZON = "record_changes:gap_horizon"  # xmax of the snapshot that first saw the gap
_GAP_BELOW = "record_changes:gap_below"  # the highest change id that snapshot saw


def ingest_changes(ctx: Context, *, now: datetime | None = None, limit: int = 500) -> int:
    """Consume the record changes written since the last call, `limit` per transaction; how many
    were consumed. Safe to call from many workers at once (one of them ingests at a time)."""
    if _caught_up(ctx):
        return 0
    at = now or ctx.now()
    system = ensure_system_user(ctx)
    total = 0
    while True:
        consumed, more = _ingest_batch(ctx, system, now=at, limit=limit)
        total += consumed
        if not more:
            return total


def _caught_up(ctx: Context) -> bool:
    """Whether the feed has nothing after its cursor and no gap is being waited for: two reads
    of one row each, no lock and no write (what a worker's loop costs when nothing changed)."""
    with read_connection(ctx.engine) as conn:
        query = sa.select(feed_cursors.c.name, feed_cursors.c.position).where(
            feed_cursors.c.name.in_([FEED, _GAP_HORIZON])
        )
        cursor = {r.name: int(r.position) for r in conn.execute(query)}
        if len(cursor) < 2 or cursor[_GAP_HORIZON]:
            return False
        top = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar_one()
    # An emptied table under a cursor that moved is not "caught up": on SQLite ids start over,
    # and `_ingest_batch` moves the cursor back to 0 before they do.
    return int(top or 0) == cursor[FEED]


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _cursor_rows(conn: sa.Connection, now: datetime) -> dict[str, int] | None:
    """The feed's cursor rows, locked for this transaction; None when another worker holds them
    (it is ingesting right now: nothing for us to do)."""
    names = [FEED, _GAP_HORIZON, _GAP_BELOW]
    conn.execute(
        _insert(conn, feed_cursors).on_conflict_do_nothing(index_elements=["name"]),
        [{"name": n, "position": 0, "updated_at": now} for n in names],
    )
    query = sa.select(feed_cursors.c.name, feed_cursors.c.position).where(
        feed_cursors.c.name.in_(names)
    )
    rows = {r.name: int(r.position) for r in conn.execute(query.with_for_update(skip_locked=True))}
    return rows if len(rows) == len(names) else None


def _read_feed(
    conn: sa.Connection, position: int, limit: int
) -> tuple[list[sa.Row[Any]], int, int]:
    """The changes after `position` in id order (id, record type and kind: what it takes to
    know whether anyone listens), and (PostgreSQL) the xmin / xmax of the very snapshot they were
    read with (one statement, so one snapshot)."""
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
        return list(rows), 0, 0

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
    return [r for r in found if r.id is not None], lo, hi


def settle(
    ids: Sequence[int], position: int, gap: tuple[int, int], *, snapshot: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """How far the cursor may move over `ids` (read after `position`), and the gap state.

    Why: on PostgreSQL ids come from a sequence when a row is inserted, but become visible when
    its transaction commits, so id 41 may commit after id 42. A reader that moved its cursor past
    42 would never see 41. So the cursor stops at the first gap in the ids. A gap is either a
    transaction still in flight or one that rolled back (gone for good); to tell them apart,
    the first time a gap is seen we keep the xmax of that snapshot (every transaction that could
    hold a missing id has an xid below it: it drew the id before the higher id we saw was
    drawn, after its first write to the record) and the highest id seen. Once a later snapshot's
    xmin reaches that horizon, all those transactions have ended; a missing id up to the kept
    id that is still not visible then never will be, and the cursor moves past it. Nothing is
    ever skipped that could still commit, and no change is read twice, so no de-duplication is
    needed. The price: a gap behind a long transaction holds the feed until it ends.

    SQLite has one writer at a time and ids are given in commit order: a gap is a rollback.
    `gap` is (horizon, highest id) or (0, 0); `snapshot` is (xmin, xmax), None on SQLite.
    """
    horizon, below = gap
    cursor = position
    stopped = False
    for change_id in ids:
        if change_id != cursor + 1 and snapshot is not None:
            passed = horizon > 0 and snapshot[0] >= horizon and change_id - 1 <= below
            if not passed:
                stopped = True
                break
        cursor = change_id
    if not stopped:
        return cursor, (0, 0)
    assert snapshot is not None
    if horizon > 0 and snapshot[0] < horizon:
        return cursor, gap  # still waiting for the transactions of the gap we know about
    return cursor, (snapshot[1], max(ids))


def _ingest_batch(ctx: Context, system: Actor, *, now: datetime, limit: int) -> tuple[int, bool]:
    with ctx.engine.begin() as conn:
        cursor = _cursor_rows(conn, now)
        if cursor is None:
            return 0, False
        position = cursor[FEED]
        if conn.dialect.name == "sqlite" and position:
            # SQLite gives max(id) + 1 to a new row: if the table was emptied (pruned), ids
            # start over below the cursor, and those changes must still be read.
            top = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar_one()
            if top is None or int(top) < position:
                position = 0
        rows, lo, hi = _read_feed(conn, position, limit)
        snapshot = (lo, hi) if conn.dialect.name == "postgresql" else None
        gap = (cursor[_GAP_HORIZON], cursor[_GAP_BELOW])
        new_position, new_gap = settle([r.id for r in rows], position, gap, snapshot=snapshot)
        settled = [r for r in rows if r.id <= new_position]
        if settled:
            # Only the changes someone listens to are loaded whole (their JSON decoded) and
            # handled; the others are passed over with the cursor.
            kinds = {(r.record_type, r.kind) for r in settled}
            heard = listeners(conn, ctx, {t for t, _ in kinds})
            kept = {k for k in kinds if heard.hear(*k)}
            wanted = [r.id for r in settled if (r.record_type, r.kind) in kept] if kept else []
            if wanted:
                handle_changes(conn, ctx, system, _load_changes(conn, wanted), heard, now=now)
        values = {FEED: new_position, _GAP_HORIZON: new_gap[0], _GAP_BELOW: new_gap[1]}
        if values != {FEED: cursor[FEED], _GAP_HORIZON: gap[0], _GAP_BELOW: gap[1]}:
            conn.execute(
                feed_cursors.update()
                .where(feed_cursors.c.name == sa.bindparam("n"))
                .values(position=sa.bindparam("p"), updated_at=now),
                [{"n": n, "p": p} for n, p in values.items()],
            )
    more = bool(rows) and len(rows) == limit and new_position == rows[-1].id
    return len(settled), more


def _load_changes(conn: sa.Connection, ids: Sequence[int]) -> list[Change]:
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
