"""Importing records from a file in the browser (`/imports`): upload a CSV or JSONL file for a
record type; the import runs in the background and its page polls the progress (htmx) until the
report: rows read, imported, updated, refused with their line numbers and reasons, as
`crmflow records import` prints them.

Background work. The services have no job queue (the worker runs flows, not uploads), so the
import runs in a small thread pool of this process (`ImportJobs`, two at a time, more wait their
turn) calling `services.imports.import_records`, which commits batch by batch and reports its
progress after each one. The progress is kept in memory, not in a table: an import is tied to the
file uploaded to this process, so another process could not run it anyway, and a table would
need a migration for what is a few numbers per import. What that costs: the progress page must be
served by the process that took the upload (one `crmflow serve` process, or sticky sessions), and
a restart forgets the jobs (the records committed stay; the report is lost). Finished jobs are
kept for the last `KEPT_JOBS` imports only.

The upload is bounded by the server's request limit (`max_request_bytes`, checked while the body is
read, 413 above it) and stored in a temporary file deleted when the import ends.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Form, Request, UploadFile
from fastapi.responses import Response

from crmflow.errors import (
    CrmflowError,
    ImportInterruptedError,
    InvalidInputError,
    NotFoundError,
    Problem,
)
from crmflow.services import imports, record_types
from crmflow.services.context import Actor, Context
from crmflow.services.imports import ImportReport
from crmflow.services.permissions import require_manager
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import render, see_other

router = web_router()
_log = logging.getLogger(__name__)

KEPT_JOBS = 200
WORKERS = 2
# Rows per transaction: the progress moves at least this often.
BATCH_ROWS = 1000
CHUNK = 1 << 20

Format = Literal["csv", "jsonl"]


@dataclass
class ImportJob:
    """One import: who started it, on which file, and how far it got."""

    id: str
    ctx: Context
    owner: Actor
    type_key: str
    filename: str
    size: int
    all_or_nothing: bool
    state: Literal["waiting", "running", "done", "failed"] = "waiting"
    rows_read: int = 0
    bytes_read: int = 0
    report: ImportReport | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        return min(99, self.bytes_read * 100 // self.size) if self.size else 0


class ImportJobs:
    """The imports of this process: a bounded thread pool and their progress in memory."""

    def __init__(self, workers: int = WORKERS, kept: int = KEPT_JOBS) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._kept = kept
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, job: ImportJob, path: Path, fmt: Format) -> None:
        with self._lock:
            self._jobs[job.id] = job
            # Forget the oldest finished jobs past the bound (running ones are never dropped).
            finished = [k for k, j in self._jobs.items() if j.finished]
            for key in finished[: max(0, len(self._jobs) - self._kept)]:
                del self._jobs[key]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="crmflow-import")
            pool = self._pool
        pool.submit(self._run, job, path, fmt)

    def get(self, ctx: Context, actor: Actor, job_id: str) -> ImportJob:
        """The job `job_id`, when `actor` started it (or is an admin) on this server's data."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.ctx is not ctx or (job.owner.id != actor.id and not actor.is_admin):
            raise NotFoundError(
                f"no import {job_id!r} here: it belongs to someone else, or the server was "
                "restarted since (the records imported before stay; import the file again to "
                "see a report, with upsert so nothing is duplicated)"
            )
        return job

    @staticmethod
    def _run(job: ImportJob, path: Path, fmt: Format) -> None:
        def progress(rows: int, position: int) -> None:
            job.rows_read, job.bytes_read = rows, position

        job.state = "running"
        try:
            job.report = imports.import_records(
                job.ctx,
                job.owner,
                job.type_key,
                path,
                fmt=fmt,
                on_progress=progress,
                all_or_nothing=job.all_or_nothing,
                batch_size=BATCH_ROWS,
            )
            job.rows_read = job.report.read
            job.state = "done"
        except ImportInterruptedError as exc:
            job.report = exc.report if isinstance(exc.report, ImportReport) else None
            job.error = exc.message
            job.state = "failed"
        except InvalidInputError as exc:
            job.error = exc.message
            job.problems = [str(p) for p in exc.problems]
            job.state = "failed"
        except CrmflowError as exc:
            job.error = exc.message
            job.state = "failed"
        except Exception:
            # A page shows no trace: the log has it, the job says it failed.
            _log.exception("import %s of %s failed", job.id, job.filename)
            job.error = "the import stopped on an unexpected error; the server's log says why"
            job.state = "failed"
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)


JOBS = ImportJobs()


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
    )


@router.get("/imports")
def import_form(request: Request, user: CurrentUser) -> Response:
    require_manager(user, "import records")
    return _form(request, context_of(request))


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
        return _form(request, ctx, problems=[exc.message], chosen=type_key, status_code=422)
    except InvalidInputError as exc:
        shown = [str(p) for p in exc.problems]
        return _form(request, ctx, problems=shown, chosen=type_key, status_code=422)
    folder = Path(tempfile.mkdtemp(prefix="crmflow-import-"))
    path = folder / f"upload.{fmt}"
    size = 0
    limit = ctx.settings.max_request_bytes
    with path.open("wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > limit:  # the request guard refuses this first; checked again here
                out.close()
                shutil.rmtree(folder, ignore_errors=True)
                problem = f"{filename} is over {limit:,} bytes, the server's upload limit"
                return _form(
                    request,
                    ctx,
                    problems=[problem + ": split it"],
                    chosen=type_key,
                    status_code=413,
                )
            out.write(chunk)
    if size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return _form(
            request,
            ctx,
            problems=[f"{filename or 'the file'} is empty: choose a file with rows"],
            chosen=type_key,
            status_code=422,
        )
    job = ImportJob(
        id=secrets.token_urlsafe(12),
        ctx=ctx,
        owner=user,
        type_key=type_key,
        filename=filename,
        size=size,
        all_or_nothing=all_or_nothing,
    )
    JOBS.submit(job, path, fmt)
    return see_other(f"/imports/{job.id}")


@router.get("/imports/{job_id}")
def import_page(request: Request, user: CurrentUser, job_id: str) -> Response:
    job = JOBS.get(context_of(request), user, job_id)
    return render(request, "imports_job.html", job=job)


@router.get("/imports/{job_id}/progress")
def import_progress(request: Request, user: CurrentUser, job_id: str) -> Response:
    job = JOBS.get(context_of(request), user, job_id)
    return render(request, "imports_progress.html", job=job)
