"""Records going through flows: start one by hand or by API, decide an approval, restart or
cancel a run (what users see of them is in `run_views`).

`move_batch` is the heart shared with the worker: it runs the pure engine for a batch of locked
enrollments and writes everything they produced (states, step runs, record changes, tasks,
history, outbox) on the caller's transaction, with a fixed number of statements per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.commands import Command
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import (
    ActionLog,
    ActionStatus,
    DecisionMade,
    EnrollmentState,
    EnrollmentStatus,
    Event,
    RecordChanged,
    RecordSnapshot,
    StepRunLog,
    StepStatus,
)
from crmflow.engine.transition import Outcome, advance, cancel, enter, restart
from crmflow.errors import ConflictError, NotFoundError
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.effects import Applied, apply_commands
from crmflow.services.entry import (
    Candidate,
    Decision,
    FlowRef,
    admission_refusal,
    decide_entries,
    flow_zone,
    loop_guard_reason,
    notify_loop_guard,
    write_decisions,
)
from crmflow.services.flow_access import can_see_flow, visible_flow
from crmflow.services.permissions import require_manager
from crmflow.services.record_types import catalog_in
from crmflow.services.run_views import EnrollmentView, enrollment_view
from crmflow.store import enrollments as repo
from crmflow.store.idlists import among
from crmflow.store.schema import (
    enrollments,
    flows,
    outbox,
    record_history,
    records,
    tasks,
)

# What users see of runs (views, lists, progress) is in `run_views`.
__all__ = [
    "BatchWrites",
    "Evaluated",
    "Evaluation",
    "cancel_enrollment",
    "close_tasks",
    "decide",
    "evaluate_batch",
    "keep_refusal",
    "move_batch",
    "restart_enrollment",
    "start_one",
    "start_record",
    "trip_loop_guard",
    "with_action_failures",
]

log = logging.getLogger("crmflow.enrollments")

Restart = Literal["restart"]

# -- moving a batch ------------------------------------------------------------------------------


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


def with_action_failures(logs: Sequence[StepRunLog], applied: Applied) -> list[StepRunLog]:
    """The step-run logs with the effects that could not be carried out marked as failed."""
    if not applied.failures:
        return list(logs)
    out: list[StepRunLog] = []
    for log in logs:
        actions: list[ActionLog] = []
        failed = 0
        for a in log.actions:
            reason = applied.failures.get((log.enrollment_id, log.step_run, a.index))
            if reason is not None and a.status is ActionStatus.DONE:
                failed += 1
                detail = f"{a.detail} — {reason}"
                actions.append(replace(a, status=ActionStatus.FAILED, detail=detail))
            else:
                actions.append(a)
        if not failed:
            out.append(log)
            continue
        failing = sum(1 for a in actions if a.status is ActionStatus.FAILED)
        status = log.status
        if status in (StepStatus.DONE, StepStatus.FAILED):
            # The same words the engine uses when an action fails while the step runs.
            status, reason = StepStatus.FAILED, f"{failing} of {len(actions)} actions failed"
        else:
            reason = "; ".join(r for r in (log.reason, f"{failed} action(s) failed") if r)
        out.append(replace(log, actions=tuple(actions), status=status, reason=reason))
    return out


@dataclass
class BatchWrites:
    """What the engine decided for some enrollments, gathered to be written together: their new
    states, step-run logs and commands, and the approval tasks whose run is over. The worker's
    batches and the resume of a frozen flow write through it."""

    states: list[EnrollmentState] = field(default_factory=list)
    logs: list[StepRunLog] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    record_of: dict[int, int] = field(default_factory=dict)
    flow_of: dict[int, str] = field(default_factory=dict)
    closed_runs: list[tuple[int, int]] = field(default_factory=list)  # (enrollment, run)
    over: list[int] = field(default_factory=list)
    # The step runs each state had before (see `repo.save`): a later run's log is a new row.
    runs_before: dict[int, int] = field(default_factory=dict)

    def add(
        self, old: EnrollmentState | None, new: EnrollmentState, record_id: int, flow_key: str
    ) -> None:
        """`new` replaces `old` (None: the enrollment had not entered yet)."""
        eid = new.enrollment_id
        self.states.append(new)
        self.record_of[eid] = record_id
        self.flow_of[eid] = flow_key
        self.runs_before[eid] = old.step_runs if old is not None else 0
        if old is not None and old.current_run is not None and new.current_run != old.current_run:
            # The run a person was asked about (an approval) is over: its task is done.
            self.closed_runs.append((eid, old.current_run))
        if new.is_over:
            self.over.append(eid)

    def add_outcome(self, old: EnrollmentState | None, outcome: Outcome, flow_key: str) -> None:
        self.add(old, outcome.state, outcome.record.id, flow_key)
        self.logs += outcome.log
        self.commands += outcome.commands

    def write(self, conn: sa.Connection, ctx: Context, actor: Actor, *, now: datetime) -> None:
        """Apply the commands (as `actor`), then write the states and the step runs (an action
        whose effect could not be carried out marked failed), and close the tasks."""
        applied = apply_commands(
            conn, ctx, actor, self.commands, record_of=self.record_of, flow_of=self.flow_of, now=now
        )
        logs = with_action_failures(self.logs, applied)
        repo.save(conn, self.states, logs, now=now, runs_before=self.runs_before)
        closed = [{"eid": eid, "r": run, "at": now} for eid, run in self.closed_runs]
        close_tasks(conn, closed, self.over, now=now)


def _state_of(row: repo.EnrollmentRow, flow_key: str, *, entered_at: datetime) -> EnrollmentState:
    """The enrollment's state; for one that has not entered yet (a start due later), the state
    it would have entered with at `entered_at`."""
    return row.state or EnrollmentState(
        enrollment_id=row.id,
        flow_key=flow_key,
        flow_version=row.flow_version,
        record_id=row.record_id,
        entered_at=entered_at,
    )


def move_batch(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    rows: Sequence[repo.EnrollmentRow],
    *,
    now: datetime,
    events: Mapping[int, Event | Restart] | None = None,
    deadline: float | None = None,
    evaluation: Evaluation | None = None,
) -> Moved:
    """Run the engine for locked enrollments `rows` at `now` (a timer, or `events[id]`) and
    write what it decided. Enrollments of flows that are not running are left as they are.

    `evaluation` (from `evaluate_batch`, before this transaction began): an enrollment whose
    row and record are still what its outcome was computed from takes that outcome instead of
    running the engine again, so templates and conditions are not evaluated under the lock.
    When nothing was committed since (`evaluation.unchanged`), its reads are used as they are.

    With `deadline` (a `time.monotonic()` value), the batch is cut once it has passed: the
    enrollments not reached yet are left as they were (`Moved.deferred`, still due, their
    leases given up) for the next batch, so that the caller's write transaction ends in a
    bounded time. At least one enrollment is moved, and an enrollment whose record already has
    one moved in this batch in the same flow is never cut from it: such enrollments decide
    about each other (the loop guard's cancellations below)."""
    moved = Moved()
    if not rows:
        return moved
    if evaluation is not None and evaluation.unchanged:
        infos, types, snapshots = evaluation.infos, evaluation.types, dict(evaluation.records)
    else:
        infos = repo.load_flows(
            conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
        )
        types = catalog_in(conn)
        snapshots = repo.load_records(conn, {r.record_id for r in rows}, types)
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
        zone = flow_zone(ctx, flow)
        rtype = types.get(flow.record_type)
        event = (events or {}).get(row.id)
        record = snapshots.get(row.record_id)
        if row.state is None:
            # The batch's enrollments of the same record in the same flow: this batch writes
            # their states, so a loop guard held start cancels them here, not in the database.
            mates = (
                [r.id for r in rows if (r.flow_id, r.record_id) == (row.flow_id, row.record_id)]
                if row.status == "waiting"
                else []
            )
            held = _held_at_entry(conn, row, info, now=now, moving=mates, refusals=refusals)
            if mates and held is not None:
                writes.states[:] = [
                    cancel(s, now=now, reason=held)
                    if s.enrollment_id in mates and not s.is_over
                    else s
                    for s in writes.states
                ]
                writes.over += [i for i in mates if i != row.id and i not in writes.over]
            entering = event if isinstance(event, RecordChanged) else None
            if record is None and entering is not None and entering.change == "deleted":
                # A record_deleted trigger: the first steps see the record as it was.
                record = RecordSnapshot(
                    row.record_id,
                    flow.record_type,
                    {k: entering.before.get(k) for k in (rtype.field_keys if rtype else ())},
                    owner=entering.before.get("owner"),
                )
            if held is not None or record is None:
                reason = held or "the record was deleted before it entered"
                outcome = Outcome(
                    state=cancel(_state_of(row, flow.key, entered_at=now), now=now, reason=reason),
                    record=record or RecordSnapshot(row.record_id, flow.record_type, {}),
                )
            else:
                outcome = _reused(evaluation, row, record, rtype, entering) or _engine_outcome(
                    flow,
                    row,
                    record,
                    entering,
                    zone=zone,
                    record_type=rtype,
                    now=now,
                    limits=ctx.evaluation_limits,
                )
        else:
            if record is None:
                record = RecordSnapshot(row.record_id, flow.record_type, {})
                event = RecordChanged(change="deleted")
            outcome = _reused(evaluation, row, record, rtype, event) or _engine_outcome(
                flow,
                row,
                record,
                event,
                zone=zone,
                record_type=rtype,
                now=now,
                limits=ctx.evaluation_limits,
            )
        moved.outcomes[row.id] = outcome
        if outcome.refused or outcome.not_due:
            moved.skipped.append(row.id)
            continue
        snapshots[row.record_id] = outcome.record
        writes.add_outcome(row.state, outcome, flow.key)
    write_decisions(conn, refusals, now=now)
    writes.write(conn, ctx, actor, now=now)
    repo.release(conn, moved.skipped + moved.deferred)
    return moved


def _engine_outcome(
    flow: FlowDefinition,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    event: Event | Restart | None,
    *,
    zone: ZoneInfo,
    record_type: RecordType | None,
    now: datetime,
    limits: EvaluationLimits,
) -> Outcome:
    """`_engine_move`, or, when the engine raises for this record (a bug: an action that fails
    is logged on its step, not raised), the enrollment stopped alone with the error as its
    reason, so that the rest of its batch (or of the change feed's) moves on."""
    try:
        return _engine_move(
            flow, row, record, event, zone=zone, record_type=record_type, now=now, limits=limits
        )
    except Exception as exc:
        log.error(
            "flow %s: enrollment %d (record %d) stopped, the engine raised: %s",
            flow.key,
            row.id,
            row.record_id,
            exc,
            exc_info=True,
        )
        reason = (
            f"crmflow failed on this record ({type(exc).__name__}: {exc}); it was stopped so "
            "that the others go on: restart it once the cause is fixed"
        )
        state = row.state or _state_of(row, flow.key, entered_at=now)
        return Outcome(state=cancel(state, now=now, reason=reason), record=record)


def _engine_move(
    flow: FlowDefinition,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    event: Event | Restart | None,
    *,
    zone: ZoneInfo,
    record_type: RecordType | None,
    now: datetime,
    limits: EvaluationLimits,
) -> Outcome:
    """The engine's move for one enrollment: it enters (no state yet), restarts or advances."""
    if row.state is None:
        change = event if isinstance(event, RecordChanged) else None
        return enter(
            flow,
            enrollment_id=row.id,
            flow_version=row.flow_version,
            record=record,
            now=now,
            zone=zone,
            change=change,
            record_type=record_type,
            limits=limits,
        )
    if event == "restart":
        return restart(
            flow, row.state, record, now=now, zone=zone, record_type=record_type, limits=limits
        )
    return advance(
        flow,
        row.state,
        record,
        now=now,
        zone=zone,
        event=event if not isinstance(event, str) else None,
        record_type=record_type,
        limits=limits,
    )


@dataclass(frozen=True)
class Evaluated:
    """The engine's outcome for an enrollment, computed from its row, record, record type and
    event on a read snapshot: still its outcome if they are all the same when the batch writes."""

    inputs: tuple[repo.EnrollmentRow, RecordSnapshot, RecordType | None, Event | Restart | None]
    outcome: Outcome


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_batch` read and computed on its snapshot."""

    rows: list[repo.EnrollmentRow]  # the enrollments to move (cut at the deadline)
    outcomes: dict[int, Evaluated]
    infos: dict[tuple[int, int], repo.FlowInfo]
    types: dict[str, RecordType]
    records: dict[int, RecordSnapshot]  # as read, before any outcome changed them
    # Nothing was committed between the snapshot and the write transaction (the caller knows):
    # the rows, flows, types and records read are still what the database holds.
    unchanged: bool = False


def _reused(
    evaluation: Evaluation | None,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    record_type: RecordType | None,
    event: Event | Restart | None,
) -> Outcome | None:
    found = evaluation.outcomes.get(row.id) if evaluation is not None else None
    # A tuple compares its items by identity first: the objects of an unchanged evaluation are
    # matched at once, the values of a re-read one field by field.
    if found is None or found.inputs != (row, record, record_type, event):
        return None
    return found.outcome


def evaluate_batch(
    conn: sa.Connection,
    ctx: Context,
    rows: Sequence[repo.EnrollmentRow],
    *,
    now: datetime,
    deadline: float | None = None,
) -> Evaluation:
    """Run the engine for due enrollments `rows` on `conn`, a read connection, without writing
    anything: what `move_batch` then reuses, so that a batch evaluates its templates and
    conditions before it takes the write lock rather than while holding it.

    The rows to move are cut at `deadline` as `move_batch` cuts. An enrollment that must write
    before it enters (a held follow-up start, a flow that stopped admitting) is left to
    `move_batch`, as is any whose row or record has changed by then."""
    infos = repo.load_flows(
        conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
    )
    types = catalog_in(conn)
    records = repo.load_records(conn, {r.record_id for r in rows}, types)
    snapshots = dict(records)
    reached: list[repo.EnrollmentRow] = []
    evaluated: dict[int, Evaluated] = {}
    begun: set[tuple[int, int]] = set()
    for row in rows:
        pair = (row.flow_id, row.record_id)
        if deadline is not None and begun and pair not in begun and time.monotonic() >= deadline:
            continue
        begun.add(pair)
        reached.append(row)
        info = infos.get((row.flow_id, row.flow_version))
        if info is None or info.status not in repo.RUNNING_FLOWS:
            continue
        held = row.status == "waiting" or admission_refusal(info.status) is not None
        if row.state is None and held:
            continue  # it writes as it enters (`_held_at_entry`): move_batch, under the lock
        flow = info.definition
        rtype = types.get(flow.record_type)
        record = snapshots.get(row.record_id)
        event: Event | None = None
        if record is None:
            if row.state is None:
                continue
            record = RecordSnapshot(row.record_id, flow.record_type, {})
            event = RecordChanged(change="deleted")
        outcome = _engine_outcome(
            flow,
            row,
            record,
            event,
            zone=flow_zone(ctx, flow),
            record_type=rtype,
            now=now,
            limits=ctx.evaluation_limits,
        )
        evaluated[row.id] = Evaluated((row, record, rtype, event), outcome)
        if not (outcome.refused or outcome.not_due):
            snapshots[row.record_id] = outcome.record
    return Evaluation(reached, evaluated, infos, types, records)


def close_tasks(
    conn: sa.Connection, closed_runs: list[dict[str, Any]], over: list[int], *, now: datetime
) -> None:
    """Close the open tasks of approval runs that are over (`closed_runs`: eid, r, at) as done,
    and those of enrollments that ended (`over`) as cancelled.

    The enrollments of `over` that ended CANCELLED (loop guard, by hand, a missing step) also
    have their outbox messages still pending cancelled: nothing is sent for a cancelled run.
    Those that finished or left keep theirs (the thank-you email of a finished run still goes).
    Their states are already saved, so the enrollments' status column says which ones."""
    if closed_runs:
        conn.execute(
            tasks.update()
            .where(
                tasks.c.enrollment_id == sa.bindparam("eid"),
                tasks.c.run == sa.bindparam("r"),
                tasks.c.status == "open",
            )
            .values(status="done", closed_at=sa.bindparam("at")),
            closed_runs,
        )
    if over:
        conn.execute(
            tasks.update()
            .where(among(tasks.c.enrollment_id, over, conn), tasks.c.status == "open")
            .values(status="cancelled", closed_at=now)
        )
        cancelled = sa.select(enrollments.c.id).where(
            among(enrollments.c.id, over, conn),
            enrollments.c.status == EnrollmentStatus.CANCELLED.value,
        )
        conn.execute(
            outbox.update()
            .where(outbox.c.enrollment_id.in_(cancelled), outbox.c.status == "pending")
            .values(status="cancelled")
        )


# -- use-cases -------------------------------------------------------------------------------------


def _admission(flow: sa.Row[Any], definition: FlowDefinition) -> str | None:
    # The same words as the other triggers ("flow draining: ..."), kept in the not-entered list.
    if flow.status == "draft":
        return f"flow is a draft; start it first (`crmflow flows start {flow.key}`)"
    refusal = admission_refusal(flow.status)
    if refusal is not None:
        return refusal
    if not any(t.type == "manual" for t in definition.triggers):
        return "the flow has no manual trigger (add `- type: manual` to its triggers)"
    return None


def start_record(ctx: Context, actor: Actor, flow_key: str, record_id: int) -> EnrollmentView:
    """Start flow `flow_key` for one record now (a person's or a program's start): its first
    steps run at once when they are due. Refused with the reason (ConflictError) when the flow
    does not admit records now, the record's type is not the flow's, the re-entry policy keeps
    it out or the flow's entry condition is false; the reason is kept on the record and in the
    flow's not-entered list (trigger 'manual'). The 11th start of a flow for a record within a
    day trips the loop guard: the start is recorded as cancelled, the record's running
    enrollment in the flow is cancelled, and the flow's controller and `actor` are notified."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        # Locking the flow row serialises starts of one flow, so a record cannot enter twice.
        flow = visible_flow(conn, actor, flow_key, for_update=True)
        record_type = conn.execute(
            sa.select(records.c.type).where(records.c.id == record_id)
        ).scalar_one_or_none()
        if record_type is None:
            raise NotFoundError(f"no record with id {record_id}")
        definition = _definition(conn, ctx, flow)
        started = start_one(
            conn,
            ctx,
            actor,
            flow,
            definition,
            record_id,
            record_type,
            refusal=_admission(flow, definition),
            told=actor.username,
            now=now,
        )
        if isinstance(started, int):
            return enrollment_view(conn, ctx, started)
        keep_refusal(conn, flow, record_id, "manual", started, f"by {actor.username}", now=now)
    raise ConflictError(f"record {record_id} was not entered in flow {flow_key!r}: {started}")


def _definition(conn: sa.Connection, ctx: Context, flow: sa.Row[Any]) -> FlowDefinition:
    [info] = repo.load_flows(
        conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
    ).values()
    return info.definition


def start_one(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    flow: sa.Row[Any],
    definition: FlowDefinition,
    record_id: int,
    record_type: str,
    *,
    refusal: str | None,
    told: str | None,
    now: datetime,
) -> int | str:
    """The rules of a start for one record, in their order (after `refusal`, the caller's own:
    the flow's status, its trigger): the record's type, the loop guard (which acts: see
    `trip_loop_guard`; `told` is the user to tell), the re-entry policy, the entry condition.
    The new enrollment's id, its first steps run; or why the record did not enter.
    The caller holds the flow row locked (`FOR UPDATE`), so a record cannot enter twice."""
    if refusal is None and record_type != definition.record_type:
        refusal = f"the flow runs on {definition.record_type} records, not {record_type}"
    if refusal is not None:
        return refusal
    # The rules every trigger follows (active flow, loop guard, re-entry, entry condition).
    snapshot = repo.load_records(conn, [record_id], catalog_in(conn))[record_id]
    ref = FlowRef(flow.id, flow.key, flow.status, flow.current_version, definition)
    verdict = decide_entries(conn, ctx, [Candidate(ref, record_id, "manual", snapshot)], now=now)
    if verdict.tripped:
        return trip_loop_guard(
            conn,
            flow_id=flow.id,
            flow_key=flow.key,
            flow_version=flow.current_version,
            controller=definition.controller,
            record_id=record_id,
            told=told,
            now=now,
        )
    if verdict.refused:
        return verdict.refused[0].reason
    eid = repo.insert_enrollment(
        conn,
        flow_id=flow.id,
        flow_version=flow.current_version,
        record_id=record_id,
        now=now,
        due_at=now,
    )
    move_batch(conn, ctx, actor, repo.lock(conn, [eid], owner=None), now=now)
    repo.notify_due(conn)
    return eid


def keep_refusal(
    conn: sa.Connection,
    flow: sa.Row[Any],
    record_id: int,
    trigger: str,
    refusal: str,
    source: str,
    *,
    now: datetime,
) -> None:
    """Why a start did not enter the record: on the record's history (`source` says who or what
    asked: "by andrei") and in the flow's not-entered list."""
    conn.execute(
        record_history.insert().values(
            record_id=record_id,
            message=f"not entered in flow {flow.key!r} ({source}): {refusal}",
            at=now,
        )
    )
    write_decisions(conn, [Decision(flow.id, record_id, trigger, refusal)], now=now)


def trip_loop_guard(
    conn: sa.Connection,
    *,
    flow_id: int,
    flow_key: str,
    flow_version: int,
    controller: str | None,
    record_id: int,
    told: str | None,
    now: datetime,
) -> str:
    """The loop guard acts (seed 004): this start is recorded as cancelled, the record's running
    enrollments in the flow are cancelled, and the controller and `told` (the user who caused
    it) are notified. Returns the reason, in words. (A follow-up start trips it in two halves:
    `effects` notifies when the start is made, `_held_at_entry` cancels when it comes due.)"""
    reason = loop_guard_reason(flow_key, record_id)
    eid = repo.insert_enrollment(
        conn,
        flow_id=flow_id,
        flow_version=flow_version,
        record_id=record_id,
        now=now,
        due_at=now,
        status="cancelled",
    )
    stopped = EnrollmentState(
        enrollment_id=eid,
        flow_key=flow_key,
        flow_version=flow_version,
        record_id=record_id,
        entered_at=now,
    )
    first = [cancel(stopped, now=now, reason=reason)]
    _cancel_inside(conn, flow_id, flow_key, record_id, reason=reason, now=now, first=first)
    notify_loop_guard(
        conn,
        reason=reason,
        controller=controller,
        told=told,
        enrollment_id=eid,
        record_id=record_id,
        now=now,
    )
    return reason


def _cancel_inside(
    conn: sa.Connection,
    flow_id: int,
    flow_key: str,
    record_id: int,
    *,
    reason: str,
    now: datetime,
    first: Sequence[EnrollmentState] = (),
    keep: Collection[int] = (),
) -> None:
    """Write `first` and cancel, with `reason`, every enrollment of the record still inside the
    flow, those not entered yet included (a pending follow-up of a looping flow must not enter
    either), except `keep` (the enrollments the caller is moving and writes itself)."""
    states = list(first)
    running = repo.lock(
        conn,
        conn.execute(
            sa.select(enrollments.c.id).where(
                enrollments.c.flow_id == flow_id,
                enrollments.c.record_id == record_id,
                enrollments.c.status.in_(repo.RUNNING),
            )
        )
        .scalars()
        .all(),
        owner=None,
    )
    for r in running:
        if r.id in keep:
            continue
        state = _state_of(r, flow_key, entered_at=r.entered_at)
        states.append(cancel(state, now=now, reason=reason))
    repo.save(conn, states, [], now=now)
    close_tasks(conn, [], [s.enrollment_id for s in states], now=now)


def _held_at_entry(
    conn: sa.Connection,
    row: repo.EnrollmentRow,
    info: repo.FlowInfo,
    *,
    now: datetime,
    moving: Sequence[int] = (),
    refusals: list[Decision],
) -> str | None:
    """Why an enrollment that comes due to enter (state NULL: a delayed follow-up, a start-list
    row due later) must not enter after all, or None. Two cases:

    - a follow-up start that tripped the loop guard: `effects` wrote it with status 'waiting'
      and no state, and already notified and kept the reason. It is cancelled here, with every
      enrollment of the record still inside the flow, because the start was made inside the
      batch that moved the flow's own enrollment, whose state that batch wrote afterwards
      (`moving`: those of this batch, which the caller cancels as it writes them);
    - a flow that stopped admitting records since the start was made (draining): the record
      does not enter, and the reason goes to the not-entered list (added to `refusals`, which
      the caller writes for its whole batch).
    """
    if row.status == "waiting":
        reason = loop_guard_reason(info.key, row.record_id)
        _cancel_inside(
            conn,
            row.flow_id,
            info.key,
            row.record_id,
            reason=reason,
            now=now,
            keep={row.id, *moving},
        )
        return reason
    refusal = admission_refusal(info.status)
    if refusal is None:
        return None
    kinds = {t.type for t in info.definition.triggers if t.type in ("follow_up", "start_list")}
    trigger = kinds.pop() if len(kinds) == 1 else "follow_up or start_list"
    refusals.append(Decision(row.flow_id, row.record_id, trigger, refusal))
    return f"not entered: {refusal}"


def cancel_enrollment(
    ctx: Context, actor: Actor, enrollment_id: int, reason: str | None = None
) -> EnrollmentView:
    """Stop one record's run by hand (managers and admins): it ends cancelled where it is, its
    open tasks are cancelled and its messages not yet sent are not sent; the record's history
    says who did it and why. A run that has already ended is refused, with how it ended."""
    require_manager(actor, "cancel a record's run")
    now = ctx.now()
    why = f"cancelled by {actor.username}" + (
        f": {reason.strip()}" if reason and reason.strip() else ""
    )
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if row.status not in repo.RUNNING:
            ended = row.state.end_reason if row.state is not None else ""
            raise ConflictError(
                f"enrollment {enrollment_id} has already ended ({row.status}"
                + (f": {ended})" if ended else ")")
            )
        state = _state_of(row, flow.key, entered_at=row.entered_at)
        repo.save(conn, [cancel(state, now=now, reason=why)], [], now=now)
        close_tasks(conn, [], [row.id], now=now)
        conn.execute(
            record_history.insert().values(
                record_id=row.record_id,
                enrollment_id=row.id,
                message=f"run of flow {flow.key!r} {why}",
                at=now,
            )
        )
        return enrollment_view(conn, ctx, enrollment_id)


def _locked(
    conn: sa.Connection, actor: Actor, enrollment_id: int
) -> tuple[repo.EnrollmentRow, sa.Row[Any]]:
    rows = repo.lock(conn, [enrollment_id], owner=None)
    flow = (
        conn.execute(sa.select(flows).where(flows.c.id == rows[0].flow_id)).first()
        if rows
        else None
    )
    if not rows or flow is None or not can_see_flow(conn, actor, flow):
        raise NotFoundError(f"no enrollment {enrollment_id} that you can see")
    return rows[0], flow


def decide(
    ctx: Context,
    actor: Actor,
    enrollment_id: int,
    step_key: str,
    button: str,
    comment: str | None = None,
) -> EnrollmentView:
    """Press `button` on approval step `step_key`: the record goes on along that button's branch
    (its next steps run at once when due). Refused with the engine's reason (ConflictError)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if flow.status not in repo.RUNNING_FLOWS:
            raise ConflictError(
                f"flow {flow.key!r} is {flow.status}: decisions wait until it runs again"
            )
        if row.state is None:
            raise ConflictError("the record has not entered the flow yet")
        event = DecisionMade(
            step_key=step_key, button=button, by=actor.username, comment=comment or ""
        )
        moved = move_batch(conn, ctx, actor, [row], now=now, events={row.id: event})
        refused = moved.outcomes[row.id].refused
        if refused:
            raise ConflictError(f"decision refused: {refused}")
        repo.notify_due(conn)
        return enrollment_view(conn, ctx, enrollment_id)


def restart_enrollment(ctx: Context, actor: Actor, enrollment_id: int) -> EnrollmentView:
    """Start the record over from the flow's first step (seed 003), also after it finished;
    the email count starts over. The flow must be running (active or draining)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row, flow = _locked(conn, actor, enrollment_id)
        if flow.status not in repo.RUNNING_FLOWS:
            raise ConflictError(f"flow {flow.key!r} is {flow.status}; restart it when it runs")
        if flow.status == "draining":
            # A restart admits the record again, and a draining flow admits nobody.
            raise ConflictError(
                f"flow {flow.key!r} is draining: records inside finish and no record enters "
                f"again, so enrollment {enrollment_id} cannot restart; reactivate the flow "
                f"(`crmflow flows resume {flow.key}`) to restart it"
            )
        if row.state is None:
            raise ConflictError("the record has not entered the flow yet; nothing to restart")
        if row.state.status is EnrollmentStatus.CANCELLED and row.state.end_reason.startswith(
            "loop guard"
        ):
            raise ConflictError("an enrollment stopped by the loop guard cannot be restarted")
        move_batch(conn, ctx, actor, [row], now=now, events={row.id: "restart"})
        repo.notify_due(conn)
        return enrollment_view(conn, ctx, enrollment_id)
