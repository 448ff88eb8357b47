"""Flows: definitions (YAML or JSON bodies), versions, members and the lifecycle."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Response, status
from pydantic import BaseModel, Field

from crmflow.api.deps import CurrentActor, ServiceContext, VersionNumber, raw_body
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
from crmflow.api.responses import flows as answers
from crmflow.engine.definition import FlowStatus
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, lifecycle
from crmflow.services.triggers.failures import failing_triggers

router = APIRouter(prefix="/api/flows", tags=["flows"], route_class=GuardedRoute)

DocBody = Annotated[tuple[str, str], Depends(raw_body)]
_DOC_BODY = {
    "requestBody": {
        "required": True,
        "description": "The flow document, as YAML (application/yaml) or JSON (application/json).",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {"type": "object", "description": "See GET /api/schema/flow"}
            },
        },
    }
}


def _format(content_type: str) -> Literal["yaml", "json"] | None:
    if "json" in content_type:
        return "json"
    if "yaml" in content_type:
        return "yaml"
    return None


@router.get("", response_model=list[answers.FlowSummary])
def list_flows(
    ctx: ServiceContext,
    actor: CurrentActor,
    status_: Annotated[FlowStatus | None, Query(alias="status")] = None,
    record_type: str | None = None,
) -> list[dict[str, Any]]:
    return [
        f.as_dict() for f in flows.list_flows(ctx, actor, status=status_, record_type=record_type)
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_DOC_BODY,
    response_model=answers.Flow,
)
def create_flow(
    ctx: ServiceContext, actor: CurrentActor, body: DocBody, confirm_count: int | None = None
) -> dict[str, Any]:
    text, content_type = body
    view = flows.create_flow(
        ctx,
        actor,
        text,
        fmt=_format(content_type),
        source="request body",
        confirm_count=confirm_count,
    )
    return view.as_dict()


@router.post("/validate", openapi_extra=_DOC_BODY, response_model=answers.FlowValidated)
def validate_flow(ctx: ServiceContext, actor: CurrentActor, body: DocBody) -> dict[str, Any]:
    """Validate a document without saving it: 200 when valid, 422 with every problem if not."""
    text, content_type = body
    checked = flows.check_flow_text(
        ctx, actor, text, fmt=_format(content_type), source="request body"
    )
    definition = checked.definition
    return {
        "valid": True,
        "key": definition.key,
        "steps": len(definition.steps),
        "warnings": [warning.as_dict() for warning in checked.warnings],
    }


@router.get("/{key}", response_model=answers.Flow, responses=NOT_MODIFIED)
def get_flow(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> dict[str, Any] | Response:
    """The flow; its `revision` (one more on every change: edit, status, members) is also the
    ETag, to send back as If-Match on PUT, DELETE, a status change or a change of members (304
    when If-None-Match names it). Failing triggers are not part of it (they change without the
    revision changing, so a 304 would hide them): see GET /api/flows/{key}/trigger-failures."""
    flow = flows.show_flow(ctx, actor, key)
    if (unchanged := not_modified(if_none_match, flow.revision)) is not None:
        return unchanged
    return _with_etag(response, flow)


@router.get("/{key}/trigger-failures", response_model=list[answers.FailingTrigger])
def trigger_failures(ctx: ServiceContext, actor: CurrentActor, key: str) -> list[dict[str, Any]]:
    """The flow's triggers whose last runs raised (a saved query gone bad): the error, how many
    times in a row, and when each is tried again; empty when every trigger runs. Read it each
    time (no ETag): it changes as the worker runs, not when the flow is edited."""
    flow = flows.get_flow(ctx, actor, key, with_document=False)
    return failing_triggers(ctx, flow.id)


def _with_etag(response: Response, flow: flows.FlowView) -> dict[str, Any]:
    """The flow's answer, with its revision as the ETag: the If-Match of the next change."""
    set_etag(response, flow.revision)
    return flow.as_dict()


@router.put(
    "/{key}",
    openapi_extra=_DOC_BODY,
    responses=PRECONDITION_FAILED,
    response_model=answers.FlowSummary,
)
def update_flow(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    body: DocBody,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Edit the flow; with If-Match, only if it is still at that revision."""
    expected = expected_version(if_match)
    text, content_type = body
    flow = flows.update_flow(
        ctx,
        actor,
        key,
        text,
        fmt=_format(content_type),
        source="request body",
        if_revision=expected,
    )
    return _with_etag(response, flow)


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=PRECONDITION_FAILED)
def delete_flow(
    ctx: ServiceContext, actor: CurrentActor, key: str, if_match: IfMatch = None
) -> None:
    """Delete a flow that never ran; with If-Match, only if it is still at that revision."""
    flows.delete_flow(ctx, actor, key, if_revision=expected_version(if_match))


@router.get("/{key}/versions/{version}", response_model=answers.FlowVersion)
def get_version(
    ctx: ServiceContext, actor: CurrentActor, key: str, version: VersionNumber
) -> dict[str, Any]:
    return flows.get_flow_version(ctx, actor, key, version)


@router.get("/{key}/history", response_model=list[answers.FlowChange])
def history(ctx: ServiceContext, actor: CurrentActor, key: str) -> list[dict[str, Any]]:
    return [c.as_dict() for c in flows.flow_history(ctx, actor, key)]


@router.get("/{key}/start-list", response_model=answers.StartList)
def start_list(ctx: ServiceContext, actor: CurrentActor, key: str) -> dict[str, Any]:
    """How many records starting the flow would enter now (confirm it with start)."""
    count = flows.start_list_count(ctx, actor, key)
    return {"key": key, "has_start_list": count is not None, "count": count}


# Every status change and change of members takes If-Match too: a change decided on what a GET
# showed (pausing a flow whose records were counted, resuming after an impact preview) is refused
# with 412 when the flow has changed since; the answer's ETag is the new revision.


@router.post("/{key}/start", response_model=answers.Flow, responses=PRECONDITION_FAILED)
def start(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    response: Response,
    confirm_count: int | None = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Start a draft. With a start list, first call without `confirm_count`: the 409 answer
    says how many records would enter; call again with `confirm_count` set to that number."""
    flow = flows.change_status(
        ctx,
        actor,
        key,
        LifecycleAction.START,
        confirm_count=confirm_count,
        if_revision=expected_version(if_match),
    )
    return _with_etag(response, flow)


@router.post("/{key}/pause", response_model=answers.Flow, responses=PRECONDITION_FAILED)
def pause(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    response: Response,
    confirm_inside: int | None = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Pause: the records inside are frozen at their step. With records inside, the 409 answer
    says how many; call again with `confirm_inside` set to that number."""
    flow = flows.change_status(
        ctx,
        actor,
        key,
        LifecycleAction.PAUSE,
        confirm_inside=confirm_inside,
        if_revision=expected_version(if_match),
    )
    return _with_etag(response, flow)


class ResumeBody(BaseModel):
    moves: dict[str, str] = Field(
        default_factory=dict,
        description='For each step the new version removed: the step its records go to, or "end"',
    )


@router.get("/{key}/impact", response_model=list[answers.StepImpact])
def impact(ctx: ServiceContext, actor: CurrentActor, key: str) -> list[dict[str, Any]]:
    """What resuming does to the records inside that are on an older version: per step, how
    many records are there and what happens to them (`removed` steps need a move on resume)."""
    return [i.as_dict() for i in lifecycle.impact_preview(ctx, actor, key)]


@router.post("/{key}/resume", response_model=answers.Flow, responses=PRECONDITION_FAILED)
def resume(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    response: Response,
    body: Annotated[ResumeBody | None, Body()] = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Resume a paused, draining or archived flow where each record was. After an edit, the
    records move to the new version by step key; `moves` says where the records of removed
    steps go (409 listing the steps and counts until every one has a choice). With If-Match,
    only if the flow is still the one whose impact was previewed."""
    flow = flows.change_status(
        ctx,
        actor,
        key,
        LifecycleAction.RESUME,
        moves=body.moves if body is not None else None,
        if_revision=expected_version(if_match),
    )
    return _with_etag(response, flow)


@router.post("/{key}/drain", response_model=answers.Flow, responses=PRECONDITION_FAILED)
def drain(
    ctx: ServiceContext, actor: CurrentActor, key: str, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    """Progressive stop: no new entrants; the records inside finish."""
    flow = flows.change_status(
        ctx, actor, key, LifecycleAction.DRAIN, if_revision=expected_version(if_match)
    )
    return _with_etag(response, flow)


@router.post("/{key}/archive", response_model=answers.Flow, responses=PRECONDITION_FAILED)
def archive(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    response: Response,
    confirm_inside: int | None = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    flow = flows.change_status(
        ctx,
        actor,
        key,
        LifecycleAction.ARCHIVE,
        confirm_inside=confirm_inside,
        if_revision=expected_version(if_match),
    )
    return _with_etag(response, flow)


@router.put(
    "/{key}/members/{username}", response_model=answers.FlowSummary, responses=PRECONDITION_FAILED
)
def add_member(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    username: str,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    flow = flows.add_member(ctx, actor, key, username, if_revision=expected_version(if_match))
    return _with_etag(response, flow)


@router.delete(
    "/{key}/members/{username}", response_model=answers.FlowSummary, responses=PRECONDITION_FAILED
)
def remove_member(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    username: str,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    flow = flows.remove_member(ctx, actor, key, username, if_revision=expected_version(if_match))
    return _with_etag(response, flow)
