"""Background jobs (a flow's long start, an import): `GET /api/jobs` and `GET /api/jobs/{id}`
(docs/integrations.md, "Background jobs"). A job is seen by the user who asked for it and by
admins; anyone else gets 404, as for a job that does not exist."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from crmflow.api.deps import AfterId, CurrentActor, PageLimit, RowId, ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.api.responses.runs import Timestamp
from crmflow.services import jobs
from crmflow.services.paging import Page, keyset_page, page_size

router = APIRouter(tags=["jobs"], route_class=GuardedRoute)

JobState = Literal["waiting", "running", "done", "failed"]


class Job(BaseModel):
    id: int
    kind: str = Field(description="flow_start (a flow's long start) or import")
    subject: str = Field(description="What it works on: flow:KEY or type:RECORD_TYPE")
    state: JobState = Field(description="waiting (for a worker), running, done or failed")
    done: int = Field(description="Progress: records started, or bytes of the file read")
    total: int = Field(description="What `done` counts up to")
    percent: int = Field(description="0 to 100 (100 only once done)")
    error: str | None = Field(description="Why it failed (failed only)")
    attempts: int = Field(description="How many times a worker took it (>1: one died in it)")
    by: str = Field(description="Who asked for it (a username)")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    result: dict[str, Any] | None = Field(
        description="What it produced so far: an import's report (rows read, imported, "
        "updated, refused with their line), a start's count of records started"
    )


class JobPage(BaseModel):
    items: list[Job]
    next_after: int | None = Field(
        description="Newest first: pass as `after` for the next (older) page; null: no more"
    )


def _job(job: jobs.JobView) -> dict[str, Any]:
    return {**job.as_dict(), "result": job.result}


@router.get("/api/jobs", response_model=JobPage)
def list_jobs(
    ctx: ServiceContext,
    actor: CurrentActor,
    state: Annotated[
        list[JobState] | None, Query(description="Only jobs in this state; repeat for several")
    ] = None,
    after: AfterId | None = None,
    limit: PageLimit = 50,
) -> dict[str, Any]:
    """Your background jobs (an admin's: everyone's), newest first."""
    size = page_size(ctx, limit)
    found = jobs.list_jobs(
        ctx, actor, states=tuple(state or ()), before=after or None, limit=size + 1
    )
    page: Page[jobs.JobView] = keyset_page(found, size)
    return page.as_dict(_job)


@router.get("/api/jobs/{job_id}", response_model=Job)
def get_job(ctx: ServiceContext, actor: CurrentActor, job_id: RowId) -> dict[str, Any]:
    """One of your jobs (an admin: anyone's); 404 for another user's job."""
    return _job(jobs.get_job(ctx, actor, job_id))
