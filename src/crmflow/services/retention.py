"""Bounded history (docs/retention.md): each kind of history is kept for the days its setting
says (0: forever) and pruned in small batches, one short transaction of about
settings.retention_batch_rows rows each, by the worker in the background (`Pruner`) or by
`crmflow prune`.

Kinds: `step_runs` (step runs with their action logs) and `outbox` (messages that are over:
delivered, caught mail, failed, suppressed, cancelled) of runs that ended that many days ago,
counted first per flow and per run (`store.retention`) so that statistics and run pages stay
right; `record_changes` (never one the triggers or a paused flow have yet to read);
`not_entered` (why records did not enter flows; an archived flow also keeps only its newest
settings.retention_archived_not_entered); `webhook_receipts`; `notifications`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmflow.services.context import Context
from crmflow.settings import Settings
from crmflow.store import retention as store
from crmflow.store.database import Connection, read_connection
from crmflow.store.schema import entry_decisions, notifications, outbox, record_changes, step_runs

__all__ = ["KINDS", "PruneCursor", "PruneResult", "cutoffs", "prune"]

KINDS = (
    "step_runs",
    "outbox",
    "record_changes",
    "not_entered",
    "archived_not_entered",
    "webhook_receipts",
    "notifications",
)

_DAYS = {
    "step_runs": "retention_step_runs_days",
    "outbox": "retention_outbox_days",
    "record_changes": "retention_record_changes_days",
    "not_entered": "retention_not_entered_days",
    "webhook_receipts": "retention_webhook_receipts_days",
    "notifications": "retention_notifications_days",
}


def cutoffs(settings: Settings, now: datetime) -> dict[str, datetime | None]:
    """Per kind with a number of days, the time before which its rows go (None: kept
    forever)."""
    out: dict[str, datetime | None] = {}
    for kind, name in _DAYS.items():
        days = int(getattr(settings, name))
        out[kind] = now - timedelta(days=days) if days else None
    return out


@dataclass
class PruneCursor:
    """Where a pass that stopped on its time limit goes on from: the kinds done in this pass,
    and the last run looked at of the kinds pruned per run."""

    done: set[str] = field(default_factory=set)
    after: dict[str, int] = field(default_factory=dict)
    archived: list[int] | None = None  # the archived flows still to look at, this pass

    @property
    def finished(self) -> bool:
        return self.done >= set(KINDS)


@dataclass(frozen=True)
class PruneResult:
    deleted: dict[str, int]  # rows per kind
    finished: bool  # every kind has nothing left to prune (else: stopped on the time limit)
    busy: bool = False  # another worker was pruning (PostgreSQL): this one left it to it

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


# Runs looked at per batch of a kind pruned per run: `rows` times this many run ids at most.
_RUNS_SPAN = 5

# A batch: (connection, cutoff, rows, cursor, now) -> rows deleted, or None when nothing is left.
_Batch = Callable[[Connection, datetime, int, PruneCursor, datetime], int | None]


_BUSY = -1  # a batch found another worker holding the pruning lock (PostgreSQL)


def _runs_batch(
    ctx: Context, kind: str, before: datetime, rows: int, cursor: PruneCursor, now: datetime
) -> int | None:
    """One batch of a kind pruned per run (step runs, messages): the runs found on a read
    snapshot (no lock held while looking), then counted and deleted in a write transaction;
    _BUSY when another worker prunes."""
    table = step_runs if kind == "step_runs" else outbox
    after = cursor.after.get(kind, 0)
    with read_connection(ctx.engine) as conn:
        ids, upto = store.ended_runs_with(
            conn, table, before=before, after=after, rows=rows, span=rows * _RUNS_SPAN
        )
    if ids:
        delete = store.prune_step_runs if kind == "step_runs" else store.prune_messages
        with ctx.engine.begin() as conn:
            if not store.try_prune_lock(conn):
                return _BUSY
            deleted = delete(conn, ids, now=now)
    else:
        deleted = 0
    if upto is None:
        # Nothing past this range: the pass is over for this kind once these are gone.
        return deleted or None
    cursor.after[kind] = upto
    return deleted


def _changes(
    conn: Connection, before: datetime, rows: int, _: PruneCursor, _now: datetime
) -> int | None:
    ids = store.oldest_ids(
        conn, record_changes, "at", before=before, rows=rows, upto=store.change_bound(conn)
    )
    return store.delete_changes(conn, ids) or None


def _not_entered(
    conn: Connection, before: datetime, rows: int, _: PruneCursor, _now: datetime
) -> int | None:
    ids = store.oldest_ids(conn, entry_decisions, "at", before=before, rows=rows)
    return store.delete_entry_decisions(conn, ids) or None


def _notifications(
    conn: Connection, before: datetime, rows: int, _: PruneCursor, _now: datetime
) -> int | None:
    ids = store.oldest_ids(conn, notifications, "created_at", before=before, rows=rows)
    return store.delete_notifications(conn, ids) or None


def _receipts(
    conn: Connection, before: datetime, rows: int, _: PruneCursor, _now: datetime
) -> int | None:
    upto = store.receipts_before(conn, before, rows=rows)
    return store.delete_receipts(conn, upto) if upto is not None else None


_BATCHES: dict[str, _Batch] = {
    "record_changes": _changes,
    "not_entered": _not_entered,
    "webhook_receipts": _receipts,
    "notifications": _notifications,
}


def _archived_batch(ctx: Context, rows: int, cursor: PruneCursor) -> int | None:
    """One batch of the not-entered reasons of archived flows beyond their cap."""
    keep = ctx.settings.retention_archived_not_entered
    if not keep:
        return None
    while True:
        with ctx.engine.begin() as conn:
            if cursor.archived is None:
                cursor.archived = store.archived_flows(conn)
            if not cursor.archived:
                cursor.archived = None
                return None
            ids = store.excess_not_entered(conn, cursor.archived[0], keep=keep, rows=rows)
            if ids:
                return store.delete_entry_decisions(conn, ids)
        cursor.archived.pop(0)


def prune(
    ctx: Context,
    *,
    now: datetime | None = None,
    time_limit: float | None = None,
    cursor: PruneCursor | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> PruneResult:
    """Prune what is older than each kind's retention at `now` (default: the clock), a batch
    per transaction, until nothing is left or `time_limit` seconds have passed (then the next
    call with the same `cursor` goes on). On PostgreSQL a batch that finds another worker
    pruning stops the pass (`busy`)."""
    at = now or ctx.now()
    rows = ctx.settings.retention_batch_rows
    limits = cutoffs(ctx.settings, at)
    cursor = cursor if cursor is not None else PruneCursor()
    stop_at = time.monotonic() + time_limit if time_limit is not None else None
    deleted = dict.fromkeys(kinds, 0)
    for kind in kinds:
        while kind not in cursor.done:
            if stop_at is not None and time.monotonic() >= stop_at:
                return PruneResult(deleted, finished=False)
            before = limits.get(kind)
            if kind == "archived_not_entered":
                got = _archived_batch(ctx, rows, cursor)
            elif before is None:
                got = None
            elif kind in ("step_runs", "outbox"):
                got = _runs_batch(ctx, kind, before, rows, cursor, at)
                if got == _BUSY:
                    return PruneResult(deleted, finished=False, busy=True)
            else:
                with ctx.engine.begin() as conn:
                    if not store.try_prune_lock(conn):
                        return PruneResult(deleted, finished=False, busy=True)
                    got = _BATCHES[kind](conn, before, rows, cursor, at)
            if got is None:
                cursor.done.add(kind)
                cursor.after.pop(kind, None)
            else:
                deleted[kind] += got
    finished = cursor.done >= set(kinds)
    if finished:
        cursor.done.clear()
    return PruneResult(deleted, finished=finished)
