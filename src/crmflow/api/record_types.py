"""Record types: the built-in CRM types and the organisation's own, with typed fields.

A field's `required`, `choices` and `reference_type` are in the JSON only when set: the routes
answer with `response_model_exclude_unset`, so the model's defaults do not fill them in."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from crmflow.api.deps import CurrentActor, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.records import RecordType
from crmflow.services import record_types

router = APIRouter(prefix="/api/record-types", tags=["record types"], route_class=GuardedRoute)


@router.get("", response_model=list[RecordType], response_model_exclude_unset=True)
def list_types(ctx: ServiceContext, _actor: CurrentActor) -> list[dict[str, Any]]:
    return [t.as_dict() for t in record_types.list_record_types(ctx)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RecordType,
    response_model_exclude_unset=True,
)
def create_type(
    ctx: ServiceContext, actor: CurrentActor, definition: dict[str, Any]
) -> dict[str, Any]:
    """Define a record type: `{"key", "name", "fields": [{"key", "type", ...}]}`."""
    return record_types.create_record_type(ctx, actor, definition).as_dict()


@router.get("/{key}", response_model=RecordType, response_model_exclude_unset=True)
def get_type(ctx: ServiceContext, _actor: CurrentActor, key: str) -> dict[str, Any]:
    return record_types.get_record_type(ctx, key).as_dict()


@router.put("/{key}", response_model=RecordType, response_model_exclude_unset=True)
def update_type(
    ctx: ServiceContext, actor: CurrentActor, key: str, definition: dict[str, Any]
) -> dict[str, Any]:
    return record_types.update_record_type(ctx, actor, key, definition).as_dict()
