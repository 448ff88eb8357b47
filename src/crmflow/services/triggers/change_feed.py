"""The feed of record changes, consumed once, in order, by one worker at a time.

`ingest_changes` reads `record_changes` after the cursor `feed_cursors['record_changes']`, a
batch at a time, hands the changes that some flow listens to to `record_changes.handle_changes`
and moves the cursor in the transaction that did the work, so a crash redoes the batch or none
of it. On PostgreSQL the cursor never passes a change that may still commit (see `settle`).

A batch is handled in chunks and stops once settings.batch_time_limit_ms has passed, the cursor
after the last change handled (`_handle_in_chunks`): however slow the first steps of the records
that enter, the write transaction (on SQLite, the lock every writer waits for) is short. A flow
whose handling raises fails alone: its work for those changes is rolled back, its records get
the reason they did not enter, its change trigger is marked failing on the flow's page, and the
other flows and the feed go on (`_FeedFailures`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.services.context import Actor, Context
from crmflow.services.triggers.failures import error_text, trigger_failed, trigger_runs_again
from crmflow.services.triggers.record_changes import (
    CHANGE_TRIGGERS,
    Change,
    Listeners,
    could_not_enter,
    handle_changes,
    listeners,
)
from crmflow.services.users import ensure_system_user
from crmflow.store.database import read_connection
from crmflow.store.schema import feed_cursors, record_changes
from crmflow.store.trigger_failures import (
    FEED_INDEX,
    FEED_TYPE,
    LAST_ERROR_CHARS,
    TriggerFailure,
    clear,
    failing,
)

__all__ = ["FEED", "FIRST_CHUNK", "as_change", "ingest_changes", "settle"]

log = logging.getLogger("crmflow.triggers")


FEED = "record_changes"
_IDS_CHUNK = 5_000
# PostgreSQL only: a gap in the change ids that is being waited for (see `settle`).
_GAP_HORIZON = "record_changes:gap_horizon"  # xmax of the snapshot that first saw the gap
_GAP_BELOW = "record_changes:gap_below"  # the highest change id that snapshot saw
FIRST_CHUNK = 16  # changes handled in a call before the time they take is known
_GROWTH = 8  # a chunk of changes is at most this many times the one before
# After a transaction cut by the time limit, the lock is left free this long before the next:
# SQLite's busy handler tries a waiting writer again at least every 100 ms, so each writer
# waiting for the lock gets it between two of the feed's transactions.
_PAUSE_AFTER_CUT = 0.1
_FEED_TYPES = CHANGE_TRIGGERS | {FEED_TYPE}  # the trigger types of the feed's failures


def ingest_changes(ctx: Context, *, now: datetime | None = None, limit: int = 500) -> int:
    """Consume the record changes written since the last call, at most `limit` per transaction
    and per settings.batch_time_limit_ms of handling; how many were consumed. Safe to call from
    many workers at once (one of them ingests at a time)."""
    if _caught_up(ctx):
        return 0
    at = now or ctx.now()
    system = ensure_system_user(ctx)
    total, careful, pace = 0, False, _Pace()
    while True:
        try:
            consumed, more, cut = _ingest_batch(
                ctx, system, now=at, limit=limit, pace=pace, careful=careful
            )
        except Exception as exc:
            if careful or _connection_lost(exc):
                raise
            # Rolled back whole: done again with a savepoint per chunk and per flow, to find
            # the flow at fault and keep the others' work (see `_FeedFailures`).
            log.warning("change feed: a batch raised, done again flow by flow: %s", error_text(exc))
            careful = True
            continue
        total, careful = total + consumed, False
        if not more:
            return total
        if cut:
            time.sleep(_PAUSE_AFTER_CUT)


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


def _ingest_batch(
    ctx: Context, system: Actor, *, now: datetime, limit: int, pace: _Pace, careful: bool
) -> tuple[int, bool, bool]:
    """One write transaction of the feed: up to `limit` changes, fewer when handling them
        reaches settings.batch_time_limit_ms (see `_handle_in_chunks`). How many changes it
        consumed, whether more may be waiting right now, and whether it was cut by the time limit.
    `careful`: each chunk in a savepoint, so that a flow whose handling raises fails alone.

        Cut short, the cursor moves to the last change handled. The gap state of `settle` stays
        right: a gap that `settle` found beyond its stop is beyond the cursor's too (the same gap,
        the same horizon); a gap it passed between the cursor and its stop was passed with the
        state it had, which is kept for the next read to pass it again."""
    with ctx.engine.begin() as conn:
        # The write transaction (on SQLite, the database's write lock) is held from here.
        deadline = time.monotonic() + ctx.settings.batch_time_limit_ms / 1000
        cursor = _cursor_rows(conn, now)
        if cursor is None:
            return 0, False, False
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
        handled_to = new_position
        if settled:
            # Only the changes someone listens to are loaded whole (their JSON decoded) and
            # handled; the others are passed over with the cursor.
            kinds = {(r.record_type, r.kind) for r in settled}
            heard = listeners(conn, ctx, {t for t, _ in kinds})
            kept = {k for k in kinds if heard.hear(*k)}
            wanted = [r.id for r in settled if (r.record_type, r.kind) in kept] if kept else []
            done = _handle_in_chunks(
                conn,
                ctx,
                system,
                wanted,
                heard,
                now=now,
                limit=limit,
                deadline=deadline,
                pace=pace,
                careful=careful,
            )
            if done < len(wanted):
                # Cut by the time limit: the cursor stays right before the first change left
                # (the changes nobody listens to before it are consumed with the others).
                ids = [r.id for r in settled]
                handled_to = ids[ids.index(wanted[done]) - 1]
        if handled_to < new_position and new_gap == (0, 0):
            # `settle` passed gaps that the cursor, cut short, has not reached yet: the gap
            # state that let it pass them stays (a gap beyond the stop is the same gap).
            new_gap = gap
        values = {FEED: handled_to, _GAP_HORIZON: new_gap[0], _GAP_BELOW: new_gap[1]}
        if values != {FEED: cursor[FEED], _GAP_HORIZON: gap[0], _GAP_BELOW: gap[1]}:
            conn.execute(
                feed_cursors.update()
                .where(feed_cursors.c.name == sa.bindparam("n"))
                .values(position=sa.bindparam("p"), updated_at=now),
                [{"n": n, "p": p} for n, p in values.items()],
            )
    cut = handled_to < new_position
    full = bool(rows) and len(rows) == limit and new_position == rows[-1].id
    return sum(1 for r in settled if r.id <= handled_to), cut or full, cut


def _handle_in_chunks(
    conn: sa.Connection,
    ctx: Context,
    system: Actor,
    wanted: Sequence[int],
    heard: Listeners,
    *,
    now: datetime,
    limit: int,
    deadline: float,
    pace: _Pace,
    careful: bool,
) -> int:
    """Handle the changes `wanted` (ids, in order) chunk after chunk until they are all handled
    or `deadline` (`time.monotonic()`) has passed; how many were handled (at least one chunk).

    Why chunks: records that enter a flow run their first steps here, under the write
    transaction, each template and condition within action_time_limit_ms but not the whole: a
    runaway flow over 500 changes would hold the lock for minutes. The deadline is checked
    between chunks, so a transaction lasts at most the batch limit plus one chunk. Each chunk
    is sized by `pace` to fit in the time left at the time per change of the chunk before (the
    first of a call takes FIRST_CHUNK), at most _GROWTH times that chunk (changes that cost
    little followed by costly ones overshoot by less) and `limit`. `pace` carries over to the
    next transaction of the call, so that a fast feed takes its 500 changes in one chunk, as
    before there were chunks (each chunk costs some queries of its own).

    Why a chunk boundary changes nothing: it is a batch boundary such as the feed always had
    (every `limit` changes, and wherever a call stopped), inside one transaction that sees its
    own writes. Every rule reads the database again at each chunk: the re-entry policy and the
    loop guard count the enrollments the earlier chunks inserted and cancelled, exactly as the
    next batch would; an enrollment that an earlier chunk woke is locked and moved again from
    the state that chunk wrote. The enrollments an earlier chunk created entered at `now` (the
    same for every chunk): `_wake_enrolled` tells them only of changes made after that instant
    (`c.at > entered_at`), never of the change that made them enter (in that earlier chunk) nor
    of one made before they entered; a change stamped after `now` is news to them, as it would
    be in the next batch."""
    if not wanted:
        return 0
    failures = _FeedFailures.read(conn, heard, careful=careful)
    done = 0
    while done < len(wanted):
        started = time.monotonic()
        ids = wanted[done : done + pace.next_chunk(deadline - started, cap=limit)]
        failures.handle(conn, ctx, system, _load_changes(conn, ids), heard, now=now)
        done += len(ids)
        at = time.monotonic()
        pace.took(len(ids), at - started)
        if at >= deadline:
            break
    return done


@dataclass
class _Pace:
    """How fast the changes of one `ingest_changes` call were handled: the size of the last
    chunk and the seconds per change it took (None before the first)."""

    last: int = FIRST_CHUNK
    per_change: float | None = None

    def next_chunk(self, left: float, *, cap: int) -> int:
        """How many changes the next chunk takes: FIRST_CHUNK at first, then as many as fit in
        the `left` seconds, at most _GROWTH times the last chunk and `cap`, at least one."""
        if self.per_change is None:
            return min(FIRST_CHUNK, cap)
        fits = int(left / self.per_change) if self.per_change > 0 else cap
        return max(1, min(fits, self.last * _GROWTH, cap))

    def took(self, changes: int, seconds: float) -> None:
        self.last, self.per_change = changes, seconds / changes


@dataclass
class _FeedFailures:
    """The flows whose handling of changes is failing (`store.trigger_failures` rows of change
    trigger types, or FEED_INDEX), and how a chunk of changes is handled so that one failing
    flow fails alone.

    A chunk is handled for all flows at once. When that raises (a bug, the database refusing
    one flow's write: not a template or condition over its budget, which fails its own action
    inside the engine), the transaction is rolled back and done again `careful`ly: each chunk in
    a savepoint, which, when it raises, is rolled back and the chunk handled again one flow at
    a time (`Listeners.restricted_to`: that flow's watchers and
    records inside), each in a savepoint: the other flows' work for those changes is kept; for
    a flow that raises again, its records that a trigger fired get the entry decision "could
    not enter", the trigger is marked failing with the change and the error (logged with the
    traceback, said in the flow's history the first time), and the feed goes on. A flow known
    to be failing is handled on its own from the start, carefully (so a flow that keeps failing
    costs one pass more, not a redo of every batch); a successful pass in which it took part
    clears its failure, and it rejoins the others. Its failures are tried again with the next
    change, not after a backoff: the feed cannot wait for one flow.

    Why not always a savepoint: on SQLite every page a savepoint's writes touch is also copied
    to a statement journal, which made a feed of entering records 30 % slower; nothing is
    paid for the isolation until something fails."""

    keys: dict[int, str]  # the flows that may act on the batch: id -> key
    rows: dict[int, list[TriggerFailure]]  # the failing ones: their feed failures
    careful: bool  # each chunk in a savepoint (a batch done again after it raised)

    @classmethod
    def read(cls, conn: sa.Connection, heard: Listeners, *, careful: bool) -> _FeedFailures:
        found = failing(conn, sorted(heard.flows)) if heard.flows else {}
        mine = {
            flow_id: [f for f in rows if f.trigger_type in _FEED_TYPES]
            for flow_id, rows in found.items()
        }
        return cls(heard.flows, {f: rows for f, rows in mine.items() if rows}, careful)

    def handle(
        self,
        conn: sa.Connection,
        ctx: Context,
        system: Actor,
        chunk: list[Change],
        heard: Listeners,
        *,
        now: datetime,
    ) -> None:
        """Handle `chunk` (see the class): no exception leaves but the database's going away."""
        if not chunk:  # pruned since it was read (PostgreSQL): nothing left to handle
            return
        if not self.careful and not self.rows:
            handle_changes(conn, ctx, system, chunk, heard, now=now)  # raises: done again
            return
        alone = set(self.rows)
        took_part: set[int] = set()
        together = heard.restricted_to(self.keys.keys() - alone) if alone else heard
        if together.only is None or together.only:
            try:
                with conn.begin_nested():
                    took_part = handle_changes(conn, ctx, system, chunk, together, now=now)
            except Exception as exc:
                if _connection_lost(exc):
                    raise
                log.warning(
                    "change feed: handling %s raised (%s); handled again one flow at a time",
                    _changes_named(chunk),
                    error_text(exc),
                )
                alone = set(self.keys)
        for flow_id in sorted(alone):
            one = heard.restricted_to([flow_id])
            try:
                with conn.begin_nested():
                    took_part |= handle_changes(conn, ctx, system, chunk, one, now=now)
            except Exception as exc:
                if _connection_lost(exc):
                    raise
                self._failed(conn, flow_id, chunk, one, exc, now=now)
        self._ran(conn, took_part, now=now)

    def _failed(
        self,
        conn: sa.Connection,
        flow_id: int,
        chunk: list[Change],
        one: Listeners,
        exc: Exception,
        *,
        now: datetime,
    ) -> None:
        error = error_text(exc)
        reason = f"could not enter: {error}; start it by hand once the flow is fixed"
        fired = could_not_enter(conn, chunk, one, reason[:LAST_ERROR_CHARS], now=now)
        if fired:
            change_id, index, trigger = fired[0]
            more = len({c for c, _, _ in fired}) - 1
            where = f"change {change_id}" + (f" (and {more} more)" if more else "")
            kind: str = trigger.type
        else:  # it raised while records inside the flow heard the chunk's changes
            index, kind, where = FEED_INDEX, FEED_TYPE, _changes_named(chunk)
        failure = trigger_failed(
            conn,
            flow_id=flow_id,
            flow_name=self.keys[flow_id],
            trigger_index=index,
            trigger_type=kind,
            error=f"{where}: {error}",
            exc=exc,
            now=now,
            retry_at=now,
            retried="tried again with the next change",
        )
        kept = [f for f in self.rows.get(flow_id, []) if f.trigger_index != index]
        self.rows[flow_id] = [*kept, failure]

    def _ran(self, conn: sa.Connection, flow_ids: set[int], *, now: datetime) -> None:
        """The flows `flow_ids` took part in a chunk without raising: failing no more."""
        for flow_id in sorted(flow_ids & self.rows.keys()):
            recovered = self.rows.pop(flow_id)
            clear(conn, [(flow_id, f.trigger_index) for f in recovered])
            for f in recovered:
                trigger_runs_again(
                    conn,
                    flow_id=flow_id,
                    flow_name=self.keys[flow_id],
                    trigger_index=f.trigger_index,
                    trigger_type=f.trigger_type,
                    now=now,
                )


def _connection_lost(exc: Exception) -> bool:
    """The database went away: nothing else will work either (the worker retries the batch)."""
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _changes_named(chunk: Sequence[Change]) -> str:
    first, last = chunk[0].id, chunk[-1].id
    return f"change {first}" if first == last else f"changes {first} to {last}"


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
