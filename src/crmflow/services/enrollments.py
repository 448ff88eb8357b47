"""Records going through flows: start one by hand or by API, decide an approval, restart, and
see where each record is and how a flow is doing.

`move_batch` is the heart shared with the worker: it runs the pure engine for a batch of locked
enrollments and writes everything they produced (states, step runs, record changes, tasks,
history, outbox) on the caller's transaction, with a fixed number of statements per batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmflow.engine.commands import Command, action_ref, idempotency_key
from crmflow.engine.definition import FlowDefinition
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
from crmflow.engine.transition import Outcome, advance, cancel, enter, restart, sequence_progress
from crmflow.errors import ConflictError, InvalidInputError, NotFoundError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.effects import Applied, apply_commands, loop_guard_tripped
from crmflow.services.entry import (
    Decision,
    admission_refusal,
    condition_refusal,
    loop_guard_reason,
    notify_loop_guard,
    reentry_refusal_of,
    write_decisions,
)
from crmflow.services.flow_access import can_see_flow, visible_flow, visible_flows
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.services.permissions import require_manager
from crmflow.services.record_types import catalog_in
from crmflow.store import enrollments as repo
from crmflow.store.schema import (
    enrollments,
    flows,
    outbox,
    record_history,
    records,
    step_runs,
    tasks,
    users,
)

__all__ = [
    "EnrollmentView",
    "FlowProgress",
    "RecordStatus",
    "RunSummary",
    "StepRunView",
    "cancel_enrollment",
    "close_tasks",
    "decide",
    "flow_progress",
    "flow_runs",
    "keep_refusal",
    "move_batch",
    "record_status",
    "restart_enrollment",
    "start_one",
    "start_record",
    "trip_loop_guard",
    "with_action_failures",
]

Restart = Literal["restart"]

# Definitions parsed once per flow version, per database (tests open many databases).
_DEFINITIONS: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[int, int], FlowDefinition]] = (
    weakref.WeakKeyDictionary()
)


def definitions_cache(ctx: Context) -> dict[tuple[int, int], FlowDefinition]:
    return _DEFINITIONS.setdefault(ctx.engine, {})


# -- moving a batch ------------------------------------------------------------------------------


@dataclass
class Moved:
    """What `move_batch` did: the outcome of each enrollment it called the engine for."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)  # frozen flows, timers not due

    @property
    def step_runs(self) -> int:
        return sum(len(o.log) for o in self.outcomes.values())


def _zone(ctx: Context, definition: FlowDefinition) -> ZoneInfo:
    return ZoneInfo(definition.timezone) if definition.timezone else ctx.zone


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
                actions.append(
                    a.model_copy(update={"status": ActionStatus.FAILED, "detail": detail})
                )
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
        out.append(
            log.model_copy(update={"actions": tuple(actions), "status": status, "reason": reason})
        )
    return out


def move_batch(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    rows: Sequence[repo.EnrollmentRow],
    *,
    now: datetime,
    events: Mapping[int, Event | Restart] | None = None,
) -> Moved:
    """Run the engine for locked enrollments `rows` at `now` (a timer, or `events[id]`) and
    write what it decided. Enrollments of flows that are not running are left as they are."""
    moved = Moved()
    if not rows:
        return moved
    infos = repo.load_flows(
        conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
    )
    types = catalog_in(conn)
    snapshots = repo.load_records(conn, {r.record_id for r in rows}, types)
    states: list[EnrollmentState] = []
    logs: list[StepRunLog] = []
    commands: list[Command] = []
    closed_runs: list[dict[str, Any]] = []
    over: list[int] = []
    record_of: dict[int, int] = {}
    flow_of: dict[int, str] = {}
    for row in rows:
        info = infos.get((row.flow_id, row.flow_version))
        if info is None or info.status not in repo.RUNNING_FLOWS:
            moved.skipped.append(row.id)
            continue
        flow = info.definition
        zone = _zone(ctx, flow)
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
            held = _held_at_entry(conn, row, info, now=now, moving=mates)
            if mates and held is not None:
                states[:] = [
                    cancel(s, now=now, reason=held)
                    if s.enrollment_id in mates and not s.is_over
                    else s
                    for s in states
                ]
                over += [i for i in mates if i != row.id and i not in over]
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
                gone = EnrollmentState(
                    enrollment_id=row.id,
                    flow_key=flow.key,
                    flow_version=row.flow_version,
                    record_id=row.record_id,
                    entered_at=now,
                )
                reason = held or "the record was deleted before it entered"
                outcome = Outcome(
                    state=cancel(gone, now=now, reason=reason),
                    record=record or RecordSnapshot(row.record_id, flow.record_type, {}),
                )
            else:
                outcome = enter(
                    flow,
                    enrollment_id=row.id,
                    flow_version=row.flow_version,
                    record=record,
                    now=now,
                    zone=zone,
                    change=entering,
                    record_type=rtype,
                )
        else:
            if record is None:
                record = RecordSnapshot(row.record_id, flow.record_type, {})
                event = RecordChanged(change="deleted")
            if event == "restart":
                outcome = restart(flow, row.state, record, now=now, zone=zone, record_type=rtype)
            else:
                outcome = advance(
                    flow,
                    row.state,
                    record,
                    now=now,
                    zone=zone,
                    event=event if not isinstance(event, str) else None,
                    record_type=rtype,
                )
        moved.outcomes[row.id] = outcome
        if outcome.refused or outcome.not_due:
            moved.skipped.append(row.id)
            continue
        snapshots[row.record_id] = outcome.record
        record_of[row.id] = row.record_id
        flow_of[row.id] = flow.key
        states.append(outcome.state)
        logs += outcome.log
        commands += outcome.commands
        old_run = row.state.current_run if row.state is not None else None
        if old_run is not None and outcome.state.current_run != old_run:
            # The waiting run (an approval) is over: its task is done.
            closed_runs.append({"eid": row.id, "r": old_run, "at": now})
        if outcome.state.is_over:
            over.append(row.id)
    applied = apply_commands(
        conn, ctx, actor, commands, record_of=record_of, flow_of=flow_of, now=now
    )
    runs_before = {r.id: r.state.step_runs if r.state is not None else 0 for r in rows}
    repo.save(conn, states, with_action_failures(logs, applied), now=now, runs_before=runs_before)
    close_tasks(conn, closed_runs, over, now=now)
    repo.release(conn, moved.skipped)
    return moved


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
            .where(tasks.c.enrollment_id.in_(over), tasks.c.status == "open")
            .values(status="cancelled", closed_at=now)
        )
        cancelled = sa.select(enrollments.c.id).where(
            enrollments.c.id.in_(over),
            enrollments.c.status == EnrollmentStatus.CANCELLED.value,
        )
        conn.execute(
            outbox.update()
            .where(outbox.c.enrollment_id.in_(cancelled), outbox.c.status == "pending")
            .values(status="cancelled")
        )


# -- views ---------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class StepRunView:
    run: int
    step: str
    type: str
    status: str
    reason: str
    started_at: datetime
    finished_at: datetime | None
    actions: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "step": self.step,
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "actions": self.actions,
        }


@dataclass(frozen=True)
class EnrollmentView:
    id: int
    flow: str
    flow_version: int
    record_id: int
    status: str
    step: str | None
    waiting_for: str  # what the current step waits for, in words
    buttons: list[str]
    due_at: datetime | None
    entered_at: datetime
    finished_at: datetime | None
    end_reason: str
    emails: tuple[int, int]  # (sent, in the flow): "2/5"
    step_runs: list[StepRunView]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "flow_version": self.flow_version,
            "record_id": self.record_id,
            "status": self.status,
            "step": self.step,
            "waiting_for": self.waiting_for,
            "buttons": self.buttons,
            "due_at": _iso(self.due_at),
            "entered_at": self.entered_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "end_reason": self.end_reason,
            "emails": f"{self.emails[0]}/{self.emails[1]}",
            "step_runs": [r.as_dict() for r in self.step_runs],
        }


@dataclass(frozen=True)
class RecordStatus:
    record_id: int
    record_type: str | None  # None: the record was deleted
    enrollments: list[EnrollmentView]
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "record_type": self.record_type,
            "flows": [e.as_dict() for e in self.enrollments],
            "history": self.history,
        }


@dataclass(frozen=True)
class FlowProgress:
    flow: str
    entered: int
    inside: int
    finished: int
    left: int
    cancelled: int
    per_step: dict[str, int]  # records at each step now
    # Records that went through each step (done or failed; an end step: reached), in step order.
    funnel: dict[str, int]
    emails: int  # email messages written to the outbox

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "entered": self.entered,
            "inside": self.inside,
            "finished": self.finished,
            "left": self.left,
            "cancelled": self.cancelled,
            "per_step": self.per_step,
            "funnel": self.funnel,
            "emails": self.emails,
        }


def _views(conn: sa.Connection, ctx: Context, rows: Sequence[sa.Row[Any]]) -> list[EnrollmentView]:
    """Views of enrollments (rows of enrollments joined with flows.key) with their step runs,
    in a fixed number of queries."""
    ids = [r.id for r in rows]
    runs: dict[int, list[StepRunView]] = {}
    if ids:
        named = _assignees_by_id(conn, ids)
        messages = _messages_by_key(conn, ids)
        for s in conn.execute(
            sa.select(step_runs)
            .where(step_runs.c.enrollment_id.in_(ids))
            .order_by(step_runs.c.enrollment_id, step_runs.c.run)
        ):
            reason, actions = s.reason, list(s.actions)
            for user_id, username in named.get((s.enrollment_id, s.run), {}).items():
                reason = reason.replace(f"asked of {user_id} (", f"asked of {username} (")
                actions = [
                    {**a, "detail": a["detail"].replace(f" for {user_id} (", f" for {username} (")}
                    if a.get("type") == "create_task"
                    else a
                    for a in actions
                ]
            actions = _with_messages(actions, s.enrollment_id, s.run, messages)
            runs.setdefault(s.enrollment_id, []).append(
                StepRunView(
                    s.run,
                    s.step_key,
                    s.step_type,
                    s.status,
                    reason,
                    s.started_at,
                    s.finished_at,
                    actions,
                )
            )
    infos = repo.load_flows(
        conn, {(r.flow_id, r.flow_version) for r in rows}, definitions_cache(ctx)
    )
    out = []
    for r in rows:
        state = EnrollmentState.model_validate(r.state) if r.state is not None else None
        info = infos.get((r.flow_id, r.flow_version))
        emails = (0, 0)
        if state is not None and info is not None:
            emails = sequence_progress(info.definition, state)
        waiting = state.waiting if state is not None else None
        waiting_for = waiting.description if waiting is not None else ""
        if state is None and r.status in repo.RUNNING:
            waiting_for = "enters the flow when due"
        out.append(
            EnrollmentView(
                id=r.id,
                flow=r.flow_key,
                flow_version=r.flow_version,
                record_id=r.record_id,
                status=r.status,
                step=r.step_key,
                waiting_for=waiting_for,
                buttons=[b.key for b in waiting.buttons] if waiting is not None else [],
                due_at=r.due_at,
                entered_at=state.entered_at if state is not None else r.entered_at,
                finished_at=r.finished_at,
                end_reason=state.end_reason if state is not None else "",
                emails=emails,
                step_runs=runs.get(r.id, []),
            )
        )
    return out


def _assignees_by_id(
    conn: sa.Connection, enrollment_ids: Sequence[int]
) -> dict[tuple[int, int], dict[str, str]]:
    """Per (enrollment, run), the users its tasks were given to: {user id: username}.

    A responsibility held in a record's user field (the requester's manager) names the user by
    id, the way records store users; the engine knows no usernames and its step-run log says
    "asked of 3 (the record's manager)". The task itself is stored under the username (see
    `effects`), and people read "asked of maria": the log's words are completed here.
    """
    found = conn.execute(
        sa.select(tasks.c.enrollment_id, tasks.c.run, users.c.id, users.c.username)
        .join(users, users.c.username == tasks.c.assignee_ref)
        .where(tasks.c.enrollment_id.in_(enrollment_ids), tasks.c.assignee_kind == "user")
    )
    out: dict[tuple[int, int], dict[str, str]] = {}
    for t in found:
        out.setdefault((t.enrollment_id, t.run), {})[str(t.id)] = t.username
    return out


def _messages_by_key(
    conn: sa.Connection, enrollment_ids: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """The outbox messages of these enrollments by idempotency key, as a person reads them."""
    found = conn.execute(
        sa.select(
            outbox.c.idempotency_key,
            outbox.c.kind,
            outbox.c.status,
            outbox.c.not_before,
            outbox.c.attempts,
        ).where(outbox.c.enrollment_id.in_(enrollment_ids))
    )
    return {
        m.idempotency_key: {
            "kind": m.kind,
            "status": m.status,
            "not_before": m.not_before.isoformat(),
            "attempts": m.attempts,
        }
        for m in found
    }


def _with_messages(
    actions: list[dict[str, Any]],
    enrollment_id: int,
    run: int,
    messages: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each external action with the state of the outbox message it wrote (`message`).

    An action that wrote a message is `done` as soon as the message is in the outbox; whether
    the message went is the outbox's to say: pending, sent, failed or cancelled. The key is the
    one the engine gave the message (enrollment, step run, action); a create_record action's
    invitation has that key with `:invitation`.
    """
    if not messages:
        return actions
    out = []
    for a in actions:
        key = idempotency_key(enrollment_id, run, action_ref(a.get("key"), a.get("index")))
        message = messages.get(key) or messages.get(f"{key}:invitation")
        out.append({**a, "message": message} if message is not None else a)
    return out


def _enrollment_select() -> sa.Select[Any]:
    return sa.select(enrollments, flows.c.key.label("flow_key")).join(
        flows, flows.c.id == enrollments.c.flow_id
    )


def _view(conn: sa.Connection, ctx: Context, enrollment_id: int) -> EnrollmentView:
    row = conn.execute(_enrollment_select().where(enrollments.c.id == enrollment_id)).one()
    return _views(conn, ctx, [row])[0]


def record_status(ctx: Context, actor: Actor, record_id: int) -> RecordStatus:
    """The flows `record_id` is or was in (those `actor` can see), oldest first: current step,
    what it waits for, each step run with what each action did and why; and its history."""
    with ctx.engine.connect() as conn:
        exists = conn.execute(sa.select(records.c.type).where(records.c.id == record_id)).first()
        query = (
            _enrollment_select()
            .where(enrollments.c.record_id == record_id, visible_flows(actor))
            .order_by(enrollments.c.id)
        )
        rows = conn.execute(query).all()
        if exists is None and not rows:
            raise NotFoundError(f"no record with id {record_id}")
        visible_ids = [r.id for r in rows]
        history = [
            {"at": h.at.isoformat(), "enrollment_id": h.enrollment_id, "message": h.message}
            for h in conn.execute(
                sa.select(record_history)
                .where(record_history.c.record_id == record_id)
                .where(
                    sa.or_(
                        record_history.c.enrollment_id.is_(None),
                        record_history.c.enrollment_id.in_(visible_ids),
                    )
                )
                .order_by(record_history.c.id)
            )
        ]
        rtype = exists.type if exists is not None else None
        return RecordStatus(record_id, rtype, _views(conn, ctx, rows), history)


def flow_progress(ctx: Context, actor: Actor, flow_key: str) -> FlowProgress:
    """How a flow is doing: entered / inside / finished / left / cancelled, records per step now,
    and how many went through each step."""
    with ctx.engine.connect() as conn:
        flow = visible_flow(conn, actor, flow_key)
        by_status: dict[str, int] = {}
        per_step: dict[str, int] = {}
        for r in conn.execute(
            sa.select(enrollments.c.status, enrollments.c.step_key, sa.func.count())
            .where(enrollments.c.flow_id == flow.id)
            .group_by(enrollments.c.status, enrollments.c.step_key)
        ):
            by_status[r[0]] = by_status.get(r[0], 0) + int(r[2])
            if r[0] in repo.RUNNING:
                step = r[1] or "(not entered yet)"
                per_step[step] = per_step.get(step, 0) + int(r[2])
        in_flow = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow.id)
        through = {
            r[0]: int(r[1])
            for r in conn.execute(
                sa.select(
                    step_runs.c.step_key, sa.func.count(sa.distinct(step_runs.c.enrollment_id))
                )
                .where(step_runs.c.enrollment_id.in_(in_flow))
                .where(
                    sa.or_(
                        step_runs.c.status.in_(("done", "failed")),
                        # An end step does nothing but end the enrollment: reaching it is going
                        # through it (its run says "ended", not "done").
                        sa.and_(step_runs.c.step_type == "end", step_runs.c.status == "ended"),
                    )
                )
                .group_by(step_runs.c.step_key)
            )
        }
        emails = conn.execute(
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.enrollment_id.in_(in_flow), outbox.c.kind == "email")
        ).scalar_one()
        [info] = repo.load_flows(
            conn, [(flow.id, flow.current_version)], definitions_cache(ctx)
        ).values()
    order = [s.key for s in info.definition.ordered_steps()]
    funnel = {key: through.get(key, 0) for key in order}
    funnel.update({k: v for k, v in through.items() if k not in funnel})
    return FlowProgress(
        flow=flow_key,
        entered=sum(by_status.values()),
        inside=sum(by_status.get(s, 0) for s in repo.RUNNING),
        finished=by_status.get("finished", 0),
        left=by_status.get("left", 0),
        cancelled=by_status.get("cancelled", 0),
        per_step=per_step,
        funnel=funnel,
        emails=int(emails),
    )


@dataclass(frozen=True)
class RunSummary:
    """One enrollment in the list of a flow's runs: which record, where it is, how it ended."""

    id: int  # the enrollment
    record_id: int
    record_name: str  # first and last name, or name / title; "" when the type has none
    status: str  # active | waiting | finished | left | cancelled
    step: str | None
    due_at: datetime | None
    entered_at: datetime
    finished_at: datetime | None
    end_reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "record_id": self.record_id,
            "record_name": self.record_name,
            "status": self.status,
            "step": self.step,
            "due_at": _iso(self.due_at),
            "entered_at": self.entered_at.isoformat(),
            "finished_at": _iso(self.finished_at),
            "end_reason": self.end_reason,
        }


RUN_STATUSES = tuple(s.value for s in EnrollmentStatus)


def _record_name(data: Mapping[str, Any] | None) -> str:
    if not data:
        return ""
    person = " ".join(str(data[k]) for k in ("first_name", "last_name") if data.get(k))
    return person or str(data.get("name") or data.get("title") or "")


def flow_runs(
    ctx: Context,
    actor: Actor,
    flow_key: str,
    *,
    status: str | None = None,
    step: str | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[RunSummary]:
    """The records that are or were in a flow (its running processes and their ends), in
    enrollment order, `limit` at a time; only those with `status` / at `step` when given."""
    size = page_size(ctx, limit)
    if status is not None and status not in RUN_STATUSES:
        raise InvalidInputError(
            "the runs filter",
            [Problem("status", f"unknown status {status!r}", hint=", ".join(RUN_STATUSES))],
        )
    with ctx.engine.connect() as conn:
        flow = visible_flow(conn, actor, flow_key)
        query = (
            sa.select(
                enrollments.c.id,
                enrollments.c.record_id,
                enrollments.c.status,
                enrollments.c.step_key,
                enrollments.c.due_at,
                enrollments.c.entered_at,
                enrollments.c.finished_at,
                enrollments.c.state,
                records.c.data,
            )
            .outerjoin(records, records.c.id == enrollments.c.record_id)
            .where(enrollments.c.flow_id == flow.id)
            .order_by(enrollments.c.id)
            .limit(size + 1)
        )
        if status is not None:
            query = query.where(enrollments.c.status == status)
        if step is not None:
            query = query.where(enrollments.c.step_key == step)
        if after is not None:
            query = query.where(enrollments.c.id > after)
        rows = conn.execute(query).all()
    return keyset_page(
        [
            RunSummary(
                id=r.id,
                record_id=r.record_id,
                record_name=_record_name(r.data),
                status=r.status,
                step=r.step_key,
                # Only a running enrollment is due; an ended one keeps no due time.
                due_at=r.due_at if r.status in repo.RUNNING else None,
                entered_at=r.entered_at,
                finished_at=r.finished_at,
                end_reason=str((r.state or {}).get("end_reason") or ""),
            )
            for r in rows
        ],
        size,
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
            return _view(conn, ctx, started)
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
    if loop_guard_tripped(conn, flow.id, record_id, now=now):
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
    refusal = reentry_refusal_of(conn, definition.reentry, flow.id, record_id, now=now)
    if refusal is None:
        snapshot = repo.load_records(conn, [record_id], catalog_in(conn))[record_id]
        zone = _zone(ctx, definition)
        refusal = condition_refusal(definition, snapshot, change=None, now=now, zone=zone)
    if refusal is not None:
        return refusal
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
        state = r.state or EnrollmentState(
            enrollment_id=r.id,
            flow_key=flow_key,
            flow_version=r.flow_version,
            record_id=record_id,
            entered_at=r.entered_at,
        )
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
) -> str | None:
    """Why an enrollment that comes due to enter (state NULL: a delayed follow-up, a start-list
    row due later) must not enter after all, or None. Two cases:

    - a follow-up start that tripped the loop guard: `effects` wrote it with status 'waiting'
      and no state, and already notified and kept the reason. It is cancelled here, with every
      enrollment of the record still inside the flow, because the start was made inside the
      batch that moved the flow's own enrollment, whose state that batch wrote afterwards
      (`moving`: those of this batch, which the caller cancels as it writes them);
    - a flow that stopped admitting records since the start was made (draining): the record
      does not enter, and the reason goes to the not-entered list.
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
    write_decisions(conn, [Decision(row.flow_id, row.record_id, trigger, refusal)], now=now)
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
        state = row.state or EnrollmentState(
            enrollment_id=row.id,
            flow_key=flow.key,
            flow_version=row.flow_version,
            record_id=row.record_id,
            entered_at=row.entered_at,
        )
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
        return _view(conn, ctx, enrollment_id)


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
        return _view(conn, ctx, enrollment_id)


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
        return _view(conn, ctx, enrollment_id)
