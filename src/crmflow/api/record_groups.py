"""Lists of records ("record groups"): the targets of the add_to_group / remove_from_group
actions. Named apart from `/api/groups`, which are groups of users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.records import RecordGroup, RecordPage
from crmflow.services import record_groups
from crmflow.services.paging import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/record-groups", tags=["record groups"], route_class=GuardedRoute)


class RecordGroupCreate(BaseModel):
    name: str
    description: str = ""


@router.get("", response_model=list[RecordGroup])
def list_record_groups(ctx: ServiceContext, _actor: CurrentActor) -> list[dict[str, Any]]:
    """Every list, with its number of records."""
    return record_groups.list_record_groups(ctx)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RecordGroup)
def create_record_group(
    ctx: ServiceContext, actor: CurrentActor, body: RecordGroupCreate
) -> dict[str, Any]:
    """A new, empty list (managers and admins); flows fill it with add_to_group."""
    return record_groups.create_record_group(ctx, actor, body.name, body.description)


@router.get("/{name}/members", response_model=RecordPage)
def list_members(
    ctx: ServiceContext,
    _actor: CurrentActor,
    name: str,
    after: AfterId | None = None,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
) -> dict[str, Any]:
    """The records in the list, by id; pass `next_after` back as `after` for the next page."""
    page = record_groups.record_group_members_page(ctx, name, after=after, limit=limit)
    return page.as_dict(lambda r: r.as_dict())
