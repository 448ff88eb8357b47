"""Stored email templates: read by any signed-in user, written by admins (docs/delivery.md,
"Templates")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.services import templates

router = APIRouter(tags=["templates"], route_class=GuardedRoute)


class TemplateSummary(BaseModel):
    """A stored email template, as listed."""

    name: str
    subject: str | None = Field(description="Its subject (None: the flow's action gives it)")
    has_html: bool = Field(description="Whether it has an HTML part besides its text")
    locale: str | None
    updated_at: Timestamp = Field(description="When it was last loaded")
    updated_by: str | None = Field(description="Who loaded it last")


class TemplateWrite(BaseModel):
    """A template document (the `name` may be left out: the address gives it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    subject: str | None = None
    text: str
    html: str | None = None
    from_: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    locale: str | None = None
    defaults: dict[str, str] = Field(default_factory=dict)
    variables: list[str] = Field(default_factory=list)


class Template(TemplateSummary):
    document: dict[str, Any] = Field(description="The template document as loaded")


@router.get("/api/templates", response_model=list[TemplateSummary])
def list_templates(ctx: ServiceContext, actor: CurrentActor) -> list[dict[str, Any]]:
    """Every stored email template, by name."""
    return [view.summary() for view in templates.list_templates(ctx, actor)]


@router.get("/api/templates/{name}", response_model=Template)
def show_template(ctx: ServiceContext, actor: CurrentActor, name: str) -> dict[str, Any]:
    """One stored email template with its document."""
    return templates.get_template(ctx, actor, name).as_dict()


@router.put(
    "/api/templates/{name}",
    response_model=Template,
    responses={201: {"model": Template, "description": "No template had this name: created"}},
)
def put_template(
    ctx: ServiceContext,
    actor: CurrentActor,
    name: str,
    body: TemplateWrite,
    response: Response,
) -> dict[str, Any]:
    """Create (201) or replace (200) the template `name` (admins); its texts are checked as a
    `crmflow templates load` checks them (422 with every problem)."""
    document = body.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)
    view, created = templates.save_template(ctx, actor, name, document)
    if created:
        response.status_code = 201
    return view.as_dict()
