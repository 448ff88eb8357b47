"""The engine's move for each enrollment of a batch, and the batch evaluated ahead of its write.

`engine_outcome` is the one call of the engine for a claimed enrollment: it enters (no state
yet), restarts or advances, and an engine that raises for one record stops that enrollment
alone. `evaluate_batch` runs it for a whole batch on a read snapshot, before the write
transaction begins (SQLite's write lock is then held only to write); `move_batch` reuses each
outcome whose inputs are unchanged (`reused`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from crmflow.context import Context, flow_zone
from crmflow.engine.budget import EvaluationLimits
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.entry import HELD, admission_refusal
from crmflow.engine.recordtypes import RecordType
from crmflow.engine.runtime import EnrollmentState, Event, RecordChanged, RecordSnapshot
from crmflow.engine.transition import (
    Outcome,
    advance,
    cancel,
    decision_condition_refusal,
    enter,
    restart,
)
from crmflow.logs import run_keys
from crmflow.runner.reference import Reference, load_reference
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection

__all__ = [
    "Evaluated",
    "Evaluation",
    "Restart",
    "condition_refusal_for",
    "engine_outcome",
    "evaluate_batch",
    "outcome_for",
    "reused",
    "state_of",
]

log = logging.getLogger("crmflow.enrollments")

Restart = Literal["restart"]


def state_of(row: repo.EnrollmentRow, flow_key: str, *, entered_at: datetime) -> EnrollmentState:
    """The enrollment's state; for one that has not entered yet (a start due later), the state
    it would have entered with at `entered_at`."""
    return row.state or EnrollmentState(
        enrollment_id=row.id,
        flow_key=flow_key,
        flow_version=row.flow_version,
        record_id=row.record_id,
        entered_at=entered_at,
    )


def engine_outcome(
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
            extra=run_keys(flow.key, row.flow_version, row.id, row.record_id, row.step_key),
        )
        reason = (
            f"crmflow failed on this record ({type(exc).__name__}: {exc}); it was stopped so "
            "that the others go on: restart it once the cause is fixed"
        )
        state = row.state or state_of(row, flow.key, entered_at=now)
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


# Not frozen, as `RecordSnapshot` (crmflow.engine.runtime): one or more per record of a batch.
@dataclass(slots=True)
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
    reference: Reference  # the records as read, before any outcome changed them
    # Nothing was committed between the snapshot and the write transaction (the caller knows):
    # the rows, flows, types and records read are still what the database holds.
    unchanged: bool = False


def reused(
    evaluation: Evaluation | None,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    record_type: RecordType | None,
    event: Event | Restart | None,
) -> Outcome | None:
    """The outcome `evaluation` computed for `row` from these very inputs, or None."""
    found = evaluation.outcomes.get(row.id) if evaluation is not None else None
    # A tuple compares its items by identity first: the objects of an unchanged evaluation are
    # matched at once, the values of a re-read one field by field.
    if found is None or found.inputs != (row, record, record_type, event):
        return None
    return found.outcome


def outcome_for(
    ctx: Context,
    flow: FlowDefinition,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    event: Event | Restart | None,
    rtype: RecordType | None,
    *,
    now: datetime,
    evaluation: Evaluation | None = None,
    zones: dict[str | None, ZoneInfo] | None = None,
    limits: EvaluationLimits | None = None,
) -> Outcome:
    """The outcome `evaluation` already computed from these inputs (`reused`), else
    `engine_outcome` with the flow's zone and the context's limits: the one place the runner
    turns a context into the engine's arguments. `zones` keeps the zones worked out, by the
    flow's own time zone (None: the organisation's), for a caller that asks for many records (a
    batch): each is then worked out once; such a caller also reads `limits` (the context's) once
    and gives them here."""
    found = reused(evaluation, row, record, rtype, event)
    if found is not None:
        return found
    zone = zones.get(flow.timezone) if zones is not None else None
    if zone is None:
        zone = flow_zone(ctx, flow)
        if zones is not None:
            zones[flow.timezone] = zone
    return engine_outcome(
        flow,
        row,
        record,
        event,
        zone=zone,
        record_type=rtype,
        now=now,
        limits=limits or ctx.evaluation_limits,
    )


def condition_refusal_for(
    ctx: Context,
    flow: FlowDefinition,
    row: repo.EnrollmentRow,
    record: RecordSnapshot,
    rtype: RecordType | None,
    *,
    now: datetime,
) -> str | None:
    """Why the approval step `row` waits at takes no decision now (its condition is false for
    `record`), or None: the engine's `decision_condition_refusal` with the flow's zone and the
    context's limits."""
    if row.state is None:
        return None
    return decision_condition_refusal(
        flow,
        row.state,
        record,
        now=now,
        zone=flow_zone(ctx, flow),
        record_type=rtype,
        limits=ctx.evaluation_limits,
    )


def evaluate_batch(
    conn: Connection,
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
    before it enters (a start held by the loop guard, a flow that stopped admitting) is left to
    `move_batch`, as is any whose row or record has changed by then."""
    reference = load_reference(conn, ctx, rows)
    infos, types = reference.infos, reference.types
    snapshots = dict(reference.records)
    reached: list[repo.EnrollmentRow] = []
    evaluated: dict[int, Evaluated] = {}
    begun: set[tuple[int, int]] = set()
    zones: dict[str | None, ZoneInfo] = {}  # see `outcome_for`
    limits = ctx.evaluation_limits
    for row in rows:
        pair = (row.flow_id, row.record_id)
        if deadline is not None and begun and pair not in begun and time.monotonic() >= deadline:
            continue
        begun.add(pair)
        reached.append(row)
        info = infos.get((row.flow_id, row.flow_version))
        if info is None or info.status not in repo.RUNNING_FLOWS:
            continue
        held = row.status == HELD or admission_refusal(info.status) is not None
        if row.state is None and held:
            continue  # it writes as it enters (`held_at_entry`): move_batch, under the lock
        flow = info.definition
        rtype = types.get(flow.record_type)
        record = snapshots.get(row.record_id)
        event: Event | None = None
        if record is None:
            if row.state is None:
                continue
            record = RecordSnapshot(row.record_id, flow.record_type, {})
            event = RecordChanged(change="deleted")
        outcome = outcome_for(
            ctx, flow, row, record, event, rtype, now=now, zones=zones, limits=limits
        )
        evaluated[row.id] = Evaluated((row, record, rtype, event), outcome)
        if not (outcome.refused or outcome.not_due):
            snapshots[row.record_id] = outcome.record
    return Evaluation(reached, evaluated, reference)
