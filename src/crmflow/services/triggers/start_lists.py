"""Records a saved query selects entering a flow, set-based: a flow's start lists when it starts,
and the records of a daily schedule at each run (`schedules`).

Without an entry condition the records enter with one `INSERT INTO enrollments ... SELECT`, and
those the re-entry policy keeps out get their reason with one `INSERT INTO entry_decisions ...
SELECT`; an entry condition (CEL) is judged in Python, a chunk of records at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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
from crmflow.store.database import Connection
from crmflow.store.enrollments import RecordIds, enter_set, record_ids, selected_ids
from crmflow.store.flows import flow_head

__all__ = ["enter_records", "enter_selected", "enter_start_lists", "flow_ref", "start_list_ids"]


_IDS_CHUNK = 5_000


def start_list_ids(ctx: Context, conn: Connection, names: Sequence[str]) -> RecordIds:
    """The records the saved queries `names` select now, each once (a record in two start
    lists enters once), as a set for the statements that enter or count them."""
    return record_ids([matching_ids(ctx, conn, name) for name in names])


def flow_ref(conn: Connection, ctx: Context, flow_id: int) -> FlowRef:
    """The flow `flow_id` as entry decisions need it, at its current version."""
    row = flow_head(conn, flow_id)
    [info] = repo.load_flows(
        conn, [(flow_id, row.current_version)], definitions_cache(ctx)
    ).values()
    return FlowRef(flow_id, row.key, row.status, row.current_version, info.definition)


def enter_start_lists(
    conn: Connection, ctx: Context, flow_id: int, *, expected: int | None, now: datetime
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
    ids = start_list_ids(ctx, conn, names)
    if flow.definition.entry_condition:
        selected = selected_ids(conn, ids)
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


def enter_selected(
    conn: Connection,
    ctx: Context,
    flow: FlowRef,
    ids: RecordIds,
    *,
    trigger: str,
    now: datetime,
) -> int:
    """The records of `ids` enter `flow` now, as far as its
    re-entry policy allows; the others get an entry decision. A flow with an entry condition
    needs CEL, which SQL cannot run: its records are judged in Python, a chunk at a time.
    How many entered."""
    if flow.definition.entry_condition:
        return enter_records(conn, ctx, flow, selected_ids(conn, ids), trigger=trigger, now=now)
    return _enter_set(conn, flow, ids, trigger=trigger, now=now)[1]


def _enter_set(
    conn: Connection, flow: FlowRef, ids: RecordIds, *, trigger: str, now: datetime
) -> tuple[int, int]:
    """`enter_selected` set-based, for a flow without an entry condition: one `INSERT INTO
    enrollments ... SELECT`, and one `INSERT INTO entry_decisions ... SELECT` of the records the
    re-entry policy keeps out (see `store.enrollments.enter_set`). (How many records `ids`
    held, how many entered.)"""
    considered, entered = enter_set(
        conn,
        flow_id=flow.id,
        flow_version=flow.version,
        reentry=flow.definition.reentry,
        ids=ids,
        trigger=trigger,
        now=now,
    )
    if entered:
        repo.notify_due(conn)
    return considered, entered


def enter_records(
    conn: Connection,
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
