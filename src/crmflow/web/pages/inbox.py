"""The notifications inbox (`/inbox`): newest first, all or unread only, paged; each marked
read on its own (htmx, or a plain form without scripts) or all at once; each links to the
task it tells of (a task to do, given to someone else, a deadline's reminder), else to the
record it is about (docs/people.md, "Notifications inbox")."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from crmflow.api.deps import RowId
from crmflow.services import notifications
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.pages.tasks import when
from crmflow.web.render import flash, render, see_other

router = web_router()

PAGE_SIZE = 50


@router.get("/inbox")
def inbox(
    request: Request,
    user: CurrentUser,
    unread: bool = False,
    after: RowId | None = None,
) -> Response:
    ctx = context_of(request)
    page = notifications.list_page(ctx, user, unread=unread, after=after, limit=PAGE_SIZE)
    base = "/inbox?unread=1&" if unread else "/inbox?"
    return render(
        request,
        "inbox.html",
        when=when(ctx),
        items=page.items,
        unread_only=unread,
        next_url=f"{base}after={page.next_after}" if page.next_after is not None else None,
        first_url=base.rstrip("?&") if after else None,
    )


@router.post("/inbox/read-all")
def read_all(request: Request, user: CurrentUser) -> Response:
    count = notifications.read_all(context_of(request), user)
    response = see_other("/inbox")
    flash(response, f"{count} notification{'' if count == 1 else 's'} marked read.")
    return response


@router.post("/inbox/{notification_id}/read")
def read_one(request: Request, user: CurrentUser, notification_id: RowId) -> Response:
    ctx = context_of(request)
    item = notifications.read(ctx, user, notification_id)
    if request.headers.get("hx-request"):
        # The item read, and the unread count beside the Unread tab (out of band).
        return render(request, "inbox_item.html", when=when(ctx), item=item, oob=True)
    return see_other("/inbox")
