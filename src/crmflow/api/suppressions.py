"""Unsubscribe links and the suppression list.

`GET /u/{token}` (no sign-in: the link of a marketing email) shows a page with one button;
`POST /u/{token}` unsubscribes the link's address: the button, or a mail client's one click
(RFC 8058, body `List-Unsubscribe=One-Click`). A link that was changed answers 400 with a
page saying so. `/api/suppressions` lists, adds and removes addresses (admins only).
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from crmflow.api import pages
from crmflow.api.deps import CurrentActor, PageLimit, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.errors import CrmflowError
from crmflow.services import suppressions

router = APIRouter(tags=["suppressions"], route_class=GuardedRoute)


# Pages for people, not API answers: left out of the OpenAPI document, as /docs is.
@router.get("/u/{token}", include_in_schema=False)
def unsubscribepage(ctx: ServiceContext, token: str) -> HTMLResponse:
    """The page a person reaches from the link: one button unsubscribes (a GET changes
    nothing, so that a mail scanner opening the link does not unsubscribe anyone)."""
    try:
        address = suppressions.address_of_token(ctx, token)
    except CrmflowError as exc:
        return pages.refused(exc, 400)
    form = (
        f"<p>Stop the emails to <strong>{html.escape(address)}</strong>?</p>"
        '<form method="post">'  # to this same address, whatever prefix a proxy gives it
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return pages.page("Unsubscribe", form)


@router.post("/u/{token}", include_in_schema=False)
def unsubscribe(ctx: ServiceContext, token: str) -> HTMLResponse:
    """Unsubscribe the link's address (one click, RFC 8058: the body is not needed)."""
    try:
        address = suppressions.unsubscribe(ctx, token)
    except CrmflowError as exc:
        return pages.refused(exc, 400)
    text = f"<p>{html.escape(address)} will receive no more of these emails.</p>"
    return pages.page("You are unsubscribed", text)


class SuppressionEntry(BaseModel):
    """An address no flow emails any more."""

    address: str = Field(description="The address, in lower case")
    reason: str = Field(description="unsubscribed, hard_bounce or admin")
    at: Timestamp = Field(description="When it was put on the list")
    source: str = Field(description="What put it there: the link, the server's reply, an admin")


class SuppressionPage(BaseModel):
    items: list[SuppressionEntry]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: no more")


class NewSuppression(BaseModel):
    address: str = Field(description="The address to stop emailing")
    note: str = Field(default="", max_length=500, description="Why, for the list")


class SuppressionChange(BaseModel):
    address: str
    added: bool | None = Field(default=None, description="False: it was on the list already")
    removed: bool | None = None


@router.get("/api/suppressions", response_model=SuppressionPage)
def list_suppressions(
    ctx: ServiceContext, actor: CurrentActor, after: str | None = None, limit: PageLimit = 100
) -> dict[str, Any]:
    """The suppression list by address (admins only), `limit` at a time after `after`."""
    shown, next_after = suppressions.list_page(ctx, actor, after=after, limit=limit)
    return {"items": [s.as_dict() for s in shown], "next_after": next_after}


@router.post(
    "/api/suppressions", response_model=SuppressionChange, status_code=status.HTTP_201_CREATED
)
def add_suppression(
    ctx: ServiceContext, actor: CurrentActor, body: NewSuppression
) -> dict[str, Any]:
    """Stop every email to an address (reason `admin`; transactional emails too)."""
    return suppressions.add(ctx, actor, body.address, note=body.note)


@router.delete("/api/suppressions/{address}", response_model=SuppressionChange)
def remove_suppression(ctx: ServiceContext, actor: CurrentActor, address: str) -> dict[str, Any]:
    """Take an address off the list: flows email it again."""
    return suppressions.remove(ctx, actor, address)
