"""Decisions from an approval email (services.approval_links).

`GET /a/{token}` (no sign-in: the link is the proof) shows what the link decides: the button, the
flow, the record and the step, with a comment box (required when the button needs a comment),
and changes nothing, so that a mail scanner opening the link decides nothing. `POST /a/{token}`
decides as the link's user. A changed link answers 400, an expired, used or already-decided one
409, a user who may not decide 403, each with a page saying which; nothing changes.
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse

from crmflow.api import pages
from crmflow.api.deps import ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.errors import CrmflowError
from crmflow.services import approval_links
from crmflow.services.approval_links import LinkPage

router = APIRouter(tags=["approvals"], route_class=GuardedRoute)


def _what(page: LinkPage) -> str:
    e = html.escape
    return (
        f"<p>Flow <strong>{e(page.flow_key)}</strong>, record {page.record_id}, "
        f"step <strong>{e(page.step_key)}</strong> ({e(page.waiting_for)}).</p>"
    )


# Pages for people, not API answers: left out of the OpenAPI document, as /docs is.
@router.get("/a/{token}", include_in_schema=False)
def confirmationpage(ctx: ServiceContext, token: str) -> HTMLResponse:
    """What the link decides, with its button (a GET decides nothing)."""
    try:
        page = approval_links.open_link(ctx, token)
    except CrmflowError as exc:
        return pages.refused(exc)
    label = html.escape(page.button_label)
    required = " required" if page.comment_required else ""
    needs = " (required)" if page.comment_required else " (optional)"
    form = (
        f"{_what(page)}<p>Press <strong>{label}</strong> as "
        f"<strong>{html.escape(page.target.username)}</strong>?</p>"
        '<form method="post">'  # to this same address, whatever prefix a proxy gives it
        f'<p><label>Comment{needs}<br><textarea name="comment" rows="4" cols="40"{required}>'
        "</textarea></label></p>"
        f'<button type="submit">{label}</button></form>'
    )
    return pages.page(f"Confirm: {page.button_label}", form)


@router.post("/a/{token}", include_in_schema=False)
def decide(
    ctx: ServiceContext, token: str, comment: Annotated[str, Form(max_length=5000)] = ""
) -> HTMLResponse:
    """Press the link's button as its user; the page says what happened."""
    try:
        page, view = approval_links.decide_by_link(ctx, token, comment)
    except CrmflowError as exc:
        return pages.refused(exc)
    text = (
        f"{_what(page)}<p>{html.escape(page.target.username)} pressed "
        f"<strong>{html.escape(page.button_label)}</strong>. The run is now "
        f"{html.escape(view.status)}"
        + (f" at step {html.escape(view.step)}" if view.step else "")
        + ".</p>"
    )
    return pages.page(f"Recorded: {page.button_label}", text)
