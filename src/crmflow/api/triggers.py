"""Why records did not enter flows: per flow and per record."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from crmflow.api.deps import CurrentActor, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.records import NotEnteredList
from crmflow.services import triggers

router = APIRouter(tags=["runs"], route_class=GuardedRoute)

Limit = Annotated[int, Query(ge=1, le=triggers.MAX_DECISIONS, description="At most this many")]


@router.get("/api/flows/{key}/not-entered", response_model=NotEnteredList)
def flow_not_entered(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    record_id: RowId | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Records a trigger proposed for the flow that did not enter, newest first, with the
    reason ("entry condition false: ...", "already inside this flow", "flow draining", ...)."""
    found = triggers.entry_decisions_for(ctx, actor, flow_key=key, record_id=record_id, limit=limit)
    return {"items": [d.as_dict() for d in found]}


@router.get("/api/records/{type_key}/{record_id}/not-entered", response_model=NotEnteredList)
def record_not_entered(
    ctx: ServiceContext, actor: CurrentActor, type_key: str, record_id: RowId, limit: Limit = 100
) -> dict[str, Any]:
    """The flows (that you can see) the record was considered for and did not enter, and why."""
    found = triggers.entry_decisions_for(
        ctx, actor, record_id=record_id, record_type=type_key, limit=limit
    )
    return {"items": [d.as_dict() for d in found]}
