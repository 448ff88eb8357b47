"""Tasks and in-app notifications (`tasks`, `notifications`): what a flow's steps ask of people.

A task is in a person's (or a group's) task list; an approval task carries its buttons. A
notification is a message to a user or a group. Both name a user by username (see
`services.effects.people`). Tasks are closed by the batch runner (`runner.writes.close_tasks`)
when their approval's run is over or their enrollment is cancelled (a task that is not an
approval outlives a run that ends normally, unless its flow sets `cancel_open_tasks_on_end`);
the loop guard's notifications are written by `runner.loop_guard`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

import sqlalchemy as sa

from crmflow.store.idlists import IDS, among_bound, id_list
from crmflow.store.schema import enrollments, notifications, task_events, tasks, users

__all__ = [
    "CancelledTask",
    "NewNotification",
    "NewTask",
    "NewTaskEvent",
    "cancel_open_tasks",
    "close_tasks_of_runs",
    "delete_notifications",
    "insert_notifications",
    "insert_task_events",
    "insert_tasks",
    "reassign_task",
    "set_due_times",
    "set_task_status",
    "shift_open_dues",
    "user_assignees_of",
]


class NewTask(NamedTuple):
    """A task a step creates (open until done, refused or its run is over)."""

    enrollment_id: int
    record_id: int
    step_key: str
    run: int
    title: str
    description: str
    assignee_kind: str  # user | group
    assignee_ref: str
    due_at: datetime | None
    buttons: list[list[str]]  # approvals: [[key, label], ...]
    created_at: datetime
    due_field: str | None = None  # the due time follows this date of the record
    due_offset_days: int | None = None


class NewNotification(NamedTuple):
    target_kind: str  # user | group
    target_ref: str
    message: str
    enrollment_id: int | None
    record_id: int
    created_at: datetime
    task_id: int | None = None  # the task it tells of (the inbox links to it)


def insert_tasks(conn: sa.Connection, new: Sequence[NewTask]) -> list[int]:
    """Write `new` tasks, open, in one statement; their ids, in the order of `new`."""
    if not new:
        return []
    statement = tasks.insert().returning(tasks.c.id, sort_by_parameter_order=True)
    rows = conn.execute(statement, [{**t._asdict(), "status": "open"} for t in new])
    return [int(r.id) for r in rows]


def insert_notifications(conn: sa.Connection, new: Sequence[NewNotification]) -> None:
    """Write `new` notifications, unread, in one statement."""
    if new:
        conn.execute(notifications.insert(), [n._asdict() for n in new])


def close_tasks_of_runs(
    conn: sa.Connection, runs: Sequence[tuple[int, int]], *, now: datetime
) -> None:
    """The tasks still to do (open, or started: in_progress) of these (enrollment id, run)
    pairs, whose run is over, closed as done, in one executemany."""
    if runs:
        conn.execute(
            tasks.update()
            .where(
                tasks.c.enrollment_id == sa.bindparam("eid"),
                tasks.c.run == sa.bindparam("r"),
                sa.or_(*(tasks.c.status == x for x in _TO_DO)),  # not `in_`: executemany
            )
            .values(status="done", closed_at=sa.bindparam("at")),
            [{"eid": eid, "r": run, "at": now} for eid, run in runs],
        )


class CancelledTask(NamedTuple):
    id: int
    enrollment_id: int
    record_id: int
    title: str
    approval: bool  # an approval's task (it carries buttons)


_TO_DO = ("open", "in_progress")  # a task still to do (store.task_lists.OPEN_STATES)


@cache
def _to_do_of(dialect: str) -> sa.Select[Any]:
    """The tasks still to do of the enrollments `:ids`, by id (built once per dialect: every
    batch in which runs end asks)."""
    t = tasks.c
    return (
        sa.select(t.id, t.enrollment_id, t.record_id, t.title, t.buttons)
        .where(among_bound(t.enrollment_id, dialect), t.status.in_(_TO_DO))
        .order_by(t.id)
    )


def cancel_open_tasks(
    conn: sa.Connection,
    enrollment_ids: Collection[int],
    *,
    now: datetime,
    approvals_only: Collection[int] = (),
) -> list[CancelledTask]:
    """The tasks still to do (open or started) of these enrollments, which ended, closed as
    cancelled; of those in `approvals_only` (runs that ended normally and whose other tasks
    outlive them), only the approvals' tasks. The tasks cancelled, by id."""
    if not enrollment_ids:
        return []
    t = tasks.c
    dialect = conn.dialect.name
    query = _to_do_of(dialect)
    found = [
        CancelledTask(r.id, r.enrollment_id, r.record_id, r.title, bool(r.buttons))
        for r in conn.execute(query, {IDS: id_list(enrollment_ids, dialect)})
    ]
    kept = set(approvals_only)
    cancelled = [c for c in found if c.approval or c.enrollment_id not in kept]
    if cancelled:
        conn.execute(
            tasks.update()
            # Not `in_`: an expanding parameter cannot be used with executemany.
            .where(t.id == sa.bindparam("tid"), sa.or_(*(t.status == x for x in _TO_DO)))
            .values(status="cancelled", closed_at=now),
            [{"tid": c.id} for c in cancelled],
        )
    return cancelled


def user_assignees_of(conn: sa.Connection, enrollment_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The users the tasks of these enrollments were given to: `.enrollment_id`, `.run`, the
    user's `.id` and `.username`."""
    query = (
        sa.select(tasks.c.enrollment_id, tasks.c.run, users.c.id, users.c.username)
        .join(users, users.c.username == tasks.c.assignee_ref)
        .where(tasks.c.enrollment_id.in_(enrollment_ids), tasks.c.assignee_kind == "user")
    )
    return list(conn.execute(query))


# -- what people do to a task (services.tasks) ---------------------------------------------------


class NewTaskEvent(NamedTuple):
    """A line of a task's history: `by` (a username; None: crmflow) did `action`."""

    task_id: int
    at: datetime
    by: str | None
    action: str  # started | completed | commented | reassigned | cancelled | closed
    detail: str = ""


def insert_task_events(conn: sa.Connection, new: Sequence[NewTaskEvent]) -> None:
    """Write `new` lines of task histories, in one statement."""
    if new:
        conn.execute(task_events.insert(), [e._asdict() for e in new])


def set_task_status(
    conn: sa.Connection, task_id: int, status: str, *, closed_at: datetime | None
) -> None:
    """Task `task_id` now has `status` (closed at `closed_at`, None while it is still to do)."""
    conn.execute(
        tasks.update().where(tasks.c.id == task_id).values(status=status, closed_at=closed_at)
    )


def reassign_task(conn: sa.Connection, task_id: int, kind: str, ref: str) -> None:
    """Task `task_id` is now given to user or group (`kind`) `ref` (a username or group name)."""
    conn.execute(
        tasks.update().where(tasks.c.id == task_id).values(assignee_kind=kind, assignee_ref=ref)
    )


def shift_open_dues(conn: sa.Connection, flow_id: int, by: timedelta) -> None:
    """The due times of the tasks still to do of flow `flow_id`'s runs moved `by` (a pause,
    under the catch-up policy shift_delays), in one executemany."""
    t = tasks.c
    runs = sa.select(enrollments.c.id).where(enrollments.c.flow_id == flow_id)
    found = conn.execute(
        sa.select(t.id, t.due_at).where(
            t.enrollment_id.in_(runs),
            t.status.in_(_TO_DO),
            t.due_at.is_not(None),
        )
    ).all()
    if found:
        conn.execute(
            tasks.update().where(t.id == sa.bindparam("tid")).values(due_at=sa.bindparam("due")),
            [{"tid": r.id, "due": r.due_at + by} for r in found],
        )


def set_due_times(conn: sa.Connection, moved: Sequence[tuple[int, datetime | None]]) -> None:
    """New due times of tasks, (task id, due time), in one executemany."""
    if moved:
        conn.execute(
            tasks.update()
            .where(tasks.c.id == sa.bindparam("tid"))
            .values(due_at=sa.bindparam("due")),
            [{"tid": tid, "due": due} for tid, due in moved],
        )


def delete_notifications(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Delete the notifications `ids` (pruning: `store.notifications.forget_reads` first)."""
    if ids:
        conn.execute(notifications.delete().where(notifications.c.id.in_(ids)))
