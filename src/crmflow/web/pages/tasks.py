"""The task lists (`/tasks`) and a task's page (`/tasks/{id}`): start, complete, comment,
reassign, and an approval's buttons for whoever may decide (docs/people.md, "Task lists").

Whose tasks a list holds, who may act on a task and who may decide an approval are the services'
rules (`services.tasks`, `services.enrollments`); a refusal is shown in their words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import Response

from crmflow.api.deps import AfterId, RowId
from crmflow.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from crmflow.services import enrollments, flows, records, run_views, tasks, users
from crmflow.services.context import Actor, Context
from crmflow.services.tasks import TaskView
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import act_then_see, flash, render, see_other

router = web_router()

PAGE_SIZE = 50
OPEN = ("open", "in_progress")
STATE_LABELS = {
    "open": "Open",
    "in_progress": "In progress",
    "done": "Done",
    "cancelled": "Cancelled",
    "late": "Late",
}
# The record values that name a record, in the order they are looked for.
NAME_FIELDS = ("name", "title", "subject", "reference", "email")

Text = Annotated[str, Form(max_length=2000)]


def when(ctx: Context) -> Callable[[datetime | None], str]:
    """A template's date formatter: `2026-12-07 10:00 CET` in the server's time zone; `—` for
    none."""

    def show(value: datetime | None) -> str:
        return value.astimezone(ctx.zone).strftime("%Y-%m-%d %H:%M %Z") if value else "—"

    return show


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _scope(user: Actor) -> str:
    if user.is_admin:
        return "Everyone's tasks"
    if user.is_manager_or_admin:
        return "My tasks and my team's"
    return "My tasks"


def _buttons(task: TaskView) -> list[tuple[str, str]]:
    """The approval's buttons as (key, label), from the service's `key (label)`."""
    found = []
    for text in task.buttons:
        key, _, label = text.partition(" (")
        found.append((key, label.removesuffix(")") or key))
    return found


@router.get("/tasks")
def task_list(
    request: Request,
    user: CurrentUser,
    state: Annotated[str | None, Query(max_length=20)] = None,
    flow: Annotated[str | None, Query(max_length=200)] = None,
    step: Annotated[str | None, Query(max_length=200)] = None,
    who: Annotated[str | None, Query(alias="user", max_length=200)] = None,
    after: AfterId | None = None,
) -> Response:
    ctx = context_of(request)
    chosen = {
        "state": _blank(state),
        "flow": _blank(flow),
        "step": _blank(step),
        "user": _blank(who),
    }
    problems: list[str] = []
    items: list[TaskView] = []
    next_url = None
    status_code = 200
    try:
        page = tasks.list_page(ctx, user, after=after, limit=PAGE_SIZE, **chosen)
    except InvalidInputError as exc:
        problems = [str(p) for p in exc.problems]
        status_code = 422
    except PermissionDeniedError as exc:
        problems = [exc.message]
        status_code = 403
    else:
        items = page.items
        if page.next_after is not None:
            kept = {k: v for k, v in chosen.items() if v}
            next_url = "/tasks?" + urlencode({**kept, "after": page.next_after})
    filters = {k: v or "" for k, v in chosen.items()}
    return render(
        request,
        "tasks.html",
        status_code=status_code,
        when=when(ctx),
        scope=_scope(user),
        tasks=items,
        filters=filters,
        states=STATE_LABELS,
        flow_choices=[(f.key, f.name) for f in flows.list_flows(ctx, user)],
        step_choices=_steps_of(ctx, user, chosen["flow"]),
        problems=problems,
        next_url=next_url,
        first_url="/tasks?" + urlencode({k: v for k, v in chosen.items() if v}) if after else None,
    )


def _steps_of(ctx: Context, user: Actor, flow: str | None) -> list[str]:
    """The step keys of `flow` (the step filter's suggestions); none without a flow."""
    if flow is None:
        return []
    try:
        document = flows.show_flow(ctx, user, flow).document or {}
    except NotFoundError:
        return []
    steps = document.get("steps") or []
    return [s["key"] for s in steps if isinstance(s, dict) and isinstance(s.get("key"), str)]


def _may_act(ctx: Context, user: Actor, task: TaskView) -> bool:
    """Whether `user` may start, complete, comment or reassign `task` (the service checks it
    again): its assignee, a member of its group, the assignee's manager, or an admin."""
    if user.is_admin or task.assignee == user.username:
        return True
    try:
        if task.assignee.startswith("group:"):
            return task.assignee.removeprefix("group:") in users.get_user(ctx, user.username).groups
        return users.get_user(ctx, task.assignee).manager == user.username
    except NotFoundError:
        return False


def _record_name(data: dict[str, object]) -> str:
    first, last = data.get("first_name"), data.get("last_name")
    if isinstance(first, str) or isinstance(last, str):
        return " ".join(str(v) for v in (first, last) if v)
    for key in NAME_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


@router.get("/tasks/{task_id}")
def task_page(request: Request, user: CurrentUser, task_id: RowId) -> Response:
    ctx = context_of(request)
    task = tasks.show(ctx, user, task_id)
    flow = flows.show_flow(ctx, user, task.flow)
    try:
        record = records.get_record(ctx, task.record_id)
    except NotFoundError:
        record = None
    status = run_views.record_status(ctx, user, task.record_id)
    run = next((e for e in status.enrollments if e.id == task.enrollment_id), None)
    is_open = task.status in OPEN
    buttons = _buttons(task)
    refusal = decided = None
    if buttons and is_open:
        refusal = enrollments.decision_refusal_for(ctx, user, task.enrollment_id, task.step)
    elif buttons and run is not None:
        # Who decided and why: the reason of the step's last finished run.
        ended = [r for r in run.step_runs if r.step == task.step and r.finished_at is not None]
        decided = ended[-1].reason if ended else None
    return render(
        request,
        "task.html",
        when=when(ctx),
        task=task,
        flow=flow,
        record=record,
        record_name=_record_name(record.data) if record is not None else "",
        run=run,
        is_open=is_open,
        buttons=buttons,
        refusal=refusal,
        decided=decided,
        may_act=_may_act(ctx, user, task),
        state_label=STATE_LABELS.get(task.status, task.status),
    )


def _after(task_id: int, done: str, action: Callable[[], object]) -> Response:
    """Run `action` (a service call) and go back to the task's page."""
    return act_then_see(f"/tasks/{task_id}", done, action)


@router.post("/tasks/{task_id}/start")
def start_task(request: Request, user: CurrentUser, task_id: RowId) -> Response:
    ctx = context_of(request)
    return _after(task_id, "Task started.", lambda: tasks.start(ctx, user, task_id))


@router.post("/tasks/{task_id}/complete")
def complete_task(
    request: Request, user: CurrentUser, task_id: RowId, comment: Text = ""
) -> Response:
    ctx = context_of(request)
    note = _blank(comment)
    return _after(task_id, "Task done.", lambda: tasks.complete(ctx, user, task_id, note))


@router.post("/tasks/{task_id}/comments")
def comment_task(request: Request, user: CurrentUser, task_id: RowId, text: Text = "") -> Response:
    ctx = context_of(request)
    return _after(task_id, "Comment added.", lambda: tasks.comment(ctx, user, task_id, text))


@router.post("/tasks/{task_id}/reassign")
def reassign_task(
    request: Request,
    user: CurrentUser,
    task_id: RowId,
    to_user: Annotated[str, Form(max_length=200)] = "",
    to_group: Annotated[str, Form(max_length=200)] = "",
    comment: Text = "",
) -> Response:
    ctx = context_of(request)
    target, group = _blank(to_user), _blank(to_group)
    whom = target or f"group {group}"
    return _after(
        task_id,
        f"Task given to {whom}.",
        lambda: tasks.reassign(ctx, user, task_id, user=target, group=group, note=comment),
    )


@router.post("/tasks/{task_id}/decide")
def decide_task(
    request: Request,
    user: CurrentUser,
    task_id: RowId,
    button: Annotated[str, Form(max_length=200)],
    comment: Text = "",
) -> Response:
    ctx = context_of(request)
    task = tasks.show(ctx, user, task_id)
    labels = dict(_buttons(task))
    if button not in labels:
        response = see_other(f"/tasks/{task_id}")
        known = ", ".join(labels.values()) or "none: this task is no approval"
        flash(response, f"No button {button!r} on this task (its buttons: {known}).", "error")
        return response

    def press() -> None:
        enrollments.decide(ctx, user, task.enrollment_id, task.step, button, _blank(comment))

    return _after(task_id, f"Decision recorded: {labels[button]}.", press)
