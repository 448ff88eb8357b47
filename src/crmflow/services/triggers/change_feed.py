"""The feed of record changes, consumed once, in order, by one worker at a time.

`ingest_changes` reads `record_changes` after the cursor `feed_cursors['record_changes']`, a
batch at a time, hands the changes that some flow listens to to `record_changes.handle_changes`
and moves the cursor in the transaction that did the work, so a crash redoes the batch or none
of it. On PostgreSQL the cursor never passes a change that may still commit (see
`engine.feed_cursor.settle`).

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

from crmflow.engine.feed_cursor import NO_GAP, gap_after_cut, settle
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
from crmflow.services.users import system_actor
from crmflow.store.database import Connection, connection_lost, read_connection
from crmflow.store.feed import (
    FEED,
    GAP_BELOW,
    GAP_HORIZON,
    HeardWindow,
    cursor_positions,
    listened_types,
    load_changes,
    lock_cursor,
    move_cursor,
    newest_change_id,
    read_feed,
    read_heard,
    reading_from,
)
from crmflow.store.trigger_failures import (
    FEED_INDEX,
    FEED_TYPE,
    LAST_ERROR_CHARS,
    TriggerFailure,
    clear,
    failing,
)

__all__ = ["FEED", "FIRST_CHUNK", "ingest_changes"]

log = logging.getLogger("crmflow.triggers")


FIRST_CHUNK = 16  # at most, the changes handled in a call before the time they take is known
_GROWTH = 8  # a chunk of changes is at most this many times the one before
# After a transaction cut by the time limit, the lock is left free this long before the next:
# SQLite's busy handler tries a waiting writer again at least every 100 ms, so each writer
# waiting for the lock gets it between two of the feed's transactions.
_PAUSE_AFTER_CUT = 0.1
_FEED_TYPES = CHANGE_TRIGGERS | {FEED_TYPE}  # the trigger types of the feed's failures
# A transaction passes up to this many times `limit` changes that nobody listens to (filtered
# in SQL, no row sent), and handles at most `limit` that someone may hear.
SKIP_SPAN = 20


def ingest_changes(ctx: Context, *, now: datetime | None = None, limit: int = 500) -> int:
    """Consume the record changes written since the last call, at most `limit` per transaction
    and per settings.batch_time_limit_ms of handling; how many were consumed. Safe to call from
    many workers at once (one of them ingests at a time)."""
    if _caught_up(ctx):
        return 0
    at = now or ctx.now()
    total, careful, pace = 0, False, _Pace.starting(ctx)
    while True:
        try:
            consumed, more, cut = _ingest_batch(
                ctx, now=at, limit=limit, pace=pace, careful=careful
            )
        except Exception as exc:
            if careful or connection_lost(exc):
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
        cursor = cursor_positions(conn, [FEED, GAP_HORIZON])
        if len(cursor) < 2 or cursor[GAP_HORIZON]:
            return False
        top = newest_change_id(conn)
    # An emptied table under a cursor that moved is not "caught up": on SQLite ids start over,
    # and `_ingest_batch` moves the cursor back to 0 before they do.
    return int(top or 0) == cursor[FEED]


def _ingest_batch(
    ctx: Context, *, now: datetime, limit: int, pace: _Pace, careful: bool
) -> tuple[int, bool, bool]:
    """One write transaction of the feed: up to `limit` changes, fewer when handling them
    reaches settings.batch_time_limit_ms (see `_handle_in_chunks`). How many changes it
    consumed, whether more may be waiting right now, and whether it was cut by the time limit.
    `careful`: each chunk in a savepoint, so that a flow whose handling raises fails alone.

    Cut short, the cursor moves to the last change handled, and the gap state stays right
    (`engine.feed_cursor.gap_after_cut`)."""
    with ctx.engine.begin() as conn:
        # The write transaction (on SQLite, the database's write lock) is held from here.
        deadline = time.monotonic() + ctx.settings.batch_time_limit_ms / 1000
        cursor = lock_cursor(conn, now)
        if cursor is None:
            return 0, False, False
        position = reading_from(conn, cursor[FEED])
        gap = (cursor[GAP_HORIZON], cursor[GAP_BELOW])
        # Only the changes someone listens to are read (filtered in SQL), loaded whole (their
        # JSON decoded) and handled; the others are passed over with the cursor.
        window = _heard_window(conn, ctx, position, limit)
        if window is not None:
            new_position, new_gap = window.settled_to, NO_GAP
            settled = window.wanted
            full = window.more
        else:  # PostgreSQL, a gap in the ids: every id read, for `settle`
            rows, snapshot = read_feed(conn, position, limit)
            new_position, new_gap = settle([r.id for r in rows], position, gap, snapshot=snapshot)
            settled = [r for r in rows if r.id <= new_position]
            full = bool(rows) and len(rows) == limit and new_position == rows[-1].id
        handled_to = new_position
        if settled:
            kinds = {(r.record_type, r.kind) for r in settled}
            heard = listeners(conn, ctx, {t for t, _ in kinds})
            kept = {k for k in kinds if heard.hear(*k)}
            wanted = [r.id for r in settled if (r.record_type, r.kind) in kept] if kept else []
            done = _handle_in_chunks(
                conn,
                ctx,
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
                handled_to = wanted[done] - 1
        new_gap = gap_after_cut(handled_to, new_position, gap, new_gap)
        values = {FEED: handled_to, GAP_HORIZON: new_gap[0], GAP_BELOW: new_gap[1]}
        if values != {FEED: cursor[FEED], GAP_HORIZON: gap[0], GAP_BELOW: gap[1]}:
            move_cursor(conn, values, now=now)
    cut = handled_to < new_position
    if window is None:
        consumed = sum(1 for r in settled if r.id <= handled_to)
    elif cut:  # the changes before the first one left
        consumed = next(r.k for r in window.wanted if r.id > handled_to) - 1
    else:
        consumed = window.passed
    return consumed, cut or full, cut


def _heard_window(conn: Connection, ctx: Context, position: int, limit: int) -> HeardWindow | None:
    """`read_heard` with what the flows listen to now (see `Listeners.hear`): up to `limit`
    changes someone may hear among the next SKIP_SPAN x `limit`."""
    heard = listeners(conn, ctx, listened_types(conn))
    return read_heard(
        conn,
        position,
        limit,
        span=SKIP_SPAN * limit,
        any_kind=set(heard.watchers) | heard.hearing,
        deleted=heard.running,
    )


def _handle_in_chunks(
    conn: Connection,
    ctx: Context,
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
    first of a call is small, see `_Pace.starting`), at most _GROWTH times that chunk (changes
    that cost little followed by costly ones overshoot by less) and `limit`. `pace` carries over
    to the next transaction of the call, so that a fast feed takes its 500 changes in one chunk,
    as before there were chunks (each chunk costs some queries of its own). What chunks cannot
    bound: a chunk sized from cheap changes that meets costly ones (records that pass through
    no flow, then a runaway flow's) lasts as long as those take, at most _GROWTH times the
    chunk before.

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
    # Who acts on the changes: read here, only when some are heard (a busy worker's look mostly
    # passes over its own changes, which nothing hears).
    system = system_actor(conn, now=ctx.now())
    failures = _FeedFailures.read(conn, heard, careful=careful)
    done = 0
    while done < len(wanted):
        started = time.monotonic()
        ids = wanted[done : done + pace.next_chunk(deadline - started, cap=limit)]
        failures.handle(conn, ctx, system, load_changes(conn, ids), heard, now=now)
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

    last: int
    per_change: float | None = None

    @classmethod
    def starting(cls, ctx: Context) -> _Pace:
        """The pace of a call that has handled nothing yet. Its first chunk is FIRST_CHUNK, or
        as many changes as the batch time limit holds action time limits if fewer: a record
        that enters runs at least one template or condition, which a runaway flow makes last
        its whole budget (by default 2 s / 1 s: 2 changes, not 16 s of lock)."""
        limits = ctx.settings.batch_time_limit_ms // ctx.settings.action_time_limit_ms
        return cls(last=max(1, min(FIRST_CHUNK, limits)))

    def next_chunk(self, left: float, *, cap: int) -> int:
        """How many changes the next chunk takes: the first, then as many as fit in the `left`
        seconds at the last chunk's pace, at most _GROWTH times the last chunk and `cap`, at
        least one."""
        if self.per_change is None:
            return min(self.last, cap)
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
    a time (`Listeners.restricted_to`: that flow's watchers and records inside), each in a
    savepoint: the other flows' work for those changes is kept; for a flow that raises again,
    its records that a trigger fired get the entry decision "could not enter", the trigger is
    marked failing with the change and the error (logged with the traceback, said in the flow's
    history the first time), and the feed goes on. A flow known to be failing is handled on its
    own from the start, carefully (so a flow that keeps failing costs one pass more, not a redo
    of every batch); a successful pass in which it took part clears its failure, and it rejoins
    the others. Its failures are tried again with the next change, not after a backoff: the
    feed cannot wait for one flow.

    Why not always a savepoint: on SQLite every page a savepoint's writes touch is also copied
    to a statement journal, which made a feed of entering records 30 % slower; nothing is
    paid for the isolation until something fails."""

    keys: dict[int, str]  # the flows that may act on the batch: id -> key
    rows: dict[int, list[TriggerFailure]]  # the failing ones: their feed failures
    careful: bool  # each chunk in a savepoint (a batch done again after it raised)

    @classmethod
    def read(cls, conn: Connection, heard: Listeners, *, careful: bool) -> _FeedFailures:
        found = failing(conn, sorted(heard.flows)) if heard.flows else {}
        mine = {
            flow_id: [f for f in rows if f.trigger_type in _FEED_TYPES]
            for flow_id, rows in found.items()
        }
        return cls(heard.flows, {f: rows for f, rows in mine.items() if rows}, careful)

    def handle(
        self,
        conn: Connection,
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
                if connection_lost(exc):
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
                if connection_lost(exc):
                    raise
                self._failed(conn, flow_id, chunk, one, exc, now=now)
        self._ran(conn, took_part, now=now)

    def _failed(
        self,
        conn: Connection,
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

    def _ran(self, conn: Connection, flow_ids: set[int], *, now: datetime) -> None:
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


def _changes_named(chunk: Sequence[Change]) -> str:
    first, last = chunk[0].id, chunk[-1].id
    return f"change {first}" if first == last else f"changes {first} to {last}"
