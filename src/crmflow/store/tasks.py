"""Tasks and in-app notifications (`tasks`, `notifications`): what a flow's steps ask of people.

A task is in a person's (or a group's) task list; an approval task carries its buttons. A
notification is a message to a user or a group. Both name a user by username (see
`services.effects.people`). Tasks are closed by `services.enrollments`, and the loop guard's
notifications are written by `services.entry`: those statements belong here when they move.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from crmflow.store.schema import notifications, tasks

__all__ = ["NewNotification", "NewTask", "insert_notifications", "insert_tasks"]


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
