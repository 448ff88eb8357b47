"""Deadlines acted on: reminders, late notices and escalations, run from the worker loop.

`process_deadlines` reads the open tasks with a due time in bounded pages, asks
`engine.deadlines` which notices are due for those whose step has a `deadline`, and sends each
in a transaction of its own that first keeps it in `deadline_notices`: each goes once, however
many workers run.

- A reminder goes to the person (or group) the task is given to: an in-app notification, and an
  email through the outbox to a user with an address.
- When the deadline passes, the step is late: the record's history says so (runs show), the
  task shows late in the task lists (open past its due time), and the flow's controller is
  notified and emailed (unless the deadline says `notify_controller: false`).
- `escalate: {after_days: M, ...}`, M days after the deadline: the task is given to the
  escalation's `to` (the task's history and the record's say so), or the approval is decided by
  pressing its button `decide` as the system user ("decided automatically after N days late").

The emails are written as the failure notices to a controller are (`services.delivery_failures`):
an outbox email with an idempotency key of its own (`DEADLINE_PREFIX`), which the dispatcher
sends like any other; one that fails in turn is only logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.context import Context, definitions_cache, flow_zone
from crmflow.engine.commands import EmailPayload, message_id
from crmflow.engine.deadlines import Notice, Watched, due_notices
from crmflow.engine.definition import FlowDefinition
from crmflow.engine.definition.people import Deadline
from crmflow.engine.runtime import EnrollmentState
from crmflow.engine.steps.people import resolve
from crmflow.engine.steps.scope import EvaluationError
from crmflow.errors import ConflictError, CrmflowError, NotFoundError
from crmflow.runner import load_reference
from crmflow.services.delivery_failures import DEADLINE_NOTICE_PREFIX
from crmflow.services.task_dues import moved_dues, write_moved_dues
from crmflow.services.user_emails import reachable_by_email
from crmflow.services.users import ensure_system_user
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row
from crmflow.store.deadlines import keep_notice, notices_sent, watched_tasks
from crmflow.store.groups import active_members_of_groups
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.outbox import insert_ignoring_duplicates
from crmflow.store.tasks import (
    NewNotification,
    NewTaskEvent,
    insert_notifications,
    insert_task_events,
)

__all__ = ["DEADLINE_PREFIX", "DeadlineCursor", "DeadlinesDone", "process_deadlines"]

log = logging.getLogger("crmflow.deadlines")

# The idempotency keys of the deadline emails: `crmflow-deadline:<notice key>:<recipient>`;
# the dispatcher treats them as notices (a failure of one is only logged).
DEADLINE_PREFIX = DEADLINE_NOTICE_PREFIX
PAGE = 200  # open tasks read at a time


@dataclass
class DeadlinesDone:
    reminders: int = 0
    late: int = 0
    escalations: int = 0

    @property
    def total(self) -> int:
        return self.reminders + self.late + self.escalations


@dataclass
class DeadlineCursor:
    """Where the next deadline pass starts: after task `after` (0: at the first). A worker keeps
    one across its passes, so that a pass stopped by its time limit is taken up where it stopped
    and every open task is reached, however long the list (without it each pass would start
    again at the first task, and the tail of a long list would never be seen)."""

    after: int = 0


@dataclass(frozen=True)
class _Due:
    notice: Notice
    task: Row
    flow: FlowDefinition
    flow_key: str
    deadline: Deadline
    due_at: datetime  # the task's, moved with its record's date when it follows one


def process_deadlines(
    ctx: Context,
    *,
    now: datetime,
    page: int = PAGE,
    time_limit: float | None = None,
    cursor: DeadlineCursor | None = None,
) -> DeadlinesDone:
    """Send the deadline notices due at `now`, page after page of open tasks by id, until all
    are seen or `time_limit` seconds have passed (at least one page is read in any case).

    With a `cursor` the pass starts after `cursor.after`, goes to the end of the list, then
    round from the first task up to where it started; stopped by the time limit, it leaves the
    cursor at the last task it read, for the next pass to go on from there."""
    done = DeadlinesDone()
    stop = time.monotonic() + time_limit if time_limit is not None else None
    start = cursor.after if cursor is not None else 0
    after, wrapped = start, False
    while True:
        with ctx.engine.connect() as conn:
            tasks = watched_tasks(conn, after_id=after, limit=page)
            if wrapped:  # round again from the first: only up to where this pass started
                tasks = [t for t in tasks if t.id <= start]
            if tasks:
                infos = repo.load_flows(
                    conn, {(t.flow_id, t.flow_version) for t in tasks}, definitions_cache(ctx)
                )
                moves = moved_dues(conn, ctx, tasks, infos)
                due_at = {t.id: t.due_at for t in tasks} | {tid: at for tid, at, _ in moves}
                due = _due(conn, tasks, infos, due_at, now=now)
        if tasks:
            write_moved_dues(ctx, moves, now=now)
            for item in due:
                try:
                    _send(ctx, item, now=now, done=done)
                except Exception as exc:  # one notice that fails does not stop the others
                    log.error(
                        "deadline notice %s not sent: %s", item.notice.key, exc, exc_info=True
                    )
            after = tasks[-1].id
        at_end = len(tasks) < page or (wrapped and after >= start)
        if at_end and (wrapped or start == 0):
            after = 0  # the whole list was seen: the next pass starts at the first task
            break
        if at_end:  # the end of the list: round from the first task up to `start`
            after, wrapped = 0, True
        if stop is not None and time.monotonic() >= stop:
            break
    if cursor is not None:
        cursor.after = after
    return done


def _due(
    conn: Connection,
    tasks: list[Row],
    infos: Mapping[tuple[int, int], repo.FlowInfo],
    due_at: Mapping[int, datetime | None],
    *,
    now: datetime,
) -> list[_Due]:
    """The notices due at `now` about `tasks`, each due at `due_at` (moved with its date)."""
    sent = notices_sent(conn, [t.id for t in tasks])
    out: list[_Due] = []
    for task in tasks:
        info = infos.get((task.flow_id, task.flow_version))
        step = info.definition.step(task.step_key) if info is not None else None
        deadline_at = due_at.get(task.id)
        if info is None or step is None or step.deadline is None or deadline_at is None:
            continue
        if info.status not in repo.RUNNING_FLOWS:
            continue  # a paused flow's deadlines wait for it (and move with the pause)
        deadline = step.deadline
        escalate = deadline.escalate
        watched = Watched(
            task_id=task.id,
            started_at=task.created_at,
            deadline_at=deadline_at,
            remind_every_days=deadline.remind_every_days,
            escalate_after_days=escalate.after_days if escalate is not None else None,
        )
        mine = frozenset(k for k in sent if k.startswith(f"task:{task.id}:"))
        out += [
            _Due(n, task, info.definition, info.key, deadline, deadline_at)
            for n in due_notices(watched, mine, now)
        ]
    return out


def _send(ctx: Context, item: _Due, *, now: datetime, done: DeadlinesDone) -> None:
    notice = item.notice
    if notice.kind == "escalation":
        _escalate(ctx, item, now=now, done=done)
        return
    with ctx.engine.begin() as conn:
        if not keep_notice(conn, notice.key, item.task.id, notice.kind, now=now):
            return
        if notice.kind == "reminder":
            _remind(conn, ctx, item, now=now)
            done.reminders += 1
        else:
            _late(conn, ctx, item, now=now)
            done.late += 1


def _due_day(ctx: Context, item: _Due) -> str:
    return item.due_at.astimezone(flow_zone(ctx, item.flow)).date().isoformat()


def _who(task: Row) -> str:
    ref = str(task.assignee_ref)
    return f"group:{ref}" if task.assignee_kind == "group" else ref


def _where(item: _Due) -> str:
    return f"flow {item.flow_key!r}, record {item.task.record_id}, step {item.task.step_key!r}"


def _remind(conn: Connection, ctx: Context, item: _Due, *, now: datetime) -> None:
    task = item.task
    text = f"Reminder: task {task.title!r} is due on {_due_day(ctx, item)} ({_where(item)})"
    _tell(conn, ctx, item, task.assignee_kind, task.assignee_ref, text, now=now)


def _late(conn: Connection, ctx: Context, item: _Due, *, now: datetime) -> None:
    task = item.task
    line = (
        f"Step {task.step_key!r} is late: task {task.title!r}, given to {_who(task)}, "
        f"was due on {_due_day(ctx, item)}"
    )
    insert_history(conn, [HistoryEntry(task.record_id, task.enrollment_id, line, now)])
    due = f"was due on {_due_day(ctx, item)}"
    insert_task_events(conn, [NewTaskEvent(task.id, now, None, "late", due)])
    controller = item.flow.controller
    if item.deadline.notify_controller and controller:
        _tell(conn, ctx, item, "user", controller, f"{line} ({_where(item)})", now=now)


def _tell(
    conn: Connection,
    ctx: Context,
    item: _Due,
    kind: str,
    ref: str,
    text: str,
    *,
    now: datetime,
) -> None:
    """An in-app notification to `ref` (a user or a group) and an email through the outbox to
    each user it reaches who is active and has an address: the user, or each active member of
    the group. The notification says who got no email, and why."""
    if kind == "group":
        names = [m.username for m in active_members_of_groups(conn, [ref])]
        if not names:
            text += f" (no email sent: group {ref!r} has no active member)"
    else:
        names = [ref]
    reach = reachable_by_email(conn, names)
    emailed = reach.emailed
    if reach.missing:
        text += f" (no email sent to {', '.join(f'{n}: {why}' for n, why in reach.missing)})"
    task = item.task
    note = NewNotification(kind, ref, text, task.enrollment_id, task.record_id, now, task.id)
    insert_notifications(conn, [note])
    subject = (
        f"crmflow: reminder, {task.title}"
        if item.notice.kind == "reminder"
        else f"crmflow: step {task.step_key} of flow {item.flow_key} is late "
        f"(record {task.record_id})"
    )
    rows: list[dict[str, Any]] = []
    for username, address in emailed:
        key = f"{DEADLINE_PREFIX}{item.notice.key}:{username}"
        payload = EmailPayload(
            message_id=message_id(key, ctx.settings.mail_from),
            to=(address,),
            subject=subject,
            body=f"{text}\n\nTask: {task.id}\nRecord: {task.record_id}\n"
            f"Run: {task.enrollment_id}\n",
            archive=False,
            record_id=task.record_id,
            category="transactional",  # to a user of crmflow: no unsubscribe link
        )
        rows.append(
            {
                "enrollment_id": task.enrollment_id,
                "step_key": task.step_key,
                "step_run": task.run,
                "idempotency_key": key,
                "kind": "email",
                "payload": payload.model_dump(mode="json"),
                "status": "pending",
                "not_before": now,
                "attempts": 0,
                "created_at": now,
            }
        )
    insert_ignoring_duplicates(conn, rows)


def _escalate(ctx: Context, item: _Due, *, now: datetime, done: DeadlinesDone) -> None:
    """The escalation with its notice kept. One that cannot be done (the step has moved on, the
    user named is deactivated) is kept too, and the record's history says why."""
    escalation = item.deadline.escalate
    assert escalation is not None
    task, notice = item.task, item.notice
    try:
        if escalation.decide is not None:
            _decide(ctx, item, escalation.decide)
        else:
            _reassign(ctx, item, now=now)
    except CrmflowError as exc:
        with ctx.engine.begin() as conn:
            if keep_notice(conn, notice.key, task.id, notice.kind, now=now):
                line = f"Step {task.step_key!r} is late, but its escalation was not done: {exc}"
                insert_history(conn, [HistoryEntry(task.record_id, task.enrollment_id, line, now)])
        return
    done.escalations += 1


def _days(days: int) -> str:
    return f"{days} day{'s' if days != 1 else ''}"


def _decide(ctx: Context, item: _Due, button: str) -> None:
    """`button` pressed as the system user, the notice kept on the decision's transaction."""
    # Local: services.enrollments imports the runner and the services above this module.
    from crmflow.services.enrollments import decide  # noqa: PLC0415 - see above

    task, notice = item.task, item.notice
    why = f"decided automatically after {_days(notice.days_late)} late"

    def keep(conn: Connection, _state: EnrollmentState) -> None:
        now = ctx.now()
        if not keep_notice(conn, notice.key, task.id, notice.kind, now=now):
            raise ConflictError(f"escalation {notice.key} was already done")
        line = f"Step {task.step_key!r}: {why} (button {button!r})"
        insert_history(conn, [HistoryEntry(task.record_id, task.enrollment_id, line, now)])

    system = ensure_system_user(ctx)
    decide(ctx, system, task.enrollment_id, task.step_key, button, why, before=keep)


def _reassign(ctx: Context, item: _Due, *, now: datetime) -> None:
    """The task given to the escalation's `to` (`services.tasks.reassign`, as the system
    user: the task's history says so), then the notice kept."""
    from crmflow.services import tasks as task_service  # noqa: PLC0415 - a service beside

    task, notice = item.task, item.notice
    kind, ref = _escalation_target(ctx, item)
    note = f"escalated after {_days(notice.days_late)} late"
    system = ensure_system_user(ctx)
    # An approval's step then asks them, in the reassignment's transaction (`tasks.reassign`):
    # one that is refused leaves the decision with whoever was asked.
    if kind == "group":
        task_service.reassign(ctx, system, task.id, group=ref, note=note)
    else:
        task_service.reassign(ctx, system, task.id, user=ref, note=note)
    with ctx.engine.begin() as conn:
        keep_notice(conn, notice.key, task.id, notice.kind, now=now)
        who = f"group:{ref}" if kind == "group" else ref
        line = f"Task {task.title!r} of step {task.step_key!r} given to {who}: {note}"
        insert_history(conn, [HistoryEntry(task.record_id, task.enrollment_id, line, now)])


def _escalation_target(ctx: Context, item: _Due) -> tuple[str, str]:
    """Who the escalation's `to` names, resolved against the record as the runner resolves a
    step's responsibility (one that names nobody falls back to the controller)."""
    escalation = item.deadline.escalate
    assert escalation is not None and escalation.to is not None
    with ctx.engine.begin() as conn:
        rows = repo.lock(conn, [item.task.enrollment_id])
        reference = load_reference(conn, ctx, rows)
    record = reference.records.get(item.task.record_id)
    if record is None:
        raise NotFoundError(f"record {item.task.record_id} is gone")
    try:
        assignee = resolve(escalation.to, item.flow, record)
    except EvaluationError as exc:
        raise ConflictError(str(exc)) from exc
    return assignee.kind, str(assignee.ref)
