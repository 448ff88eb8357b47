"""Bounded history (docs/retention.md): each kind of history is kept for the days its setting
says (0: forever) and pruned in small batches, one short transaction of about
settings.retention_batch_rows rows each, by the worker in the background (`Pruner`) or by
`crmflow prune`.

Kinds: `step_runs` (step runs with their action logs) and `outbox` (messages that are over:
delivered, caught mail, failed, suppressed, cancelled) of runs that ended that many days ago,
counted first per flow and per run (`store.retention`) so that statistics and run pages stay
right; `record_changes` (never one the triggers or a paused flow have yet to read);
`not_entered` (why records did not enter flows; an archived flow also keeps only its newest
settings.retention_archived_not_entered); `webhook_receipts`; `notifications`; `jobs`
(background jobs that finished).

On PostgreSQL step runs, record changes, not-entered reasons and notifications are partitioned
by month (store.partitions): a pass first makes the coming months' partitions, then, per kind,
drops each month's partition that is wholly older than the cutoff and holds nothing to keep
(step runs: the runs that also have rows in another month go row by row first, then the
month's are counted and its partition dropped in one transaction); what is left goes row by
row in batches as on SQLite.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmflow.services.context import Context
from crmflow.settings import Settings
from crmflow.store import jobs as job_store
from crmflow.store import partitions
from crmflow.store import retention as store
from crmflow.store.database import Connection, OperationalError, read_connection
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
    "jobs",
)

_DAYS = {
    "step_runs": "retention_step_runs_days",
    "outbox": "retention_outbox_days",
    "record_changes": "retention_record_changes_days",
    "not_entered": "retention_not_entered_days",
    "webhook_receipts": "retention_webhook_receipts_days",
    "notifications": "retention_notifications_days",
    "jobs": "retention_jobs_days",
}

# The kinds kept in a table partitioned by month on PostgreSQL (store.partitions).
_PARTITIONED = {
    "step_runs": "step_runs",
    "record_changes": "record_changes",
    "not_entered": "entry_decisions",
    "notifications": "notifications",
}

_log = logging.getLogger(__name__)


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
    months_made: bool = False  # this pass made the coming months' partitions (PostgreSQL)
    months_done: set[str] = field(default_factory=set)  # kinds whose old months were dropped
    # A month found holding rows to keep, and until when it is not looked at again.
    months_kept: dict[str, datetime] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.done >= set(KINDS)


@dataclass(frozen=True)
class PruneResult:
    deleted: dict[str, int]  # rows per kind
    finished: bool  # every kind has nothing left to prune (else: stopped on the time limit)
    busy: bool = False  # another worker was pruning (PostgreSQL): this one left it to it
    dropped: tuple[str, ...] = ()  # the month partitions dropped (PostgreSQL)

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


def _jobs(
    conn: Connection, before: datetime, rows: int, _: PruneCursor, _now: datetime
) -> int | None:
    return job_store.prune_finished(conn, before, rows=rows) or None


_BATCHES: dict[str, _Batch] = {
    "jobs": _jobs,
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


def _make_months(ctx: Context, at: datetime) -> None:
    """Make the partitions of the current month and the next ones that are missing
    (PostgreSQL); a lock not had in time leaves it to the next pass."""
    try:
        with ctx.engine.begin() as conn:
            if not store.try_prune_lock(conn):
                return
            made = partitions.ensure_months(conn, at)
    except OperationalError as exc:
        _log.warning("history partitions not made, tried again next pass: %s", exc)
        return
    if made:
        _log.info("history partitions made: %s", ", ".join(made))


# A month found holding rows to keep is looked at again this much later.
_KEPT_RECHECK = timedelta(hours=6)

_DONE, _STOPPED = "done", "stopped"


def _month_droppable(
    conn: Connection, kind: str, month: partitions.Month, before: datetime
) -> bool:
    if kind == "step_runs":
        return store.step_runs_month_droppable(conn, month, before) and not store.spanning_runs(
            conn, month, rows=1
        )
    if kind == "record_changes":
        return store.changes_month_droppable(conn, month, before)
    return month.end <= before


def _drop_month(conn: Connection, kind: str, month: partitions.Month, now: datetime) -> int:
    if kind == "step_runs":
        return store.drop_step_runs_month(conn, month, now=now)
    if kind == "record_changes":
        return store.drop_changes_month(conn, month)
    if kind == "not_entered":
        return store.drop_not_entered_month(conn, month)
    return store.drop_notifications_month(conn, month)


def _drop_months(
    ctx: Context,
    kind: str,
    before: datetime,
    now: datetime,
    cursor: PruneCursor,
    dropped: list[str],
    stop_at: float | None,
) -> tuple[int, str]:
    """Drop, oldest first, the month partitions of `kind` (PostgreSQL) wholly before `before`
    that hold nothing to keep; the rows that went and how it ended: _DONE, _STOPPED (on the
    time limit) or busy (another worker prunes). A step-run month first loses, row by row, the
    runs that also have step runs in another month (whole runs, counted as always), so that
    what it holds is whole runs, counted in the transaction that drops it."""
    rows = ctx.settings.retention_batch_rows
    with read_connection(ctx.engine) as conn:
        table = _PARTITIONED[kind]
        if not partitions.is_partitioned(conn, table):
            return 0, _DONE
        old = [m for m in partitions.months(conn, table) if m.end <= before]
    gone = 0
    for month in old:
        if cursor.months_kept.get(month.name, now) > now:
            continue
        if kind == "step_runs":
            with read_connection(ctx.engine) as conn:
                if not store.step_runs_month_droppable(conn, month, before):
                    cursor.months_kept[month.name] = now + _KEPT_RECHECK
                    continue
                spanning = store.spanning_runs(conn, month)
            per = max(1, rows // 10)  # runs per batch: about `rows` step runs
            for at in range(0, len(spanning), per):
                if stop_at is not None and time.monotonic() >= stop_at:
                    return gone, _STOPPED
                with ctx.engine.begin() as conn:
                    if not store.try_prune_lock(conn):
                        return gone, "busy"
                    gone += store.prune_step_runs(conn, spanning[at : at + per], now=now)
        try:
            with ctx.engine.begin() as conn:
                if not store.try_prune_lock(conn):
                    return gone, "busy"
                if not _month_droppable(conn, kind, month, before):
                    cursor.months_kept[month.name] = now + _KEPT_RECHECK
                    if kind == "record_changes":
                        break  # the later months' changes are newer still
                    continue
                gone += _drop_month(conn, kind, month, now)
        except OperationalError as exc:
            _log.warning("partition %s not dropped, tried again next pass: %s", month.name, exc)
            return gone, _DONE
        dropped.append(month.name)
        cursor.months_kept.pop(month.name, None)
        if stop_at is not None and time.monotonic() >= stop_at:
            return gone, _STOPPED
    return gone, _DONE


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
    pruning stops the pass (`busy`); a pass first makes the coming months' partitions and
    drops, per kind, the old months that hold nothing to keep (`_drop_months`)."""
    at = now or ctx.now()
    rows = ctx.settings.retention_batch_rows
    limits = cutoffs(ctx.settings, at)
    cursor = cursor if cursor is not None else PruneCursor()
    stop_at = time.monotonic() + time_limit if time_limit is not None else None
    deleted = dict.fromkeys(kinds, 0)
    dropped: list[str] = []
    postgres = ctx.engine.dialect.name == "postgresql"
    if postgres and not cursor.months_made:
        _make_months(ctx, at)
        cursor.months_made = True
    for kind in kinds:
        before = limits.get(kind)
        if postgres and kind in _PARTITIONED and kind not in cursor.months_done:
            if before is not None and kind not in cursor.done:
                went, how = _drop_months(ctx, kind, before, at, cursor, dropped, stop_at)
                deleted[kind] += went
                if how != _DONE:
                    busy = how == "busy"
                    return PruneResult(deleted, finished=False, busy=busy, dropped=tuple(dropped))
            cursor.months_done.add(kind)
        while kind not in cursor.done:
            if stop_at is not None and time.monotonic() >= stop_at:
                return PruneResult(deleted, finished=False, dropped=tuple(dropped))
            if kind == "archived_not_entered":
                got = _archived_batch(ctx, rows, cursor)
            elif before is None:
                got = None
            elif kind in ("step_runs", "outbox"):
                got = _runs_batch(ctx, kind, before, rows, cursor, at)
                if got == _BUSY:
                    return PruneResult(deleted, finished=False, busy=True, dropped=tuple(dropped))
            else:
                with ctx.engine.begin() as conn:
                    if not store.try_prune_lock(conn):
                        return PruneResult(
                            deleted, finished=False, busy=True, dropped=tuple(dropped)
                        )
                    got = _BATCHES[kind](conn, before, rows, cursor, at)
            if got is None:
                cursor.done.add(kind)
                cursor.after.pop(kind, None)
            else:
                deleted[kind] += got
    finished = cursor.done >= set(kinds)
    if finished:
        cursor.done.clear()
        cursor.months_done.clear()
        cursor.months_made = False
    return PruneResult(deleted, finished=finished, dropped=tuple(dropped))
