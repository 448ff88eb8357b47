"""A step that waits for its tasks (create_task `wait: true`, docs/people.md): when the last of
the tasks its run made is done, the record goes on, in the transaction that completes it.

`services.tasks.complete` calls `waiting_run` before marking the task done (with the record's
run locked first, in the order a worker takes them: the run, then its tasks) and `go_on` after.
"""

from __future__ import annotations

from datetime import datetime

from crmflow.engine.runtime import TaskDone, WaitKind
from crmflow.errors import ConflictError
from crmflow.runner import move_batch
from crmflow.services.context import Actor, Context
from crmflow.store import enrollments as repo
from crmflow.store.database import Connection, Row
from crmflow.store.flows import find_flow
from crmflow.store.task_lists import open_tasks_of_run

__all__ = ["ask_instead", "go_on", "lock_run", "waiting_run"]


def lock_run(conn: Connection, enrollment_id: int) -> repo.EnrollmentRow | None:
    """The record's run `enrollment_id`, locked until the transaction ends (None: gone)."""
    rows = repo.lock(conn, [enrollment_id])
    return rows[0] if rows else None


def ask_instead(
    conn: Connection, run: repo.EnrollmentRow | None, task: Row, asked_of: str, *, now: datetime
) -> bool:
    """When `run` waits for a decision at approval `task`'s step run, it asks `asked_of` (a
    username or `group:<name>`) instead: the task's new assignee decides, and whoever was asked
    no longer may (unless an admin). Whether it did (False: the run is not waiting there)."""
    state = run.state if run is not None else None
    waiting = state.waiting if state is not None else None
    if state is None or waiting is None or waiting.kind is not WaitKind.APPROVAL:
        return False
    if (state.step_key, state.current_run) != (task.step_key, task.run):
        return False
    asked = waiting.model_copy(update={"asked_of": asked_of})
    repo.save(conn, [state.model_copy(update={"waiting": asked})], [], now=now)
    return True


def waiting_run(conn: Connection, run: repo.EnrollmentRow | None, task: Row) -> bool:
    """Whether `run` waits at `task`'s step run for its tasks. Refused (ConflictError) when it
    does but its flow is not running: the record could not go on now."""
    state = run.state if run is not None else None
    if state is None or state.waiting is None or state.waiting.kind is not WaitKind.TASK:
        return False
    if (state.step_key, state.current_run) != (task.step_key, task.run):
        return False
    flow = find_flow(conn, task.flow_id)
    if flow is None or flow.status not in repo.RUNNING_FLOWS:
        status = flow.status if flow is not None else "gone"
        raise ConflictError(
            f"flow {task.flow_key!r} is {status}: step {task.step_key!r} waits for task "
            f"{task.id} and goes on only while the flow runs; complete the task when it runs "
            "again"
        )
    return True


def go_on(
    conn: Connection,
    ctx: Context,
    actor: Actor,
    run: repo.EnrollmentRow,
    task: Row,
    *,
    now: datetime,
) -> None:
    """Move the record on from `task`'s step when none of its run's tasks is left to do."""
    if open_tasks_of_run(conn, run.id, task.run):
        return
    event = TaskDone(step_key=task.step_key, by=actor.username, task=task.title)
    moved = move_batch(conn, ctx, actor, [run], now=now, events={run.id: event})
    refused = moved.outcomes[run.id].refused if run.id in moved.outcomes else None
    if refused:
        raise ConflictError(f"the record could not go on: {refused}")
    repo.notify_due(conn)
