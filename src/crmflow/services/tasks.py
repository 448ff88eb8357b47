"""Task lists and what people do to their tasks (docs/people.md, "Task lists").

Whose tasks a list shows: a user's own (given to them, or to a group they belong to), and a
manager's also those of their team (the users whose manager they are); an admin's list holds
everyone's. A task of a private flow is shown only to the flow's members and owner, and to
admins. One task (`show`) can be read by whoever can see its flow, as the run's steps can.

Only the assignee (a member of the group it is given to), the assignee's manager, or an admin
may start, complete, comment or reassign a task; anyone else is refused (403) with who may.
Each action is a line of the task's history (`task_events`: who, when, what). An approval's task
is completed by deciding (`crmflow runs decide`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from crmflow.engine.commands import AskByEmail, Assignee
from crmflow.engine.definition import ApprovalStep
from crmflow.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Problem,
)
from crmflow.services import approval_links, task_waits
from crmflow.services.context import Actor, Context
from crmflow.services.definitions import definitions_cache
from crmflow.services.flow_access import assignable_refusal, can_see_flow
from crmflow.services.paging import DEFAULT_PAGE_SIZE, Page, keyset_page, page_size
from crmflow.store.database import Connection, Row, read_connection
from crmflow.store.enrollments import EnrollmentRow, load_flows
from crmflow.store.groups import find_group_id, group_names_by_user
from crmflow.store.history import HistoryEntry, insert_history
from crmflow.store.task_lists import OPEN_STATES, TaskFilter, find_task, list_tasks, task_events_of
from crmflow.store.tasks import (
    NewNotification,
    NewTaskEvent,
    insert_notifications,
    insert_task_events,
    reassign_task,
    set_task_status,
)
from crmflow.store.users import find_user_by_name, manager_of, team_of

__all__ = [
    "STATES",
    "TaskEventView",
    "TaskView",
    "comment",
    "complete",
    "list_page",
    "reassign",
    "show",
    "start",
]

STATES = ("open", "in_progress", "done", "cancelled", "late")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class TaskEventView:
    at: datetime
    by: str | None
    action: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "by": self.by,
            "action": self.action,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class TaskView:
    id: int
    flow: str
    step: str
    enrollment_id: int
    record_id: int
    title: str
    description: str
    assignee: str  # a username, or `group:<name>`
    status: str
    late: bool
    due_at: datetime | None
    buttons: list[str]  # an approval's buttons (decided with `crmflow runs decide`)
    created_at: datetime
    closed_at: datetime | None
    history: list[TaskEventView] | None = None  # only for one task (`show`)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "flow": self.flow,
            "step": self.step,
            "enrollment_id": self.enrollment_id,
            "record_id": self.record_id,
            "title": self.title,
            "description": self.description,
            "assignee": self.assignee,
            "status": self.status,
            "late": self.late,
            "due_at": _iso(self.due_at),
            "buttons": self.buttons,
            "created_at": self.created_at.isoformat(),
            "closed_at": _iso(self.closed_at),
        }
        if self.history is not None:
            out["history"] = [e.as_dict() for e in self.history]
        return out


def _assignee(row: Row) -> str:
    return f"group:{row.assignee_ref}" if row.assignee_kind == "group" else str(row.assignee_ref)


def _view(row: Row, now: datetime, history: list[TaskEventView] | None = None) -> TaskView:
    late = row.status in OPEN_STATES and row.due_at is not None and row.due_at <= now
    return TaskView(
        id=row.id,
        flow=row.flow_key,
        step=row.step_key,
        enrollment_id=row.enrollment_id,
        record_id=row.record_id,
        title=row.title,
        description=row.description,
        assignee=_assignee(row),
        status=row.status,
        late=late,
        due_at=row.due_at,
        buttons=[f"{key} ({label})" for key, label in row.buttons],
        created_at=row.created_at,
        closed_at=row.closed_at,
        history=history,
    )


def _groups_of(conn: Connection, user_id: int) -> list[str]:
    return group_names_by_user(conn, [user_id]).get(user_id, [])


def _filter(conn: Connection, actor: Actor, user: str | None, chosen: TaskFilter) -> TaskFilter:
    """`chosen` (state, flow, step) narrowed to whose tasks `actor` may list (module text)."""
    viewer = None if actor.is_admin else actor.id
    if user is None:
        if actor.is_admin:
            return chosen
        team = [u.username for u in team_of(conn, actor.id)]
        whose = [actor.username, *team]
        return replace(chosen, whose=whose, groups=_groups_of(conn, actor.id), viewer_id=viewer)
    row = find_user_by_name(conn, user)
    if row is None:  # a filter naming nobody is bad input, not a missing resource
        problem = Problem("user", f"no user {user!r}", "see `crmflow users list`")
        raise InvalidInputError("the task list's filter", [problem])
    if not actor.is_admin and actor.id not in (row.id, row.manager_id):
        raise PermissionDeniedError(
            f"you may list your own tasks and your team's (the users whose manager you are), "
            f"not {user!r}'s; an admin, or {user!r}'s manager, may"
        )
    groups = _groups_of(conn, row.id)
    return replace(chosen, whose=[row.username], groups=groups, viewer_id=viewer)


def list_page(
    ctx: Context,
    actor: Actor,
    *,
    state: str | None = None,
    flow: str | None = None,
    step: str | None = None,
    user: str | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page[TaskView]:
    """The tasks `actor` may see (module text), by id, `limit` at a time after `after`;
    `state` is a task status or `late`, `user` a username whose tasks to show."""
    size = page_size(ctx, limit)
    if state is not None and state not in STATES:
        raise InvalidInputError(
            "the task list request",
            [Problem("state", f"unknown state {state!r}", hint=f"use one of {', '.join(STATES)}")],
        )
    now = ctx.now()
    with read_connection(ctx.engine) as conn:
        chosen = TaskFilter(now, state=state, flow=flow, step=step)
        rows = list_tasks(conn, _filter(conn, actor, user, chosen), after=after, limit=size + 1)
    page = keyset_page(rows, size)
    return Page([_view(r, now) for r in page.items], page.next_after)


def _visible(conn: Connection, actor: Actor, task_id: int, *, for_update: bool = False) -> Row:
    row = find_task(conn, task_id, for_update=for_update)
    flow = _flow_of(row) if row is not None else None
    if row is None or flow is None or not (actor.is_admin or can_see_flow(conn, actor, flow)):
        raise NotFoundError(f"no task {task_id} that you can see (see `crmflow tasks list`)")
    return row


@dataclass(frozen=True)
class _Flow:
    """What `can_see_flow` reads of a flow."""

    id: int
    key: str
    visibility: str
    owner_id: int | None


def _flow_of(row: Row) -> Any:
    return _Flow(row.flow_id, row.flow_key, row.flow_visibility, row.flow_owner_id)


def show(ctx: Context, actor: Actor, task_id: int) -> TaskView:
    """Task `task_id` with its history, when `actor` can see its flow (else NotFoundError)."""
    with read_connection(ctx.engine) as conn:
        row = _visible(conn, actor, task_id)
        events = [
            TaskEventView(e.at, e.by, e.action, e.detail) for e in task_events_of(conn, task_id)
        ]
    created = TaskEventView(row.created_at, None, "created", f"given to {_assignee(row)}")
    return _view(row, ctx.now(), [created, *events])


def _require_may_act(conn: Connection, actor: Actor, row: Row) -> None:
    """Only the assignee (a member of its group), their manager, or an admin acts on a task."""
    if actor.is_admin:
        return
    if row.assignee_kind == "group":
        if row.assignee_ref in _groups_of(conn, actor.id):
            return
        who = f"the members of group {row.assignee_ref!r}"
    else:
        assignee = find_user_by_name(conn, row.assignee_ref)
        manager = manager_of(conn, assignee.id) if assignee is not None else None
        if actor.username == row.assignee_ref or (manager is not None and manager.id == actor.id):
            return
        who = f"{row.assignee_ref} (the assignee)"
        if manager is not None:
            who += f", their manager {manager.username}"
    raise PermissionDeniedError(
        f"only {who} or an admin may act on task {row.id}; {actor.username!r} may not "
        "(an admin or the assignee's manager can reassign it to you: `crmflow tasks reassign`)"
    )


def _acting(conn: Connection, actor: Actor, task_id: int, doing: str) -> Row:
    """Task `task_id`, locked, when `actor` may act on it and it is still to do."""
    row = _visible(conn, actor, task_id, for_update=True)
    _require_may_act(conn, actor, row)
    if row.status not in OPEN_STATES:
        raise ConflictError(f"task {task_id} is {row.status}: it cannot be {doing} any more")
    return row


def _done(ctx: Context, actor: Actor, task_id: int) -> TaskView:
    return show(ctx, actor, task_id)


def start(ctx: Context, actor: Actor, task_id: int, note: str | None = None) -> TaskView:
    """Mark task `task_id` as started (in_progress)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row = _acting(conn, actor, task_id, "started")
        if row.status == "in_progress":
            raise ConflictError(f"task {task_id} is already in progress")
        set_task_status(conn, task_id, "in_progress", closed_at=None)
        insert_task_events(
            conn, [NewTaskEvent(task_id, now, actor.username, "started", note or "")]
        )
    return _done(ctx, actor, task_id)


def complete(ctx: Context, actor: Actor, task_id: int, note: str | None = None) -> TaskView:
    """Mark task `task_id` as done. An approval's task is refused: it is done by deciding. When
    its step waits for its tasks and this was the last one, the record goes on."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        # The record's run first, then the task: the order a worker locks them in.
        run = task_waits.lock_run(conn, _visible(conn, actor, task_id).enrollment_id)
        row = _acting(conn, actor, task_id, "completed")
        if row.buttons:
            buttons = ", ".join(f"{key} ({label})" for key, label in row.buttons)
            raise ConflictError(
                f"task {task_id} is the approval of step {row.step_key!r}: it is completed by "
                f"deciding, with `crmflow runs decide {row.enrollment_id} {row.step_key} BUTTON` "
                f"or POST /api/runs/{row.enrollment_id}/decisions (buttons: {buttons})"
            )
        waits = task_waits.waiting_run(conn, run, row)
        set_task_status(conn, task_id, "done", closed_at=now)
        done = NewTaskEvent(task_id, now, actor.username, "completed", note or "")
        insert_task_events(conn, [done])
        if waits and run is not None:
            task_waits.go_on(conn, ctx, actor, run, row, now=now)
    return _done(ctx, actor, task_id)


def comment(ctx: Context, actor: Actor, task_id: int, text: str) -> TaskView:
    """Add a comment to task `task_id`'s history (also once the task is closed)."""
    if not text.strip():
        raise InvalidInputError(
            "the comment", [Problem("text", "is empty", hint="say something for the history")]
        )
    now = ctx.now()
    with ctx.engine.begin() as conn:
        row = _visible(conn, actor, task_id, for_update=True)
        _require_may_act(conn, actor, row)
        insert_task_events(
            conn, [NewTaskEvent(task_id, now, actor.username, "commented", text.strip())]
        )
    return _done(ctx, actor, task_id)


def _new_assignee(conn: Connection, user: str | None, group: str | None) -> tuple[str, str]:
    if (user is None) == (group is None):
        raise InvalidInputError(
            "the reassignment",
            [Problem("user", "give either a user or a group", hint="--user NAME or --group NAME")],
        )
    if group is not None:
        if find_group_id(conn, group) is None:
            raise NotFoundError(f"no group {group!r} (see `crmflow groups list`)")
        return "group", group
    assert user is not None
    found = find_user_by_name(conn, user)
    if found is None:
        raise NotFoundError(f"no user {user!r} (see `crmflow users list`)")
    if not found.active:
        raise ConflictError(f"user {user!r} is deactivated: give the task to someone active")
    return "user", found.username


def _email_asked(
    ctx: Context,
    conn: Connection,
    run: EnrollmentRow,
    row: Row,
    assignee: Assignee,
    *,
    now: datetime,
) -> None:
    """The approval email with fresh links to `assignee`, now asked at approval task `row`'s
    step, when that step emails its links (`email_link`); whoever could not be emailed is
    named in the record's history."""
    infos = load_flows(conn, {(run.flow_id, run.flow_version)}, definitions_cache(ctx))
    info = infos.get((run.flow_id, run.flow_version))
    step = info.definition.step(row.step_key) if info is not None else None
    if not isinstance(step, ApprovalStep) or not step.email_link:
        return
    command = AskByEmail(
        enrollment_id=row.enrollment_id,
        step_key=row.step_key,
        step_run=row.run,
        title=row.title,
        assignee=assignee,
        buttons=tuple((key, label) for key, label in row.buttons),
        due_at=row.due_at,
    )
    left_out = approval_links.email_asked_again(
        ctx, conn, command, record_id=row.record_id, flow_key=row.flow_key, now=now
    )
    if left_out:
        line = f"Step {row.step_key!r}: {left_out}; the decision is in the task lists"
        insert_history(conn, [HistoryEntry(row.record_id, row.enrollment_id, line, now)])


def reassign(
    ctx: Context,
    actor: Actor,
    task_id: int,
    *,
    user: str | None = None,
    group: str | None = None,
    note: str | None = None,
) -> TaskView:
    """Give task `task_id` to `user` or `group` instead; they are notified in their inbox. An
    approval's task gives them the decision: its step now asks them, and when it emails its
    links they get links of their own (those sent before are refused from now on)."""
    now = ctx.now()
    with ctx.engine.begin() as conn:
        # The record's run first, then the task: the order a worker locks them in.
        run = task_waits.lock_run(conn, _visible(conn, actor, task_id).enrollment_id)
        row = _acting(conn, actor, task_id, "reassigned")
        kind, ref = _new_assignee(conn, user, group)
        if (kind, ref) == (row.assignee_kind, row.assignee_ref):
            raise ConflictError(f"task {task_id} is already given to {_assignee(row)}")
        refusal = assignable_refusal(conn, _flow_of(row), Assignee(kind=kind, ref=ref))
        if refusal is not None:
            raise ConflictError(refusal)
        new = f"group:{ref}" if kind == "group" else ref
        detail = f"from {_assignee(row)} to {new}" + (
            f": {note.strip()}" if note and note.strip() else ""
        )
        reassign_task(conn, task_id, kind, ref)
        # An approval's task: its new assignee is the one who decides, emailed fresh links
        # when the step sends them.
        if row.buttons and task_waits.ask_instead(conn, run, row, new, now=now):
            assert run is not None
            _email_asked(ctx, conn, run, row, Assignee(kind=kind, ref=ref), now=now)
        insert_task_events(conn, [NewTaskEvent(task_id, now, actor.username, "reassigned", detail)])
        message = (
            f"Task {row.title!r} (#{task_id}, flow {row.flow_key}) was given to you "
            f"by {actor.username}"
        )
        insert_notifications(
            conn,
            [NewNotification(kind, ref, message, row.enrollment_id, row.record_id, now, task_id)],
        )
    return _done(ctx, actor, task_id)
