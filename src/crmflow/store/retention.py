"""The history that retention prunes (`services.retention`, docs/retention.md), a batch at a time
on the caller's short transaction, and the same rows read for `crmflow archive export`.

- Step runs and outbox messages go per run (enrollment), whole, once the run ended before the
  cutoff; what goes is counted first, in the same transaction, into `flow_history_counts` (per
  flow) and `run_summaries` (per run), the one place that writes them, so that the statistics
  and a run's page stay right.
- Record changes, not-entered reasons and notifications go oldest first (in id order, which is
  the order they were written in), up to the first one that is recent enough; record changes
  only up to what the change feed and every paused flow have read, and never the newest (on
  SQLite a new id is the highest + 1: the ids must not start over below the feed's cursor).
- Webhook receipts go by their time.
- On PostgreSQL, a whole month of step runs, record changes, not-entered reasons or
  notifications goes by dropping its partition (store.partitions), once nothing in it is to be
  kept: `*_month_droppable` say when, `drop_*_month` count what goes first (step runs: per flow
  and per run, as above) and drop it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.database import read_connection
from crmflow.store.entry_decisions import delete_entry_decisions
from crmflow.store.feed import FEED
from crmflow.store.notifications import forget_reads
from crmflow.store.outbox import delete_of_runs
from crmflow.store.partitions import Month, drop_month, rows_in
from crmflow.store.records import delete_changes
from crmflow.store.schema import (
    enrollments,
    entry_decisions,
    feed_cursors,
    flow_history_counts,
    flows,
    notifications,
    outbox,
    record_changes,
    run_summaries,
    step_runs,
    webhook_receipts,
)
from crmflow.store.step_runs import delete_runs_history
from crmflow.store.tasks import delete_notifications as remove_notifications
from crmflow.store.webhook_receipts import delete_received_up_to

__all__ = [
    "EXPORT_KINDS",
    "FINAL_MESSAGES",
    "OVER",
    "archived_flows",
    "change_bound",
    "changes_month_droppable",
    "delete_changes",
    "delete_entry_decisions",
    "delete_notifications",
    "delete_receipts",
    "drop_changes_month",
    "drop_not_entered_month",
    "drop_notifications_month",
    "drop_step_runs_month",
    "ended_runs_with",
    "excess_not_entered",
    "history_counts",
    "history_rows",
    "oldest_ids",
    "prune_messages",
    "prune_step_runs",
    "receipts_before",
    "run_summary",
    "snapshot",
    "spanning_runs",
    "step_runs_month_droppable",
    "try_prune_lock",
    "turn_ref",
]

# A run that ended (its history may go) and a message that is over (it will not change again).
OVER = ("finished", "left", "cancelled")
FINAL_MESSAGES = ("delivered", "caught", "failed", "suppressed", "cancelled", "partly_sent")


# PostgreSQL: the advisory lock a pruning batch holds, so that two workers never count the same
# rows (an arbitrary constant: "crmflow retention").
_PRUNE_LOCK = 0x63726D7265746E


def try_prune_lock(conn: sa.Connection) -> bool:
    """Take the pruning lock for the transaction (PostgreSQL; SQLite's write transaction is one
    writer already): False when another worker holds it."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_PRUNE_LOCK))).scalar())


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# -- runs' step runs and messages ----------------------------------------------------------------


def _history_of(table: sa.Table) -> tuple[sa.ColumnElement[int], sa.ColumnElement[bool]]:
    """(the run's column, which of the table's rows may go) for step runs or outbox."""
    if table is step_runs:
        return step_runs.c.enrollment_id, sa.true()
    # `|| ''`: not by the status index, which PostgreSQL would scan whole for each run (a
    # bitmap AND with the run's index): each run's few messages are read by its run id.
    return outbox.c.enrollment_id, (outbox.c.status + "").in_(FINAL_MESSAGES)


def ended_runs_with(
    conn: sa.Connection,
    table: sa.Table,
    *,
    before: datetime,
    after: int,
    rows: int,
    span: int,
) -> tuple[list[int], int | None]:
    """Runs with ids in (`after`, `after + span`], in order, that ended before `before` and
    still have rows in `table` (step_runs or outbox) that may go: whole runs, about `rows` rows
    of them (a run with more rows than that alone); and the run id the next look goes on
    after (None: there is no run past this range). Each look reads at most `span` runs, by
    their ids (not by the status index, which would read every run that ever ended)."""
    run, may_go = _history_of(table)
    e = enrollments.c
    top = after + span
    found = conn.execute(
        sa.select(run, sa.func.count())
        .select_from(enrollments.join(table, e.id == run))
        .where(e.id > after, e.id <= top, may_go, e.finished_at < before)
        # `|| ''`: no index on status (see above); the ids' range is the way in.
        .where((e.status + "").in_(OVER))
        .group_by(run)
        .order_by(run)
        .limit(rows + 1)  # a run has a row at least: more runs than this is past `rows`
    ).all()
    ids: list[int] = []
    taken = 0
    for run_id, count in found:
        if ids and taken + int(count) > rows:
            return ids, ids[-1]  # the next batch goes on from here
        ids.append(int(run_id))
        taken += int(count)
    newest = conn.execute(sa.select(sa.func.max(e.id))).scalar()
    return ids, (top if newest is not None and int(newest) > top else None)


def _count_into(conn: sa.Connection, counts: Sequence[tuple[int, str, str, str, int]]) -> None:
    if not counts:
        return
    insert = _insert(conn, flow_history_counts)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["flow_id", "kind", "key", "outcome"],
            set_={"count": flow_history_counts.c.count + insert.excluded["count"]},
        ),
        [
            {"flow_id": f, "kind": kind, "key": key, "outcome": outcome, "count": n}
            for f, kind, key, outcome, n in counts
        ],
    )


def _email_statuses(conn: sa.Connection, ids: Sequence[int]) -> dict[int, list[str]]:
    """Each run's emails' statuses in run order, as the run views read them (a test message
    that went is `test`)."""
    o = outbox.c
    went = sa.and_(o.test, o.status.in_(("delivered", "caught")))
    status = sa.case((went, "test"), else_=o.status)
    out: dict[int, list[str]] = {}
    query = (
        sa.select(o.enrollment_id, status)
        .where(o.enrollment_id.in_(ids), o.kind == "email")
        .order_by(o.enrollment_id, o.step_run, o.id)
    )
    for eid, value in conn.execute(query):
        out.setdefault(int(eid), []).append(str(value))
    return out


def _summarise(
    conn: sa.Connection,
    ids: Sequence[int],
    *,
    step_runs_gone: dict[int, int],
    messages_gone: dict[int, int],
    now: datetime,
    flow_of: dict[int, int],
) -> None:
    """Add what went of these runs (of the flows `flow_of` says) to their `run_summaries` rows
    (made with their emails' statuses by the first pruning of either kind)."""
    if not flow_of:
        return
    emails = _email_statuses(conn, ids)
    insert = _insert(conn, run_summaries)
    r = run_summaries.c
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["enrollment_id"],
            set_={
                "step_runs": r.step_runs + insert.excluded.step_runs,
                "messages": r.messages + insert.excluded.messages,
                "pruned_at": insert.excluded.pruned_at,
            },
        ),
        [
            {
                "enrollment_id": eid,
                "flow_id": flow_of[eid],
                "step_runs": step_runs_gone.get(eid, 0),
                "messages": messages_gone.get(eid, 0),
                "email_statuses": emails.get(eid, []),
                "pruned_at": now,
            }
            for eid in flow_of
        ],
    )


def turn_ref(action_key: str | None, action_index: int | None) -> str:
    """How `flow_history_counts` names an assign_owner action among its step's (`outcome` of
    kind `turns`): by its key when it has one (a long key by a hash of it), else its index."""
    if action_key:
        if len(action_key) <= 14:
            return f"k:{action_key}"
        return "h:" + hashlib.sha256(action_key.encode()).hexdigest()[:14]
    return f"i:{action_index}"


def _step_run_counts(
    conn: sa.Connection, ids: Sequence[int], *, month: Month | None = None
) -> tuple[dict[tuple[int, str, str, str], int], dict[int, int], dict[int, int]]:
    """What the step runs of the runs `ids` (or, given `month`, every step run of that month's
    partition, read in one scan) count, read once and counted here (a batch's rows are few;
    faster than the database's JSON functions): per (flow, kind, key, outcome) the
    runs that went through each step (`through`: done or failed, or an end step reached, as
    `store.step_runs.count_gone_through` counts them), step runs per step and status (`step`),
    actions per state (`action`) and the turns each assign_owner action took (`turns`: done, by
    step and `turn_ref`, which `store.owner_assignment.turns_taken` adds); the step runs per
    run; each run's flow."""
    s, e = step_runs.c, enrollments.c
    query: sa.Executable = (
        sa.select(e.flow_id, s.enrollment_id, s.step_key, s.step_type, s.status, s.actions)
        .select_from(step_runs.join(enrollments, e.id == s.enrollment_id))
        .where(s.enrollment_id.in_(ids))
    )
    if month is not None:
        query = sa.text(
            "SELECT e.flow_id, s.enrollment_id, s.step_key, s.step_type, s.status, s.actions"
            f" FROM {_in(month)} s JOIN enrollments e ON e.id = s.enrollment_id"
        )
    out: dict[tuple[int, str, str, str], int] = {}
    per_run: dict[int, int] = {}
    flow_of: dict[int, int] = {}
    through: set[tuple[int, str, int]] = set()

    def add(key: tuple[int, str, str, str]) -> None:
        out[key] = out.get(key, 0) + 1

    rows = conn.execute(query, execution_options={"yield_per": 5000})
    for f, eid, key, step_type, status, actions in rows:
        flow, run, step = int(f), int(eid), str(key)
        per_run[run] = per_run.get(run, 0) + 1
        flow_of[run] = flow
        add((flow, "step", step, str(status)))
        if status in ("done", "failed") or (step_type == "end" and status == "ended"):
            through.add((flow, step, run))
        for a in actions or ():
            state = a.get("status")
            if state is None:
                continue
            add((flow, "action", "", str(state)))
            if a.get("type") == "assign_owner" and state == "done":
                add((flow, "turns", step, turn_ref(a.get("key"), a.get("index"))))
    for flow, step, _ in through:
        add((flow, "through", step, ""))
    return out, per_run, flow_of


def prune_step_runs(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Count and delete the step runs of the runs `ids` (whole runs that ended); how many."""
    if not ids:
        return 0
    counts, per_run, flow_of = _step_run_counts(conn, ids)
    _count_into(conn, [(*key, n) for key, n in counts.items()])
    _summarise(conn, ids, step_runs_gone=per_run, messages_gone={}, now=now, flow_of=flow_of)
    delete_runs_history(conn, ids)
    return sum(per_run.values())


def prune_messages(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Count and delete the outbox messages that are over of the runs `ids`; how many."""
    if not ids:
        return 0
    o, e = outbox.c, enrollments.c
    mine = sa.and_(o.enrollment_id.in_(ids), o.status.in_(FINAL_MESSAGES))
    counts: dict[tuple[int, str, str, str], int] = {}
    per_run: dict[int, int] = {}
    flow_of: dict[int, int] = {}
    for f, eid, kind, status, n in conn.execute(
        sa.select(e.flow_id, o.enrollment_id, o.kind, o.status, sa.func.count())
        .select_from(outbox.join(enrollments, e.id == o.enrollment_id))
        .where(mine)
        .group_by(e.flow_id, o.enrollment_id, o.kind, o.status)
    ):
        key = (int(f), "message", str(kind), str(status))
        counts[key] = counts.get(key, 0) + int(n)
        per_run[int(eid)] = per_run.get(int(eid), 0) + int(n)
        flow_of[int(eid)] = int(f)
    _count_into(conn, [(*key, n) for key, n in counts.items()])
    _summarise(conn, ids, step_runs_gone={}, messages_gone=per_run, now=now, flow_of=flow_of)
    delete_of_runs(conn, ids, FINAL_MESSAGES)
    return sum(per_run.values())


def history_counts(conn: sa.Connection, flow_id: int) -> dict[tuple[str, str, str], int]:
    """What pruning took away of a flow's history, by (kind, key, outcome)."""
    c = flow_history_counts.c
    return {
        (str(kind), str(key), str(outcome)): int(n)
        for kind, key, outcome, n in conn.execute(
            sa.select(c.kind, c.key, c.outcome, c.count).where(c.flow_id == flow_id)
        )
    }


def run_summary(conn: sa.Connection, enrollment_ids: Sequence[int]) -> dict[int, sa.Row[Any]]:
    """The summaries of these runs whose history was pruned, by run."""
    if not enrollment_ids:
        return {}
    r = run_summaries.c
    return {
        int(row.enrollment_id): row
        for row in conn.execute(sa.select(run_summaries).where(r.enrollment_id.in_(enrollment_ids)))
    }


# -- oldest first: record changes, not-entered reasons, notifications ----------------------------


def oldest_ids(
    conn: sa.Connection,
    table: sa.Table,
    at: str,
    *,
    before: datetime,
    rows: int,
    upto: int | None = None,
) -> list[int]:
    """The ids of `table`'s oldest rows (in id order, at most `up to` when given), up to the
    first one whose `at` column is not before `before`: at most `rows` of them."""
    query = sa.select(table.c.id, table.c[at]).order_by(table.c.id).limit(rows)
    if upto is not None:
        query = query.where(table.c.id <= upto)
    ids: list[int] = []
    for row_id, when in conn.execute(query):
        if when >= before:
            break
        ids.append(int(row_id))
    return ids


def change_bound(conn: sa.Connection) -> int:
    """The highest record change id that may go: read by the change feed and by every paused
    flow's catch-up, and not the newest change (0: none may go)."""
    position = conn.execute(
        sa.select(feed_cursors.c.position).where(feed_cursors.c.name == FEED)
    ).scalar()
    if not position:
        return 0
    bound = int(position)
    frozen = conn.execute(
        sa.select(sa.func.min(flows.c.paused_feed_position)).where(flows.c.status == "paused")
    ).scalar()
    if frozen is not None:
        bound = min(bound, int(frozen))
    newest = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar()
    return min(bound, int(newest or 0) - 1)


def delete_notifications(conn: sa.Connection, ids: Sequence[int]) -> int:
    """Delete these notifications and who read them."""
    forget_reads(conn, ids)
    remove_notifications(conn, ids)
    return len(ids)


def archived_flows(conn: sa.Connection) -> list[int]:
    query = sa.select(flows.c.id).where(flows.c.status == "archived").order_by(flows.c.id)
    return [int(i) for i in conn.execute(query).scalars()]


def excess_not_entered(conn: sa.Connection, flow_id: int, *, keep: int, rows: int) -> list[int]:
    """The ids of a flow's not-entered reasons older than its newest `keep`, oldest first, at
    most `rows` of them."""
    d = entry_decisions.c
    newest_kept = conn.execute(
        sa.select(d.id).where(d.flow_id == flow_id).order_by(d.id.desc()).offset(keep - 1).limit(1)
    ).scalar()
    if newest_kept is None:
        return []
    query = (
        sa.select(d.id).where(d.flow_id == flow_id, d.id < newest_kept).order_by(d.id).limit(rows)
    )
    return [int(i) for i in conn.execute(query).scalars()]


# -- webhook receipts ----------------------------------------------------------------------------


def receipts_before(conn: sa.Connection, before: datetime, *, rows: int) -> datetime | None:
    """The time up to which (inclusive) about `rows` of the oldest receipts taken before
    `before` were taken; None when there are none."""
    w = webhook_receipts.c
    times = (
        sa.select(w.received_at)
        .where(w.received_at < before)
        .order_by(w.received_at)
        .limit(rows)
        .subquery()
    )
    found = conn.execute(sa.select(sa.func.max(times.c.received_at))).scalar()
    return found if isinstance(found, datetime) else None


def delete_receipts(conn: sa.Connection, upto: datetime) -> int:
    return delete_received_up_to(conn, upto)


# -- PostgreSQL: whole months ---------------------------------------------------------------------

# Runs counted per statement when a month of step runs goes.
_MONTH_RUNS_CHUNK = 2000


def _in(month: Month) -> str:
    """The partition of `month`, as a FROM item (its name is checked: store.partitions)."""
    return f'"{month.name}"'


def step_runs_month_droppable(conn: sa.Connection, month: Month, before: datetime) -> bool:
    """Whether every step run of the month is of a run that ended before `before` (and so
    would go row by row): a run still going, or ended since, keeps the month."""
    if month.end > before:
        return False
    over = ", ".join(f"'{status}'" for status in OVER)
    kept = conn.execute(
        sa.text(
            f"SELECT EXISTS (SELECT 1 FROM {_in(month)} s JOIN enrollments e"
            " ON e.id = s.enrollment_id WHERE NOT (e.status IN (" + over + ")"
            " AND e.finished_at IS NOT NULL AND e.finished_at < :before))"
        ),
        {"before": before},
    ).scalar()
    return not kept


def spanning_runs(conn: sa.Connection, month: Month, *, rows: int | None = None) -> list[int]:
    """Runs with step runs in the month and in another (all, or at most `rows`), in id order:
    they go row by row (`prune_step_runs`, whole runs) before the month is dropped."""
    query = sa.text(
        f"SELECT DISTINCT s.enrollment_id FROM {_in(month)} s WHERE EXISTS (SELECT 1 FROM"
        " step_runs t WHERE t.enrollment_id = s.enrollment_id AND (t.started_at < :lo OR"
        " t.started_at >= :hi)) ORDER BY 1 LIMIT :rows"
    )
    found = conn.execute(query, {"lo": month.start, "hi": month.end, "rows": rows})
    return [int(i) for i in found.scalars()]


def drop_step_runs_month(conn: sa.Connection, month: Month, *, now: datetime) -> int:
    """Count the step runs of the month (whole runs: `spanning_runs` went first) per flow and
    per run, as `prune_step_runs` does, in one scan of its partition, then drop it; how many
    went."""
    counts, per_run, flow_of = _step_run_counts(conn, (), month=month)
    _count_into(conn, [(*key, n) for key, n in counts.items()])
    runs = sorted(per_run)
    for at in range(0, len(runs), _MONTH_RUNS_CHUNK):
        ids = runs[at : at + _MONTH_RUNS_CHUNK]
        _summarise(
            conn,
            ids,
            step_runs_gone={i: per_run[i] for i in ids},
            messages_gone={},
            now=now,
            flow_of={i: flow_of[i] for i in ids},
        )
    drop_month(conn, month)
    return sum(per_run.values())


def changes_month_droppable(conn: sa.Connection, month: Month, before: datetime) -> bool:
    """Whether every record change of the month is old enough and read (`change_bound`)."""
    if month.end > before:
        return False
    newest = conn.exec_driver_sql(f"SELECT max(id) FROM {_in(month)}").scalar()
    return newest is None or int(newest) <= change_bound(conn)


def drop_changes_month(conn: sa.Connection, month: Month) -> int:
    gone = rows_in(conn, month.name)
    drop_month(conn, month)
    return gone


def drop_not_entered_month(conn: sa.Connection, month: Month) -> int:
    gone = rows_in(conn, month.name)
    drop_month(conn, month)
    return gone


def drop_notifications_month(conn: sa.Connection, month: Month) -> int:
    """Forget who read the month's notifications, then drop it."""
    ids = [int(i) for i in conn.exec_driver_sql(f"SELECT id FROM {_in(month)}").scalars()]
    for at in range(0, len(ids), 10_000):
        forget_reads(conn, ids[at : at + 10_000])
    drop_month(conn, month)
    return len(ids)


# -- the archive export ---------------------------------------------------------------------------

# The kinds of `crmflow archive export`, by the retention kind they belong to.
EXPORT_KINDS = {
    "step_runs": "step_run",
    "outbox": "message",
    "record_changes": "record_change",
    "not_entered": "not_entered",
    "webhook_receipts": "webhook_receipt",
    "notifications": "notification",
}


@contextmanager
def snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection reading one snapshot for all its statements (PostgreSQL: REPEATABLE READ,
    read only; SQLite: a read transaction is one snapshot)."""
    if engine.dialect.name != "postgresql":
        with read_connection(engine) as conn:
            yield conn
        return
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _export_where(conn: sa.Connection, kind: str, before: datetime) -> tuple[sa.Table, Any]:
    ended = sa.select(enrollments.c.id).where(
        enrollments.c.status.in_(OVER), enrollments.c.finished_at < before
    )
    if kind == "step_runs":
        return step_runs, step_runs.c.enrollment_id.in_(ended)
    if kind == "outbox":
        return outbox, sa.and_(
            outbox.c.enrollment_id.in_(ended), outbox.c.status.in_(FINAL_MESSAGES)
        )
    if kind == "record_changes":
        bound = change_bound(conn)
        return record_changes, sa.and_(record_changes.c.at < before, record_changes.c.id <= bound)
    if kind == "not_entered":
        return entry_decisions, entry_decisions.c.at < before
    if kind == "webhook_receipts":
        return webhook_receipts, webhook_receipts.c.received_at < before
    return notifications, notifications.c.created_at < before


def history_rows(
    conn: sa.Connection, kind: str, before: datetime, *, chunk: int
) -> Iterator[dict[str, Any]]:
    """Every row of `kind` (a key of EXPORT_KINDS) that pruning at `before` would remove, as
    a dict, in id order where there is one, streamed (fetched `chunk` at a time; nothing more
    is held)."""
    table, where = _export_where(conn, kind, before)
    query = sa.select(table).where(where).order_by(*table.primary_key.columns)
    result = conn.execution_options(stream_results=True, yield_per=chunk).execute(query)
    for row in result:
        yield dict(row._mapping)
