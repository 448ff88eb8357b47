"""The notifications inbox: `GET /api/notifications`, `POST /api/notifications/{id}/read` and
`POST /api/notifications/read-all` (docs/people.md, "Notifications inbox")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.services import notifications

router = APIRouter(tags=["notifications"], route_class=GuardedRoute)


class Notification(BaseModel):
    id: int
    message: str
    to: str = Field(description="You (your username), or group:NAME for one of your groups")
    record_id: int | None
    enrollment_id: int | None
    created_at: Timestamp
    read: bool = Field(
        description="Whether you read it (each member of a group reads on their own)"
    )
    read_at: Timestamp | None
    task_id: int | None = Field(
        default=None, description="The task it tells of (GET /api/tasks/{id}), if any"
    )


class NotificationPage(BaseModel):
    items: list[Notification]
    next_after: int | None = Field(
        description="Newest first: pass as `after` for the next (older) page; null: no more"
    )


class ReadAll(BaseModel):
    marked_read: int = Field(description="How many unread notifications were marked read")


@router.get("/api/notifications", response_model=NotificationPage)
def list_notifications(
    ctx: ServiceContext,
    actor: CurrentActor,
    unread: bool = False,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """Your inbox, newest first: notifications to you and to your groups."""
    page = notifications.list_page(ctx, actor, unread=unread, after=after, limit=limit)
    return page.as_dict(lambda n: n.as_dict())


@router.post("/api/notifications/read-all", response_model=ReadAll)
def read_all(ctx: ServiceContext, actor: CurrentActor) -> dict[str, Any]:
    """Mark every notification of your inbox read."""
    return {"marked_read": notifications.read_all(ctx, actor)}


@router.post("/api/notifications/{notification_id}/read", response_model=Notification)
def read_notification(
    ctx: ServiceContext, actor: CurrentActor, notification_id: RowId
) -> dict[str, Any]:
    """Mark one notification of your inbox read (for you only)."""
    return notifications.read(ctx, actor, notification_id).as_dict()
