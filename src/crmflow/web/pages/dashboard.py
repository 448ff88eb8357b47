"""The dashboard (`/`): what waits for the signed-in user."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from crmflow.engine.definition.flow import FlowStatus
from crmflow.services import flows, notifications, tasks
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import render

router = web_router()


@router.get("/")
def dashboard(request: Request, user: CurrentUser) -> Response:
    ctx = context_of(request)
    limit = ctx.settings.page_size_max
    mine = tasks.list_page(ctx, user, state="open", user=user.username, limit=limit)
    open_tasks = f"{len(mine.items)}+" if mine.next_after is not None else str(len(mine.items))
    running = flows.list_flows(ctx, user, status=FlowStatus.ACTIVE)
    return render(
        request,
        "dashboard.html",
        open_tasks=open_tasks,
        unread_count=notifications.unread_count(ctx, user),
        running_flows=running,
    )
