"""Carrying out the engine's commands on crmflow's own data, inside the batch's transaction.

Everything here happens in the transaction that moves the enrollments (DESIGN principle 3): a
task, a history line or a record change exists exactly when the step that made it is committed.
External effects only become outbox rows (`ON CONFLICT DO NOTHING` on their idempotency key); the
dispatcher delivers them. Each kind is applied set-based for the whole batch.

A command that cannot be carried out (a value that no longer fits the record, a follow-up flow
that refuses the record, an unknown list, SQL turned off) is never dropped silently: it comes back
as a failure, which the caller writes into the step run's action log.

Kinds apply in this order, so that each sees what the earlier ones wrote: record values and
status, related records, owners, lists, history, tasks, notifications, outbox, follow-ups, and
SQL last (an administrator's statement may read what the step just did). The larger kinds live in
modules of their own: `related_records`, `owner_assignment`, `record_groups`, `sql_actions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.engine.commands import (
    AddToGroup,
    AssignOwner,
    Command,
    CreateRecord,
    CreateTask,
    EndFlow,
    Notify,
    OutboxMessage,
    RemoveFromGroup,
    RunSql,
    SetStatus,
    StartFlow,
    UpdateRecord,
    WriteHistory,
)
from crmflow.engine.definition import FlowDefinition
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.entry import (
    Candidate,
    Decision,
    FlowRef,
    decide_entries,
    loop_guard_reason,
    notify_loop_guard,
    write_decisions,
)
from crmflow.services.owner_assignment import assign_owners
from crmflow.services.record_groups import GroupChange, apply_group_changes
from crmflow.services.record_types import catalog_in
from crmflow.services.records import FieldChange, update_records_in
from crmflow.services.related_records import create_related_records
from crmflow.services.sql_actions import run_sql_actions
from crmflow.services.users import SYSTEM_USERNAME
from crmflow.store import enrollments as repo
from crmflow.store.bulk import Writer
from crmflow.store.schema import (
    flows,
    notifications,
    record_history,
    tasks,
    users,
)

__all__ = [
    "Applied",
    "apply_commands",
]


# (enrollment id, step run, action index): where a failure goes in the step-run log.
ActionRef = tuple[int, int, int | None]


@dataclass
class Applied:
    """What applying a batch's commands produced: failures to put in the action logs."""

    failures: dict[ActionRef, str] = field(default_factory=dict)

    def fail(self, command: Command, reason: str) -> None:
        self.failures[(command.enrollment_id, command.step_run, command.action_index)] = reason


def apply_commands(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    commands: Sequence[Command],
    *,
    record_of: dict[int, int],
    flow_of: dict[int, str],
    now: datetime,
) -> Applied:
    """Apply `commands` (in the order the engine gave them) on `conn`.

    `record_of` / `flow_of` map each enrollment id to its record id / flow key. `actor` is who
    the record changes are attributed to (the system user for the worker).
    """
    applied = Applied()
    changes: list[tuple[Command, FieldChange]] = []
    history: list[dict[str, Any]] = []
    new_tasks: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    starts: list[StartFlow] = []
    group_changes: list[tuple[GroupChange, int]] = []
    creations: list[tuple[CreateRecord, int]] = []
    owners: list[tuple[AssignOwner, int]] = []
    statements: list[RunSql] = []
    for c in commands:
        record_id = record_of[c.enrollment_id]
        if isinstance(c, UpdateRecord):
            changes.append((c, FieldChange(record_id, c.values)))
        elif isinstance(c, SetStatus):
            changes.append((c, FieldChange(record_id, {"status": c.status})))
        elif isinstance(c, WriteHistory):
            history.append(_history(record_id, c.enrollment_id, c.message, now))
        elif isinstance(c, CreateTask):
            new_tasks.append(
                {
                    "enrollment_id": c.enrollment_id,
                    "record_id": record_id,
                    "step_key": c.step_key,
                    "run": c.step_run,
                    "title": c.title,
                    "description": c.description,
                    "assignee_kind": c.assignee.kind,
                    "assignee_ref": c.assignee.ref,  # a username, or an id: see _users_by_name
                    "due_at": c.due_at,
                    "buttons": [list(b) for b in c.buttons],
                    "status": "open",
                    "created_at": now,
                }
            )
        elif isinstance(c, Notify):
            targets = [("user", u) for u in c.users] + [("group", g) for g in c.groups]
            notes += [
                _notification(kind, ref, c.message, c.enrollment_id, record_id, now)
                for kind, ref in targets
            ]
        elif isinstance(c, OutboxMessage):
            messages.append(
                {
                    "enrollment_id": c.enrollment_id,
                    "step_key": c.step_key,
                    "step_run": c.step_run,
                    "idempotency_key": c.idempotency_key,
                    "kind": c.channel,
                    "payload": c.payload.model_dump(mode="json"),
                    "status": "pending",
                    "not_before": c.not_before,
                    "attempts": 0,
                    "created_at": now,
                }
            )
        elif isinstance(c, StartFlow):
            starts.append(c)
        elif isinstance(c, AddToGroup | RemoveFromGroup):
            group_changes.append((c, record_id))
        elif isinstance(c, CreateRecord):
            creations.append((c, record_id))
        elif isinstance(c, AssignOwner):
            owners.append((c, record_id))
        elif isinstance(c, RunSql):
            statements.append(c)
        elif isinstance(c, EndFlow):
            pass  # the engine has already ended the enrollment, with the reason
        else:  # pragma: no cover - a new command kind must be added above
            applied.fail(c, f"{c.kind} is not supported by this server")
    if changes:
        results = update_records_in(conn, ctx, actor, [change for _, change in changes])
        for (command, _), problem in zip(changes, results, strict=True):
            if problem is not None:
                applied.fail(command, f"not applied: {problem}")
    if creations:
        _, invitations = create_related_records(conn, ctx, actor, creations, applied.fail, now=now)
        messages += invitations
    assign_owners(conn, actor, owners, applied.fail, flow_of=flow_of, now=now)
    apply_group_changes(conn, group_changes, applied.fail, now=now)
    if history:
        writer = Writer(conn)
        writer.executemany(
            "insert into record_history (record_id, enrollment_id, message, at)"
            " values (?, ?, ?, ?)",
            [
                (h["record_id"], h["enrollment_id"], h["message"], writer.time(h["at"]))
                for h in history
            ],
        )
    _users_by_name(conn, new_tasks, notes)
    if new_tasks:
        conn.execute(tasks.insert(), new_tasks)
    if notes:
        conn.execute(notifications.insert(), notes)
    repo.insert_ignoring_duplicates(conn, messages)
    if starts:
        _start_follow_ups(conn, ctx, actor, starts, applied, flow_of=flow_of, now=now)
    run_sql_actions(conn, ctx.settings, statements, applied.fail)
    return applied


# Where tasks and notifications name their user: (kind column, reference column).
_USER_REFS = (("assignee_kind", "assignee_ref"), ("target_kind", "target_ref"))


def _users_by_name(conn: sa.Connection, *batches: list[dict[str, Any]]) -> None:
    """Tasks and notifications for a user are kept under the username, also when the engine
    named the user by id (a user field of the record, such as the requester's manager, holds the
    user's id): one task list per user, whatever the responsibility that filled it. A reference
    is an id only when the engine gave an int; an id that names nobody is kept as it is."""
    ids = {
        row[ref]
        for rows in batches
        for row in rows
        for kind, ref in _USER_REFS
        if row.get(kind) == "user" and isinstance(row.get(ref), int)
    }
    names: dict[int, str] = {}
    if ids:
        query = sa.select(users.c.id, users.c.username).where(users.c.id.in_(sorted(ids)))
        names = {int(r.id): str(r.username) for r in conn.execute(query)}
    for rows in batches:
        for row in rows:
            for _, ref in _USER_REFS:
                if ref in row:
                    value = row[ref]
                    row[ref] = names.get(value, str(value)) if isinstance(value, int) else value


def _history(
    record_id: int, enrollment_id: int | None, message: str, at: datetime
) -> dict[str, Any]:
    return {"record_id": record_id, "enrollment_id": enrollment_id, "message": message, "at": at}


def _notification(
    kind: str, ref: str | int, message: str, enrollment_id: int | None, record_id: int, at: datetime
) -> dict[str, Any]:
    return {
        "target_kind": kind,
        "target_ref": ref,
        "message": message,
        "enrollment_id": enrollment_id,
        "record_id": record_id,
        "created_at": at,
    }


# -- entering a flow: the rules shared by manual starts and follow-ups ---------------------------


def _start_follow_ups(
    conn: sa.Connection,
    ctx: Context,
    actor: Actor,
    starts: list[StartFlow],
    applied: Applied,
    *,
    flow_of: dict[int, str],
    now: datetime,
) -> None:
    """Each follow-up enters its flow at `at` (an enrollment not entered yet, due then), when the
    flow admits it now: the rules of every other trigger (active flow, loop guard, re-entry
    policy, entry condition on the record as it is now). Otherwise the action fails with the
    reason, the record's history says so, and the flow's not-entered list keeps it.

    The loop guard (seed 004) is the one refusal that acts: the start is written as an
    enrollment held back (status 'waiting', no state) and due now, whose turn cancels every
    enrollment of the record in the flow (`enrollments._held_at_entry`); not here, because the
    enrollment whose step made this start may be that flow's own, and this batch writes its
    state after the effects. The controller and the user who caused it are told now."""
    keys = sorted({s.flow for s in starts})
    rows = conn.execute(
        sa.select(flows.c.id, flows.c.key, flows.c.current_version).where(flows.c.key.in_(keys))
    )
    infos = repo.load_flows(conn, {(r.id, r.current_version) for r in rows}, definitions_cache(ctx))
    targets = {i.key: i for i in infos.values()}
    # Read after this batch's record changes were applied: the condition sees the record as
    # the step left it.
    snapshots = repo.load_records(conn, {s.record_id for s in starts}, catalog_in(conn))
    # The worker acts as the system user: then who began the chain is not known.
    told = actor.username if actor.username != SYSTEM_USERNAME else None
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
    refusals: list[dict[str, Any]] = []
    decisions: list[Decision] = []
    for n, reason in sorted(reasons.items()):
        start = starts[n]
        applied.fail(start, f"follow-up flow {start.flow!r} not started: {reason}")
        refusals.append(
            _history(
                start.record_id,
                start.enrollment_id,
                f"not entered in flow {start.flow!r}: {reason}",
                now,
            )
        )
        target = targets.get(start.flow)
        if target is not None and start.record_id in snapshots:
            decisions.append(Decision(target.id, start.record_id, "follow_up", reason))
    if refusals:
        conn.execute(record_history.insert(), refusals)
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
    conn: sa.Connection,
    target: repo.FlowInfo,
    source: str,
    start: StartFlow,
    *,
    told: str | None,
    now: datetime,
) -> str:
    """The loop guard trips on a follow-up start: the start is written held back (see
    `_start_follow_ups`), the controller and `told` are notified; the reason, in words."""
    reason = loop_guard_reason(target.key, start.record_id)
    eid = repo.insert_enrollment(
        conn,
        flow_id=target.id,
        flow_version=target.version,
        record_id=start.record_id,
        now=now,
        due_at=now,
        status="waiting",
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
