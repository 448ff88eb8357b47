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
    # Open: not started yet or started (in progress), as the tasks page counts them.
    pages = [
        tasks.list_page(ctx, user, state=state, user=user.username, limit=limit)
        for state in ("open", "in_progress")
    ]
    count = sum(len(p.items) for p in pages)
    more = any(p.next_after is not None for p in pages)
    open_tasks = f"{count}+" if more else str(count)
    running = flows.list_flows(ctx, user, status=FlowStatus.ACTIVE)
    return render(
        request,
        "dashboard.html",
        open_tasks=open_tasks,
        unread_count=notifications.unread_count(ctx, user),
        running_flows=running,
    )
