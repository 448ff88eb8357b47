"""`move_batch`: locked enrollments -> the engine -> one write, on the caller's transaction."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crmflow.context import Actor, Context
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.entry import HELD, Decision
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import Event, RecordChanged, RecordSnapshot
from crmflow.engine.transition import Outcome, cancel
from crmflow.logs import in_run, left_run, log_failed_steps
from crmflow.metrics import observe_moved
from crmflow.runner.evaluation import Evaluation, Restart, outcome_for, state_of
from crmflow.runner.loop_guard import held_at_entry
from crmflow.runner.reference import Reference, load_reference
from crmflow.runner.writes import BatchWrites
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, is_sqlite
from crmflow.store.entry_decisions import insert_decisions
from crmflow.store.records import KnownRecords

__all__ = ["Moved", "move_batch"]


@dataclass
class Moved:
    """What `move_batch` did: the outcome of each enrollment it called the engine for."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)  # frozen flows, timers not due
    # Left for the next batch, untouched: the batch had run out of time (`move_batch(deadline=)`).
    deferred: list[int] = field(default_factory=list)

    @property
    def step_runs(self) -> int:
        return sum(len(o.log) for o in self.outcomes.values())


def move_batch(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    rows: Sequence[repo.EnrollmentRow],
    *,
    now: datetime,
    events: Mapping[int, Event | Restart] | None = None,
    deadline: float | None = None,
    evaluation: Evaluation | None = None,
    reference: Reference | None = None,
) -> Moved:
    """Run the engine for locked enrollments `rows` at `now` (a timer, or `events[id]`) and
    write what it decided. Enrollments of flows that are not running are left as they are.

    `reference`: the flows, record types and records of `rows`, when the caller has read them
    in this transaction (and written no record since); otherwise they are read here.

    `evaluation` (from `evaluate_batch`, before this transaction began): an enrollment whose
    row and record are still what its outcome was computed from takes that outcome instead of
    running the engine again, so templates and conditions are not evaluated under the lock.
    When nothing was committed since (`evaluation.unchanged`), its reads are used as they are.

    With `deadline` (a `time.monotonic()` value), the batch is cut once it has passed: the
    enrollments not reached yet are left as they were (`Moved.deferred`, still due) for the
    next batch, so that the caller's write transaction ends in a bounded time. At least one
    enrollment is moved, and an enrollment whose record already has one moved in this batch in
    the same flow is never cut from it: such enrollments decide about each other (the loop
    guard's cancellations below)."""
    moved = Moved()
    if not rows:
        return moved
    if evaluation is not None and evaluation.unchanged:
        reference = evaluation.reference
    elif reference is None:
        reference = load_reference(conn, ctx, rows)
    infos, types, snapshots = reference.infos, reference.types, dict(reference.records)
    writes = BatchWrites()
    refusals: list[Decision] = []  # starts due now that the flow no longer admits
    begun: set[tuple[int, int]] = set()  # (flow, record) pairs this batch moves
    for row in rows:
        if deadline is not None:
            pair = (row.flow_id, row.record_id)
            if begun and pair not in begun and time.monotonic() >= deadline:
                moved.deferred.append(row.id)
                continue
            begun.add(pair)
        info = infos.get((row.flow_id, row.flow_version))
        if info is None or info.status not in repo.RUNNING_FLOWS:
            moved.skipped.append(row.id)
            continue
        flow = info.definition
        in_run(flow.key, row.flow_version, row.id, row.record_id, row.step_key)  # log lines' keys
        rtype = types.get(flow.record_type)
        event = (events or {}).get(row.id)
        record = snapshots.get(row.record_id)
        if row.state is None:
            held = _held(conn, row, info, rows=rows, writes=writes, refusals=refusals, now=now)
            outcome = _entering(ctx, row, flow, record, event, held, evaluation, rtype, now)
        else:
            outcome = _moving(ctx, row, flow, record, event, evaluation, rtype, now)
        moved.outcomes[row.id] = outcome
        if outcome.refused or outcome.not_due:
            moved.skipped.append(row.id)
            continue
        snapshots[row.record_id] = outcome.record
        writes.add_outcome(
            row.state, outcome, flow.key, cancel_tasks_on_end=flow.cancel_open_tasks_on_end
        )
    left_run()  # the writes below are the batch's, of no one run
    insert_decisions(conn, refusals, now=now)
    # On SQLite the transaction has held the write lock since it began (BEGIN IMMEDIATE) and
    # the records were read in it, or on a snapshot with nothing committed since: they are
    # still as stored, and the record writes start from them instead of reading them again.
    # On PostgreSQL they were read without a lock: the writes lock and read them.
    known = KnownRecords(reference.stored, reference.types) if is_sqlite(conn) else None
    writes.write(conn, ctx, actor, now=now, known=known)
    observe_moved(rows, moved.outcomes, writes.logs, now=now, timers=events is None)  # /metrics
    log_failed_steps(moved.outcomes, writes.logs)
    return moved


def _entering(
    ctx: Context,
    row: repo.EnrollmentRow,
    flow: FlowDefinition,
    record: RecordSnapshot | None,
    event: Event | Restart | None,
    held: str | None,
    evaluation: Evaluation | None,
    rtype: RecordType | None,
    now: datetime,
) -> Outcome:
    """The outcome of an enrollment coming due to enter: cancelled when it is `held` (why) or
    its record is gone; otherwise its first steps, which see a deleted record as it was (a
    record_deleted trigger)."""
    entering = event if isinstance(event, RecordChanged) else None
    if record is None and entering is not None and entering.change == "deleted":
        record = RecordSnapshot(
            row.record_id,
            flow.record_type,
            {k: entering.before.get(k) for k in (rtype.field_keys if rtype else ())},
            owner=entering.before.get("owner"),
        )
    if held is not None or record is None:
        reason = held or "the record was deleted before it entered"
        return Outcome(
            state=cancel(state_of(row, flow.key, entered_at=now), now=now, reason=reason),
            record=record or RecordSnapshot(row.record_id, flow.record_type, {}),
        )
    return outcome_for(ctx, flow, row, record, entering, rtype, now=now, evaluation=evaluation)


def _moving(
    ctx: Context,
    row: repo.EnrollmentRow,
    flow: FlowDefinition,
    record: RecordSnapshot | None,
    event: Event | Restart | None,
    evaluation: Evaluation | None,
    rtype: RecordType | None,
    now: datetime,
) -> Outcome:
    """The outcome of an enrollment inside the flow, woken by its timer or `event`; a record
    gone from the store is heard as deleted."""
    if record is None:
        record = RecordSnapshot(row.record_id, flow.record_type, {})
        event = RecordChanged(change="deleted")
    return outcome_for(ctx, flow, row, record, event, rtype, now=now, evaluation=evaluation)


def _held(
    conn: Connection,
    row: repo.EnrollmentRow,
    info: repo.FlowInfo,
    *,
    rows: Sequence[repo.EnrollmentRow],
    writes: BatchWrites,
    refusals: list[Decision],
    now: datetime,
) -> str | None:
    """Why an enrollment coming due to enter does not after all (`held_at_entry`), or None.
    A start the loop guard held cancels the batch's own enrollments of the record in the flow
    too: this batch writes their states, so they are cancelled here, not in the database."""
    mates = (
        [r.id for r in rows if (r.flow_id, r.record_id) == (row.flow_id, row.record_id)]
        if row.status == HELD
        else []
    )
    held = held_at_entry(conn, row, info, now=now, moving=mates, refusals=refusals)
    if mates and held is not None:
        writes.states[:] = [
            cancel(s, now=now, reason=held) if s.enrollment_id in mates and not s.is_over else s
            for s in writes.states
        ]
        writes.over += [i for i in mates if i != row.id and i not in writes.over]
    return held
