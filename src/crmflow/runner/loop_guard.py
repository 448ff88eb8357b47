"""The loop guard acting (seed 004): the start it trips on is cancelled, with every enrollment
of the record still inside the flow, and the flow's controller and the user who caused it are
told. The counting rule is the engine's (`engine.entry.loop_guard_trips`).

It acts on two paths:
- a start made outside a batch (a manual start, a trigger): at once (`trip_loop_guard`);
- a follow-up start made by a batch's effects: the start is written HELD (status `held`, no
  state) and due now, the controller told at once; when it comes due, the batch that claims it
  cancels (`held_at_entry`). Not at once, because the enrollment whose step made the start may
  be the flow's own, whose state that batch writes after its effects.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from crmflow.engine.entry import HELD, Decision, admission_refusal, loop_guard_reason
from crmflow.engine.runtime import EnrollmentState, EnrollmentStatus
from crmflow.engine.transition import cancel
from crmflow.runner.evaluation import state_of
from crmflow.runner.writes import close_tasks
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection
from crmflow.store.tasks import NewNotification, insert_notifications

__all__ = ["cancel_inside", "held_at_entry", "notify_loop_guard", "trip_loop_guard"]


def notify_loop_guard(
    conn: Connection,
    *,
    reason: str,
    controller: str | None,
    told: str | None,
    enrollment_id: int,
    record_id: int,
    now: datetime,
    origin: str = "",
) -> None:
    """Tell the flow's controller and `told` (the user who caused the start) that the loop
    guard cancelled the flow for the record. `origin` says where the start came from and who
    began it; without it, a message with nobody to tell but the controller says the user who
    caused it is not known."""
    message = f"{reason}; the flow was cancelled for this record"
    if origin:
        message += f" ({origin})"
    elif not told:
        message += " (the user who caused it is not known)"
    targets = sorted({name for name in (told, controller) if name})
    insert_notifications(
        conn,
        [NewNotification("user", name, message, enrollment_id, record_id, now) for name in targets],
    )


def trip_loop_guard(
    conn: Connection,
    *,
    flow_id: int,
    flow_key: str,
    flow_version: int,
    controller: str | None,
    record_id: int,
    told: str | None,
    now: datetime,
) -> str:
    """The loop guard acts on a start made now: the start is recorded as cancelled, the
    record's running enrollments in the flow are cancelled, and the controller and `told` (the
    user who caused it) are notified. Returns the reason, in words."""
    reason = loop_guard_reason(flow_key, record_id)
    eid = repo.insert_enrollment(
        conn,
        flow_id=flow_id,
        flow_version=flow_version,
        record_id=record_id,
        now=now,
        due_at=now,
        status=EnrollmentStatus.CANCELLED.value,
    )
    stopped = EnrollmentState(
        enrollment_id=eid,
        flow_key=flow_key,
        flow_version=flow_version,
        record_id=record_id,
        entered_at=now,
    )
    first = [cancel(stopped, now=now, reason=reason)]
    cancel_inside(conn, flow_id, flow_key, record_id, reason=reason, now=now, first=first)
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


def cancel_inside(
    conn: Connection,
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
    running = repo.lock(conn, repo.inside_ids(conn, flow_id, record_id))
    for r in running:
        if r.id in keep:
            continue
        state = state_of(r, flow_key, entered_at=r.entered_at)
        states.append(cancel(state, now=now, reason=reason))
    repo.save(conn, states, [], now=now)
    close_tasks(conn, [], [s.enrollment_id for s in states], now=now)


def held_at_entry(
    conn: Connection,
    row: repo.EnrollmentRow,
    info: repo.FlowInfo,
    *,
    now: datetime,
    moving: Sequence[int] = (),
    refusals: list[Decision],
) -> str | None:
    """Why an enrollment that comes due to enter (no state yet: a delayed follow-up, a
    start-list row due later) must not enter after all, or None. Two cases:

    - a follow-up start that tripped the loop guard (HELD): the effects already notified and
      kept the reason. It is cancelled here, with every enrollment of the record still inside
      the flow (`moving`: those of this batch, which the caller cancels as it writes them);
    - a flow that stopped admitting records since the start was made (draining): the record
      does not enter, and the reason goes to the not-entered list (added to `refusals`, which
      the caller writes for its whole batch).
    """
    if row.status == HELD:
        reason = loop_guard_reason(info.key, row.record_id)
        cancel_inside(
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
