"""Messages (`/messages`): the emails, SMS and webhooks flows wrote, newest first and paged, with
what became of each (waiting with its next try, sent, kept by the mail catcher, failed with the
reason); test-mode ones marked. A message's page (`/messages/{id}`) shows an email's headers,
text, HTML (as escaped source and in a sandboxed frame, never in the page) and attachments by
name. Admins see every message; others those of the flows they can see (as `GET /api/mail`). A
signed link in a message (an approval's, an unsubscribe link) shows only to the person it is
for (`services.messages.redact_links`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from crmflow.api.deps import RowId
from crmflow.services import messages
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.pages.tasks import when
from crmflow.web.render import render

router = web_router()

PAGE_SIZE = 50


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@router.get("/messages")
def message_list(
    request: Request,
    user: CurrentUser,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    before: RowId | None = None,
) -> Response:
    ctx = context_of(request)
    kind, state = _blank(kind), _blank(state)
    page = messages.messages_page(ctx, user, kind=kind, state=state, before=before, limit=PAGE_SIZE)
    query = "&".join(f"{k}={v}" for k, v in (("kind", kind), ("state", state)) if v)
    base = f"/messages?{query}&" if query else "/messages?"
    return render(
        request,
        "messages.html",
        when=when(ctx),
        items=page.items,
        kinds=messages.KINDS,
        states=list(messages.STATES),
        kind=kind,
        state=state,
        next_url=f"{base}before={page.next_before}" if page.next_before is not None else None,
        first_url=base.rstrip("?&") if before else None,
    )


@router.get("/messages/{message_id}")
def message_page(request: Request, user: CurrentUser, message_id: RowId) -> Response:
    ctx = context_of(request)
    item = messages.message(ctx, user, message_id)
    return render(
        request,
        "message.html",
        when=when(ctx),
        item=item,
        parts=messages.message_parts(item.rendered if item.kind == "email" else None),
    )
