"""start_flow and end_flow: follow-up flows entered by the records the batch's steps name, and
the end of a flow, which the engine has already made (nothing is left to do for it here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from crmflow.engine.commands import EndFlow, StartFlow
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.entry import HELD
from crmflow.services.definitions import definitions_cache
from crmflow.services.effects.batch import Applies, EffectBatch
from crmflow.services.entry import (
    Candidate,
    Decision,
    FlowRef,
    decide_entries,
    loop_guard_reason,
    notify_loop_guard,
    write_decisions,
)
from crmflow.services.record_types import catalog_in
from crmflow.services.users import SYSTEM_USERNAME
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.flows import current_versions_of
from crmflow.store.history import HistoryEntry, insert_history

__all__ = ["END_FLOW", "FOLLOW_UPS"]


def start_follow_ups(batch: EffectBatch, starts: Sequence[StartFlow]) -> None:
    """Each follow-up enters its flow at `at` (an enrollment not entered yet, due then), when the
    flow admits it now: the rules of every other trigger (active flow, loop guard, re-entry
    policy, entry condition on the record as it is now). Otherwise the action fails with the
    reason, the record's history says so, and the flow's not-entered list keeps it.

    The loop guard (seed 004) is the one refusal that acts: the start is written as an
    enrollment held back (status 'held', no state) and due now, whose turn cancels every
    enrollment of the record in the flow (`runner.loop_guard.held_at_entry`); not here, because the
    enrollment whose step made this start may be that flow's own, and this batch writes its
    state after the effects. The controller and the user who caused it are told now."""
    if not starts:
        return
    conn, ctx, now, flow_of = batch.conn, batch.ctx, batch.now, batch.flow_of
    versions = current_versions_of(conn, {s.flow for s in starts})
    infos = repo.load_flows(conn, versions, definitions_cache(ctx))
    targets = {i.key: i for i in infos.values()}
    # Read after this batch's record changes were applied: the condition sees the record as
    # the step left it.
    snapshots = repo.load_records(conn, {s.record_id for s in starts}, catalog_in(conn))
    # The worker acts as the system user: then who began the chain is not known.
    told = batch.actor.username if batch.actor.username != SYSTEM_USERNAME else None
    reasons: dict[int, str] = {}  # position in `starts` -> why it did not start
    candidates: list[tuple[int, Candidate]] = []
    for n, start in enumerate(starts):
        target = targets.get(start.flow)
        record = snapshots.get(start.record_id)
        if target is None:
            reasons[n] = f"there is no flow {start.flow!r}"
        elif record is None:
            reasons[n] = f"record {start.record_id} does not exist"
        else:
            source = flow_of[start.enrollment_id]
            refusal = _follow_up_refusal(target.definition, source)
            if refusal is not None:
                reasons[n] = refusal
            else:
                flow = FlowRef(
                    target.id, target.key, target.status, target.version, target.definition
                )
                candidates.append((n, Candidate(flow, start.record_id, "follow_up", record)))
    # The rules every trigger follows (active flow, loop guard, re-entry, entry condition), for
    # the whole batch at once.
    verdict = decide_entries(conn, ctx, [c for _, c in candidates], now=now)
    admitted = {id(c) for c in verdict.admitted}
    tripped = {id(c) for c in verdict.tripped}
    refused = iter(verdict.refused)  # in the candidates' order
    entering: list[tuple[int, int, int, datetime]] = []
    for n, candidate in candidates:
        start, target = starts[n], targets[starts[n].flow]
        if id(candidate) in admitted:
            entering.append((target.id, target.version, start.record_id, start.at))
            continue
        reasons[n] = next(refused).reason
        if id(candidate) in tripped:
            source = flow_of[start.enrollment_id]
            _hold_for_loop_guard(conn, target, source, start, told=told, now=now)
    repo.insert_starts(conn, entering, now=now)
    refusals: list[HistoryEntry] = []
    decisions: list[Decision] = []
    for n, reason in sorted(reasons.items()):
        start = starts[n]
        batch.fail(start, f"follow-up flow {start.flow!r} not started: {reason}")
        refusals.append(
            HistoryEntry(
                start.record_id,
                start.enrollment_id,
                f"not entered in flow {start.flow!r}: {reason}",
                now,
            )
        )
        target = targets.get(start.flow)
        if target is not None and start.record_id in snapshots:
            decisions.append(Decision(target.id, start.record_id, "follow_up", reason))
    insert_history(conn, refusals)
    write_decisions(conn, decisions, now=now)


def _follow_up_refusal(definition: FlowDefinition, source: str) -> str | None:
    """Why the target flow takes no follow-up from `source` at all (its triggers); its status
    and the rules of every trigger are `decide_entries`'."""
    triggers = [t for t in definition.triggers if t.type == "follow_up"]
    if not triggers:
        return "the flow has no follow_up trigger (add `- type: follow_up` to its triggers)"
    if not any(not t.from_flows or source in t.from_flows for t in triggers):
        return (
            f"its follow_up trigger does not accept starts from flow {source!r} "
            f"(add {source!r} to its from_flows)"
        )
    return None


def _hold_for_loop_guard(
    conn: Connection,
    target: repo.FlowInfo,
    source: str,
    start: StartFlow,
    *,
    told: str | None,
    now: datetime,
) -> str:
    """The loop guard trips on a follow-up start: the start is written held back (see
    `start_follow_ups`), the controller and `told` are notified; the reason, in words."""
    reason = loop_guard_reason(target.key, start.record_id)
    eid = repo.insert_enrollment(
        conn,
        flow_id=target.id,
        flow_version=target.version,
        record_id=start.record_id,
        now=now,
        due_at=now,
        status=HELD,
    )
    origin = f"started as a follow-up by flow {source!r}"
    if told:
        origin += f"; the chain was started by {told}"
    else:
        origin += "; the user whose change started the chain is not known"
    notify_loop_guard(
        conn,
        reason=reason,
        controller=target.definition.controller,
        told=told,
        enrollment_id=eid,
        record_id=start.record_id,
        now=now,
        origin=origin,
    )
    return reason


def _ended(batch: EffectBatch, commands: Sequence[EndFlow]) -> None:
    """The engine has already ended the enrollment, with the reason."""


FOLLOW_UPS = Applies((StartFlow,), start_follow_ups)
END_FLOW = Applies((EndFlow,), _ended)
