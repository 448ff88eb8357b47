"""Saved queries: filters over records, counted and previewed before anything starts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel

from crmflow.api.deps import CurrentActor, PageLimit, ServiceContext
from crmflow.services import queries

router = APIRouter(prefix="/api/queries", tags=["saved queries"])


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


@router.get("")
def list_queries(
    ctx: ServiceContext, _actor: CurrentActor, after: int | None = None, limit: PageLimit = 50
) -> dict[str, Any]:
    return queries.list_queries(ctx, after=after, limit=limit).as_dict(lambda q: q.as_dict())


@router.post("", status_code=status.HTTP_201_CREATED)
def save_query(ctx: ServiceContext, actor: CurrentActor, body: QueryCreate) -> dict[str, Any]:
    return queries.save_query(
        ctx,
        actor,
        name=body.name,
        record_type=body.record_type,
        filter=body.filter,
        description=body.description,
    ).as_dict()


@router.post("/count")
def count_filter(ctx: ServiceContext, _actor: CurrentActor, body: FilterCount) -> dict[str, int]:
    """Count an unsaved filter (try it before saving)."""
    return {"count": queries.count_filter(ctx, body.record_type, body.filter)}


@router.get("/{name}")
def get_query(ctx: ServiceContext, _actor: CurrentActor, name: str) -> dict[str, Any]:
    return queries.get_query(ctx, name).as_dict()


@router.patch("/{name}")
def update_query(
    ctx: ServiceContext, actor: CurrentActor, name: str, body: QueryUpdate
) -> dict[str, Any]:
    return queries.update_query(
        ctx,
        actor,
        name,
        filter=body.filter,
        description=body.description,
        record_type=body.record_type,
    ).as_dict()


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_query(ctx: ServiceContext, actor: CurrentActor, name: str) -> None:
    queries.delete_query(ctx, actor, name)


@router.get("/{name}/count")
def count_query(ctx: ServiceContext, _actor: CurrentActor, name: str) -> dict[str, Any]:
    return {"name": name, "count": queries.count_query(ctx, name)}


@router.get("/{name}/records")
def preview(
    ctx: ServiceContext,
    _actor: CurrentActor,
    name: str,
    after: int | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    return queries.preview_query(ctx, name, after=after, limit=limit).as_dict(lambda r: r.as_dict())
