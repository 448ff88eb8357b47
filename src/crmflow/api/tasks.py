"""Task lists and task actions: `GET /api/tasks`, `GET /api/tasks/{id}`, and
`POST /api/tasks/{id}/start|complete|comments|reassign` (docs/people.md, "Task lists")."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.services import tasks

router = APIRouter(tags=["tasks"], route_class=GuardedRoute)

TaskState = Literal["open", "in_progress", "done", "cancelled", "late"]


class TaskEvent(BaseModel):
    at: Timestamp
    by: str | None = Field(description="Who (a username); null: crmflow")
    action: str = Field(
        description="created, started, completed, commented, reassigned, cancelled or closed"
    )
    detail: str = Field(description="The comment, or what changed")


class Task(BaseModel):
    id: int
    flow: str = Field(description="The key of the flow whose step made the task")
    step: str
    enrollment_id: int = Field(description="The record's run (GET /api/runs/... and decisions)")
    record_id: int
    title: str
    description: str
    assignee: str = Field(description="A username, or group:NAME")
    status: str = Field(description="open, in_progress, done or cancelled")
    late: bool = Field(description="Still to do and past its due date")
    due_at: Timestamp | None
    buttons: list[str] = Field(
        description="An approval's buttons as `key (label)`: decided with "
        "POST /api/runs/{enrollment_id}/decisions, not completed here"
    )
    created_at: Timestamp
    closed_at: Timestamp | None
    history: list[TaskEvent] | None = Field(
        default=None, description="Who did what and when (one task only)"
    )


class TaskPage(BaseModel):
    items: list[Task]
    next_after: int | None = Field(description="Pass as `after` for the next page; null: no more")


class TaskNote(BaseModel):
    comment: str | None = Field(default=None, max_length=2000, description="Kept in its history")


class TaskComment(BaseModel):
    text: str = Field(max_length=2000, description="The comment")


class TaskReassignment(BaseModel):
    user: str | None = Field(default=None, description="Give the task to this user...")
    group: str | None = Field(default=None, description="...or to this group (one of the two)")
    comment: str | None = Field(default=None, max_length=2000, description="Why, for its history")


@router.get("/api/tasks", response_model=TaskPage)
def list_tasks(
    ctx: ServiceContext,
    actor: CurrentActor,
    state: TaskState | None = None,
    flow: str | None = None,
    step: str | None = None,
    user: str | None = None,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """Your tasks (to you or to a group of yours), a manager's team's too, an admin's everyone's;
    private flows' only for their members. `late`: still to do and past due."""
    page = tasks.list_page(
        ctx, actor, state=state, flow=flow, step=step, user=user, after=after, limit=limit
    )
    return page.as_dict(lambda t: t.as_dict())


@router.get("/api/tasks/{task_id}", response_model=Task)
def show_task(ctx: ServiceContext, actor: CurrentActor, task_id: RowId) -> dict[str, Any]:
    """One task with its history (who did what, when)."""
    return tasks.show(ctx, actor, task_id).as_dict()


@router.post("/api/tasks/{task_id}/start", response_model=Task)
def start_task(
    ctx: ServiceContext, actor: CurrentActor, task_id: RowId, body: TaskNote | None = None
) -> dict[str, Any]:
    """Mark the task started (in_progress): the assignee, their manager or an admin."""
    return tasks.start(ctx, actor, task_id, body.comment if body else None).as_dict()


@router.post("/api/tasks/{task_id}/complete", response_model=Task)
def complete_task(
    ctx: ServiceContext, actor: CurrentActor, task_id: RowId, body: TaskNote | None = None
) -> dict[str, Any]:
    """Mark the task done; an approval's task is refused (409): decide it instead."""
    return tasks.complete(ctx, actor, task_id, body.comment if body else None).as_dict()


@router.post("/api/tasks/{task_id}/comments", response_model=Task)
def comment_task(
    ctx: ServiceContext, actor: CurrentActor, task_id: RowId, body: TaskComment
) -> dict[str, Any]:
    """Add a comment to the task's history."""
    return tasks.comment(ctx, actor, task_id, body.text).as_dict()


@router.post("/api/tasks/{task_id}/reassign", response_model=Task)
def reassign_task(
    ctx: ServiceContext, actor: CurrentActor, task_id: RowId, body: TaskReassignment
) -> dict[str, Any]:
    """Give the task to another user or group (they are notified)."""
    view = tasks.reassign(ctx, actor, task_id, user=body.user, group=body.group, note=body.comment)
    return view.as_dict()
