"""Tasks and in-app notifications (`tasks`, `notifications`): what a flow's steps ask of people.

A task is in a person's (or a group's) task list; an approval task carries its buttons. A
notification is a message to a user or a group. Both name a user by username (see
`services.effects.people`). Tasks are closed by the batch runner (`runner.writes.close_tasks`)
when their run or their enrollment is over; the loop guard's notifications are written by
`runner.loop_guard`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from crmflow.store.idlists import among
from crmflow.store.schema import notifications, tasks, users

__all__ = [
    "NewNotification",
    "NewTask",
    "cancel_open_tasks",
    "close_tasks_of_runs",
    "insert_notifications",
    "insert_tasks",
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


class NewNotification(NamedTuple):
    target_kind: str  # user | group
    target_ref: str
    message: str
    enrollment_id: int | None
    record_id: int
    created_at: datetime


def insert_tasks(conn: sa.Connection, new: Sequence[NewTask]) -> None:
    """Write `new` tasks, open, in one statement."""
    if new:
        conn.execute(tasks.insert(), [{**t._asdict(), "status": "open"} for t in new])


def insert_notifications(conn: sa.Connection, new: Sequence[NewNotification]) -> None:
    """Write `new` notifications, unread, in one statement."""
    if new:
        conn.execute(notifications.insert(), [n._asdict() for n in new])


def close_tasks_of_runs(
    conn: sa.Connection, runs: Sequence[tuple[int, int]], *, now: datetime
) -> None:
    """The open tasks of these (enrollment id, run) pairs, whose run is over, closed as done,
    in one executemany."""
    if runs:
        conn.execute(
            tasks.update()
            .where(
                tasks.c.enrollment_id == sa.bindparam("eid"),
                tasks.c.run == sa.bindparam("r"),
                tasks.c.status == "open",
            )
            .values(status="done", closed_at=sa.bindparam("at")),
            [{"eid": eid, "r": run, "at": now} for eid, run in runs],
        )


def cancel_open_tasks(
    conn: sa.Connection, enrollment_ids: Collection[int], *, now: datetime
) -> None:
    """The open tasks of these enrollments, which ended, closed as cancelled."""
    conn.execute(
        tasks.update()
        .where(among(tasks.c.enrollment_id, enrollment_ids, conn), tasks.c.status == "open")
        .values(status="cancelled", closed_at=now)
    )


def user_assignees_of(conn: sa.Connection, enrollment_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The users the tasks of these enrollments were given to: `.enrollment_id`, `.run`, the
    user's `.id` and `.username`."""
    query = (
        sa.select(tasks.c.enrollment_id, tasks.c.run, users.c.id, users.c.username)
        .join(users, users.c.username == tasks.c.assignee_ref)
        .where(tasks.c.enrollment_id.in_(enrollment_ids), tasks.c.assignee_kind == "user")
    )
    return list(conn.execute(query))
