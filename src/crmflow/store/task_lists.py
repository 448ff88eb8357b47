"""Reads of task lists (`services.tasks` says who sees what): tasks with their flow, filtered
and paged, one task with its history. Only reads: `store.tasks` writes `tasks` and
`task_events`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.flow_access import flows_visible_to
from crmflow.store.schema import enrollments, flows, task_events, tasks

__all__ = [
    "OPEN_STATES",
    "TaskFilter",
    "find_task",
    "list_tasks",
    "open_tasks_of_run",
    "task_events_of",
]

# A task still to do: open, or started (in_progress). Late: one of these past its due date.
OPEN_STATES = ("open", "in_progress")


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a list shows.

    `whose` None: anyone's (an admin); else the tasks given to one of these usernames or to one
    of `groups`. `viewer_id` None: every flow (an admin); else only the flows that user can see.
    `state` is a task status or `late` (open or in progress with `due_at` reached: at or before
    `now`, as the deadline pass counts it).
    """

    now: datetime
    whose: Collection[str] | None = None
    groups: Collection[str] = ()
    viewer_id: int | None = None
    state: str | None = None
    flow: str | None = None
    step: str | None = None


def _select() -> sa.Select[Any]:
    return sa.select(
        tasks,
        flows.c.id.label("flow_id"),
        flows.c.key.label("flow_key"),
        flows.c.visibility.label("flow_visibility"),
        flows.c.owner_id.label("flow_owner_id"),
    ).select_from(
        tasks.join(enrollments, enrollments.c.id == tasks.c.enrollment_id).join(
            flows, flows.c.id == enrollments.c.flow_id
        )
    )


def _conditions(f: TaskFilter) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if f.whose is not None:
        mine = sa.and_(tasks.c.assignee_kind == "user", tasks.c.assignee_ref.in_(list(f.whose)))
        theirs = sa.and_(tasks.c.assignee_kind == "group", tasks.c.assignee_ref.in_(list(f.groups)))
        where.append(sa.or_(mine, theirs) if f.groups else mine)
    if f.viewer_id is not None:
        where.append(flows_visible_to(f.viewer_id))
    if f.state == "late":
        where += [tasks.c.status.in_(OPEN_STATES), tasks.c.due_at <= f.now]
    elif f.state is not None:
        where.append(tasks.c.status == f.state)
    if f.flow is not None:
        where.append(flows.c.key == f.flow)
    if f.step is not None:
        where.append(tasks.c.step_key == f.step)
    return where


def list_tasks(
    conn: sa.Connection, f: TaskFilter, *, after: int | None, limit: int
) -> list[sa.Row[Any]]:
    """The tasks `f` lets through, with `.flow_id`, `.flow_key`, `.flow_visibility` and
    `.flow_owner_id`, by id after `after`, at most `limit` of them."""
    query = _select().where(*_conditions(f))
    if after is not None:
        query = query.where(tasks.c.id > after)
    return list(conn.execute(query.order_by(tasks.c.id).limit(limit)))


def find_task(conn: sa.Connection, task_id: int, *, for_update: bool = False) -> sa.Row[Any] | None:
    """Task `task_id` with its flow (as in `list_tasks`), or None; `for_update` locks the task's
    row (PostgreSQL) until the transaction ends, so that two actions on it go one after the
    other."""
    query = _select().where(tasks.c.id == task_id)
    if for_update:
        query = query.with_for_update(of=tasks)
    return conn.execute(query).first()


def task_events_of(conn: sa.Connection, task_id: int) -> list[sa.Row[Any]]:
    """The history of task `task_id`, oldest first: `.at`, `.by`, `.action`, `.detail`."""
    query = sa.select(task_events).where(task_events.c.task_id == task_id)
    return list(conn.execute(query.order_by(task_events.c.id)))


def open_tasks_of_run(conn: sa.Connection, enrollment_id: int, run: int) -> int:
    """How many tasks of step run (`enrollment_id`, `run`) are still to do."""
    query = sa.select(sa.func.count()).where(
        tasks.c.enrollment_id == enrollment_id,
        tasks.c.run == run,
        tasks.c.status.in_(OPEN_STATES),
    )
    return int(conn.execute(query).scalar_one())
