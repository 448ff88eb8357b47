"""Saved queries: filters over records, counted and previewed before anything starts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.preconditions import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    IfMatch,
    IfNoneMatch,
    expected_version,
    not_modified,
    set_etag,
)
from crmflow.api.responses.queries import (
    FilterCountResult,
    QueryCountResult,
    SavedQuery,
    SavedQueryPage,
)
from crmflow.api.responses.records import RecordPage
from crmflow.services import queries

router = APIRouter(prefix="/api/queries", tags=["saved queries"], route_class=GuardedRoute)


class QueryCreate(BaseModel):
    name: str
    record_type: str
    filter: dict[str, Any]
    description: str = ""


class QueryUpdate(BaseModel):
    record_type: str | None = None
    filter: dict[str, Any] | None = None
    description: str | None = None


class FilterCount(BaseModel):
    record_type: str
    filter: dict[str, Any]


@router.get("", response_model=SavedQueryPage)
def list_queries(
    ctx: ServiceContext, _actor: CurrentActor, after: AfterId | None = None, limit: PageLimit = 50
) -> dict[str, Any]:
    return queries.list_queries(ctx, after=after, limit=limit).as_dict(lambda q: q.as_dict())


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SavedQuery)
def save_query(
    ctx: ServiceContext, actor: CurrentActor, body: QueryCreate, response: Response
) -> dict[str, Any]:
    query = queries.save_query(
        ctx,
        actor,
        name=body.name,
        record_type=body.record_type,
        filter=body.filter,
        description=body.description,
    )
    set_etag(response, query.version)
    return query.as_dict()


@router.post("/count", response_model=FilterCountResult)
def count_filter(ctx: ServiceContext, _actor: CurrentActor, body: FilterCount) -> dict[str, int]:
    """Count an unsaved filter (try it before saving)."""
    return {"count": queries.count_filter(ctx, body.record_type, body.filter)}


@router.get("/{name}", response_model=SavedQuery, responses=NOT_MODIFIED)
def get_query(
    ctx: ServiceContext,
    _actor: CurrentActor,
    name: str,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> dict[str, Any] | Response:
    """The saved query, with its version in the body and as the ETag (send it as If-Match);
    304 with no body when If-None-Match names that version."""
    query = queries.get_query(ctx, name)
    if (unchanged := not_modified(if_none_match, query.version)) is not None:
        return unchanged
    set_etag(response, query.version)
    return query.as_dict()


@router.patch("/{name}", response_model=SavedQuery, responses=PRECONDITION_FAILED)
def update_query(
    ctx: ServiceContext,
    actor: CurrentActor,
    name: str,
    body: QueryUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Change the saved query; with If-Match, only if it is still at that version."""
    query = queries.update_query(
        ctx,
        actor,
        name,
        filter=body.filter,
        description=body.description,
        record_type=body.record_type,
        if_version=expected_version(if_match),
    )
    set_etag(response, query.version)
    return query.as_dict()


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=PRECONDITION_FAILED)
def delete_query(
    ctx: ServiceContext, actor: CurrentActor, name: str, if_match: IfMatch = None
) -> None:
    """Delete the saved query; with If-Match, only if it is still at that version."""
    queries.delete_query(ctx, actor, name, if_version=expected_version(if_match))


@router.get("/{name}/count", response_model=QueryCountResult)
def count_query(ctx: ServiceContext, _actor: CurrentActor, name: str) -> dict[str, Any]:
    return {"name": name, "count": queries.count_query(ctx, name)}


@router.get("/{name}/records", response_model=RecordPage)
def preview(
    ctx: ServiceContext,
    _actor: CurrentActor,
    name: str,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    return queries.preview_query(ctx, name, after=after, limit=limit).as_dict(lambda r: r.as_dict())
