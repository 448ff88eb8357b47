"""Importing records from a file in the browser (`/imports`): upload a CSV or JSONL file for a
record type; the import runs in the background and its page polls the progress (htmx) until the
report: rows read, imported, updated, refused with their line numbers and reasons, as
`crmflow records import` prints them.

Background work: the upload becomes a job in the database (`services.jobs`), run by the worker
(`crmflow worker`, or the one `crmflow serve` runs inline) batch by batch. The page reads the
job's row, so any server process shows it, and a restart loses nothing: the next runner goes on
from the last committed batch. The jobs a user asked for are listed at `/imports`.

The upload is bounded by the server's request limit (`max_request_bytes`, checked while the body is
read, 413 above it) and kept in the job's row until the import ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import Form, Request, UploadFile
from fastapi.responses import Response

from crmflow.api.deps import RowId
from crmflow.errors import InvalidInputError, NotFoundError, Problem
from crmflow.services import jobs, record_types
from crmflow.services.context import Actor, Context
from crmflow.services.permissions import require_manager
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import render, see_other

router = web_router()

CHUNK = 1 << 20
JOBS_LISTED = 20

Format = Literal["csv", "jsonl"]


def _format(filename: str) -> Format:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix == "csv":
        return "csv"
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    raise InvalidInputError(
        "the import",
        [
            Problem(
                "file",
                f"cannot tell the format of {filename!r}",
                "name it .csv (a header of field keys) or .jsonl (one JSON object per line)",
            )
        ],
    )


def _form(
    request: Request,
    ctx: Context,
    user: Actor,
    *,
    problems: list[str] | None = None,
    chosen: str = "",
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "imports.html",
        status_code=status_code,
        types=record_types.list_record_types(ctx),
        problems=problems or [],
        chosen=chosen,
        limit_mb=f"{ctx.settings.max_request_bytes / 1_000_000:.1f}",
        jobs=[j for j in jobs.list_jobs(ctx, user, limit=JOBS_LISTED) if j.kind == "import"],
    )


@router.get("/imports")
def import_form(request: Request, user: CurrentUser) -> Response:
    require_manager(user, "import records")
    return _form(request, context_of(request), user)


@router.post("/imports")
async def start_import(
    request: Request,
    user: CurrentUser,
    file: UploadFile,
    type_key: Annotated[str, Form(max_length=200)],
    all_or_nothing: Annotated[bool, Form()] = False,
) -> Response:
    require_manager(user, "import records")
    ctx = context_of(request)
    filename = Path(file.filename or "").name
    try:
        record_types.get_record_type(ctx, type_key)
        fmt = _format(filename)
    except NotFoundError as exc:
        return _form(request, ctx, user, problems=[exc.message], chosen=type_key, status_code=422)
    except InvalidInputError as exc:
        shown = [str(p) for p in exc.problems]
        return _form(request, ctx, user, problems=shown, chosen=type_key, status_code=422)
    content = bytearray()
    limit = ctx.settings.max_request_bytes
    while chunk := await file.read(CHUNK):
        content += chunk
        if len(content) > limit:  # the request guard refuses this first; checked again here
            problem = f"{filename} is over {limit:,} bytes, the server's upload limit"
            return _form(
                request,
                ctx,
                user,
                problems=[problem + ": split it"],
                chosen=type_key,
                status_code=413,
            )
    if not content:
        return _form(
            request,
            ctx,
            user,
            problems=[f"{filename or 'the file'} is empty: choose a file with rows"],
            chosen=type_key,
            status_code=422,
        )
    job = jobs.submit_import(
        ctx,
        user,
        type_key=type_key,
        filename=filename,
        content=bytes(content),
        fmt=fmt,
        all_or_nothing=all_or_nothing,
    )
    return see_other(f"/imports/{job.id}")


def _import_job(request: Request, user: CurrentUser, job_id: int) -> jobs.JobView:
    job = jobs.get_job(context_of(request), user, job_id)
    if job.kind != "import":
        raise NotFoundError(f"no import {job_id} here")
    return job


@router.get("/imports/{job_id}")
def import_page(request: Request, user: CurrentUser, job_id: RowId) -> Response:
    job = _import_job(request, user, job_id)
    return render(request, "imports_job.html", job=job)


@router.get("/imports/{job_id}/progress")
def import_progress(request: Request, user: CurrentUser, job_id: RowId) -> Response:
    job = _import_job(request, user, job_id)
    return render(request, "imports_progress.html", job=job)
