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
from crmflow.store.database import Connection
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


# A batch: (connection, cutoff, rows, cursor, now) -> rows deleted, or None when nothing is left.
_Batch = Callable[[Connection, datetime, int, PruneCursor, datetime], int | None]


def _runs_batch(table_name: str) -> _Batch:
    table = step_runs if table_name == "step_runs" else outbox
    delete = store.prune_step_runs if table_name == "step_runs" else store.prune_messages

    def batch(
        conn: Connection, before: datetime, rows: int, cursor: PruneCursor, now: datetime
    ) -> int | None:
        after = cursor.after.get(table_name, 0)
        ids = store.ended_runs_with(conn, table, before=before, after=after, rows=rows)
        if not ids:
            return None
        cursor.after[table_name] = ids[-1]
        return delete(conn, ids, now=now)

    return batch


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
    "step_runs": _runs_batch("step_runs"),
    "outbox": _runs_batch("outbox"),
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
            if kind == "archived_not_entered":
                got = _archived_batch(ctx, rows, cursor)
            else:
                before = limits[kind]
                if before is None:
                    got = None
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
