"""Records in flows: start one, decide an approval, restart, and see where records are."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import FlowProgress, RecordRuns, RunDetail, RunPage
from crmflow.errors import NotFoundError
from crmflow.services import enrollments, run_views

router = APIRouter(tags=["runs"], route_class=GuardedRoute)

# The routes answering runs leave unset keys out (response_model_exclude_unset): an action of a
# step run carries `message` only when it wrote one.


class StartBody(BaseModel):
    record_id: RowId = Field(description="The record to start the flow for")
    test: bool = Field(
        default=False,
        description="Test mode: every message goes to the flow's test_recipients instead",
    )


class CancelBody(BaseModel):
    reason: str | None = Field(default=None, description="Why, kept on the run and the record")


class DecisionBody(BaseModel):
    step: str = Field(description="The approval step's key")
    button: str = Field(description="The key of the button pressed (e.g. validate)")
    comment: str | None = None


@router.post(
    "/api/flows/{key}/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=RunDetail,
    response_model_exclude_unset=True,
)
def start_record(
    ctx: ServiceContext, actor: CurrentActor, key: str, body: StartBody
) -> dict[str, Any]:
    """Start the flow for one record (the flow needs a `manual` trigger); 409 with the reason
    when the record may not enter."""
    return enrollments.start_record(ctx, actor, key, body.record_id, test=body.test).as_dict()


@router.get("/api/flows/{key}/runs", response_model=RunPage)
def list_runs(
    ctx: ServiceContext,
    actor: CurrentActor,
    key: str,
    status: str | None = None,
    step: str | None = None,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """The flow's records, running and ended, in enrollment order: record, status (active,
    waiting, finished, left, cancelled), step, due time, entered / finished at and the end reason;
    filter by `status` and `step`, pass `next_after` back as `after` for the next page."""
    page = run_views.flow_runs(ctx, actor, key, status=status, step=step, after=after, limit=limit)
    return page.as_dict(lambda r: r.as_dict())


@router.get("/api/flows/{key}/progress", response_model=FlowProgress)
def flow_progress(ctx: ServiceContext, actor: CurrentActor, key: str) -> dict[str, Any]:
    return run_views.flow_progress(ctx, actor, key).as_dict()


@router.get(
    "/api/records/{type_key}/{record_id}/runs",
    response_model=RecordRuns,
    response_model_exclude_unset=True,
)
def record_status(
    ctx: ServiceContext, actor: CurrentActor, type_key: str, record_id: RowId
) -> dict[str, Any]:
    """The flows the record is or was in, at which step, and what each step run did."""
    result = run_views.record_status(ctx, actor, record_id)
    if result.record_type not in (None, type_key):
        raise NotFoundError(f"no {type_key} record with id {record_id}")
    return result.as_dict()


@router.post(
    "/api/runs/{enrollment_id}/decisions",
    response_model=RunDetail,
    response_model_exclude_unset=True,
)
def decide(
    ctx: ServiceContext, actor: CurrentActor, enrollment_id: RowId, body: DecisionBody
) -> dict[str, Any]:
    """Press a button of the approval step the record waits at; 409 with the reason if not."""
    view = enrollments.decide(ctx, actor, enrollment_id, body.step, body.button, body.comment)
    return view.as_dict()


@router.post(
    "/api/runs/{enrollment_id}/restart", response_model=RunDetail, response_model_exclude_unset=True
)
def restart(ctx: ServiceContext, actor: CurrentActor, enrollment_id: RowId) -> dict[str, Any]:
    """Start the record over from the flow's first step (seed 003)."""
    return enrollments.restart_enrollment(ctx, actor, enrollment_id).as_dict()


@router.post(
    "/api/runs/{enrollment_id}/cancel", response_model=RunDetail, response_model_exclude_unset=True
)
def cancel(
    ctx: ServiceContext, actor: CurrentActor, enrollment_id: RowId, body: CancelBody | None = None
) -> dict[str, Any]:
    """Stop one record's run where it is (managers and admins): cancelled, with who and why;
    its open tasks are cancelled and its messages not yet sent are not sent. 409 when the run
    has already ended."""
    reason = body.reason if body is not None else None
    return enrollments.cancel_enrollment(ctx, actor, enrollment_id, reason).as_dict()
