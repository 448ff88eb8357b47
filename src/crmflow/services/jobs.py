"""Background jobs: the long operations a page asks for and never waits for, kept in the
`jobs` table so that a restart loses none of them.

Two kinds today:

- `flow_start`: a flow's start with a long start list (the web's "start" confirmed for 10,000
  records or more). The start itself is one transaction (`services.lifecycle.change_status`: the
  status changes and the whole list enters, or nothing does), and the job is marked done in that
  same transaction. A runner that dies before the commit leaves nothing started; the next runner
  starts the flow once. One that dies after it cannot: the job was done at the commit. So a flow
  is never started twice by a job, and its records enter exactly once.
- `import`: records from an uploaded CSV or JSONL file (kept in the job's row until it ends,
  bounded by the server's upload limit). The import commits batch by batch
  (`services.imports`); each batch's transaction also writes the job's report so far (rows read,
  imported, updated, refused with their lines) and how far in the file it got. A runner that dies
  loses at most the batch it was writing; the next runner skips the rows committed and goes on,
  so the final report counts each row once and no record is written twice. An all-or-nothing
  import is one transaction: it starts over.

Who runs them: `JobRunner`, a loop beside the worker in `crmflow worker` and in `crmflow serve`
(which runs its worker inline). It claims one job at a time with a lease (`LEASE`), renewed at
each committed step; a job whose runner died is taken over once its lease has expired, and a
runner that lost its lease cannot commit a step (store.jobs). Any number of runners may run
against PostgreSQL. Progress pages and `crmflow jobs list` read the table. An idle runner does
not poll: a job submitted in its process wakes it at once, one submitted by another process
through the database (store.jobs.JobWatch), and it looks on its own every 20 s.

A job runs as the user who asked for it, with that user's role now (an admin demoted meanwhile
cannot start a flow through an old job: the service refuses, and the job fails saying so).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import (
    CrmflowError,
    ImportInterruptedError,
    InvalidInputError,
    JobLeaseLostError,
    JobStoppedError,
    NotFoundError,
    Problem,
)
from crmflow.services import imports
from crmflow.services.context import Actor, Context, Role
from crmflow.services.flow_views import get_flow, start_list_names
from crmflow.services.imports import ImportReport
from crmflow.services.lifecycle import change_status
from crmflow.services.permissions import require_admin, require_manager
from crmflow.store import jobs as store
from crmflow.store.database import Connection, Engine, read_connection
from crmflow.store.enrollments import enrollments_ever

__all__ = [
    "IDLE_SECONDS",
    "IMPORT_BATCH_ROWS",
    "KINDS",
    "LEASE",
    "LISTENING_IDLE_SECONDS",
    "JobRunner",
    "JobView",
    "flow_start_of",
    "get_job",
    "list_jobs",
    "on_job_submitted",
    "submit_flow_start",
    "submit_import",
]

log = logging.getLogger("crmflow.jobs")

KINDS = ("flow_start", "import")
LEASE = timedelta(seconds=60)
IDLE_SECONDS = 2.0  # an idle runner with no signal of new jobs looks again this often
# With the signal (LISTEN crmflow_jobs, SQLite's commit watch) the look is a safety net: it also
# takes over, within this long after its lease ended, a job whose runner died.
LISTENING_IDLE_SECONDS = 20.0
IMPORT_BATCH_ROWS = 1000  # rows per committed step of an import: the progress moves this often
RECENT = timedelta(minutes=10)  # a flow's page shows a start finished this recently
ImportFormat = Literal["csv", "jsonl"]
_STATE_WORDS = {
    "waiting": "waiting for a worker",
    "running": "running",
    "done": "done",
    "failed": "failed",
}

# Callbacks run when a job is submitted (the server's inline runner wakes at once), by engine.
_wakers: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def on_job_submitted(engine: Engine, callback: Callable[[], None]) -> None:
    """Call `callback` after each job submitted on `engine` (in this process) is committed."""
    _wakers.setdefault(engine, []).append(callback)


def _wake(engine: Engine) -> None:
    for callback in _wakers.get(engine, []):
        callback()


@dataclass(frozen=True)
class JobView:
    """A job as pages and the command line show it."""

    id: int
    kind: str
    subject: str
    state: str
    done: int
    total: int
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    payload: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.state in store.FINISHED

    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        return min(99, self.done * 100 // self.total) if self.total > 0 else 0

    @property
    def state_words(self) -> str:
        return _STATE_WORDS.get(self.state, self.state)

    @property
    def report(self) -> ImportReport | None:
        """An import's report so far (None for other kinds, or before its first batch)."""
        if self.kind != "import" or self.result is None:
            return None
        return ImportReport.from_dict(self.result)

    def seconds(self, now: datetime) -> int:
        end = self.finished_at or now
        return max(0, int((end - (self.started_at or self.created_at)).total_seconds()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "error": self.error,
            "attempts": self.attempts,
            "by": self.by,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def _view(row: store.JobRow) -> JobView:
    return JobView(
        id=row.id,
        kind=row.kind,
        subject=row.subject,
        state=row.state,
        done=row.done,
        total=row.total,
        result=row.result,
        error=row.error,
        attempts=row.attempts,
        by=row.username or "(a deleted user)",
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        payload=row.payload,
    )


# -- asking for a job ----------------------------------------------------------------------------


def submit_flow_start(
    ctx: Context, actor: Actor, key: str, count: int, revision: int | None
) -> tuple[JobView, bool]:
    """A job starting flow `key` with its start list of `count` records (checked already by the
    caller); (the job, True) or, when a start of `key` is waiting or running, (that job, False).
    A flow with no start list has nobody to enter: its job counts 0, whatever `count` says."""
    require_admin(actor, "start flows")
    flow = get_flow(ctx, actor, key)
    assert flow.document is not None
    if not start_list_names(flow.document):
        count = 0
    subject = f"flow:{key}"
    with ctx.engine.begin() as conn:
        running = store.unfinished_of(conn, subject)
        if running is not None:
            return _view(running), False
        job_id = store.insert_job(
            conn,
            kind="flow_start",
            subject=subject,
            payload={"key": key, "count": count, "revision": revision},
            total=count,
            created_by=actor.id,
            now=ctx.now(),
        )
        row = store.job_by_id(conn, job_id)
    assert row is not None
    _wake(ctx.engine)
    return _view(row), True


def submit_import(
    ctx: Context,
    actor: Actor,
    *,
    type_key: str,
    filename: str,
    content: bytes,
    fmt: ImportFormat,
    all_or_nothing: bool = False,
    upsert_by: str | None = None,
) -> JobView:
    """A job importing `content` (a CSV or JSONL file) as records of `type_key`."""
    require_manager(actor, "import records")
    if not content:
        raise InvalidInputError(
            "the import", [Problem("file", f"{filename or 'the file'} is empty")]
        )
    with ctx.engine.begin() as conn:
        job_id = store.insert_job(
            conn,
            kind="import",
            subject=f"type:{type_key}",
            payload={
                "type": type_key,
                "filename": filename[:255],
                "format": fmt,
                "size": len(content),
                "all_or_nothing": all_or_nothing,
                "upsert_by": upsert_by,
            },
            total=len(content),
            created_by=actor.id,
            now=ctx.now(),
            content=content,
        )
        row = store.job_by_id(conn, job_id)
    assert row is not None
    _wake(ctx.engine)
    return _view(row)


# -- reading jobs --------------------------------------------------------------------------------


def get_job(ctx: Context, actor: Actor, job_id: int) -> JobView:
    """Job `job_id`, for the user who asked for it or an admin (others: not found)."""
    with read_connection(ctx.engine) as conn:
        row = store.job_by_id(conn, job_id)
    if row is None or (row.created_by != actor.id and not actor.is_admin):
        raise NotFoundError(f"no job {job_id} here, or it belongs to someone else")
    return _view(row)


def list_jobs(
    ctx: Context,
    actor: Actor,
    *,
    states: tuple[str, ...] = (),
    before: int | None = None,
    limit: int = 50,
) -> list[JobView]:
    """The jobs `actor` may see (an admin: all; others: their own), newest first."""
    with read_connection(ctx.engine) as conn:
        rows = store.list_jobs(
            conn,
            created_by=None if actor.is_admin else actor.id,
            states=states,
            before=before,
            limit=limit,
        )
    return [_view(r) for r in rows]


def flow_start_of(ctx: Context, key: str) -> JobView | None:
    """The start job a flow's page shows: the one waiting or running, else the last one if it
    finished in the last RECENT minutes."""
    subject = f"flow:{key}"
    with read_connection(ctx.engine) as conn:
        row = store.unfinished_of(conn, subject)
        if row is None:
            last = store.list_jobs(conn, subject=subject, limit=1)
            row = last[0] if last else None
    if row is None:
        return None
    if row.finished and (row.finished_at is None or row.finished_at < ctx.now() - RECENT):
        return None
    return _view(row)


# -- running jobs --------------------------------------------------------------------------------


def _actor(row: store.JobRow) -> Actor | None:
    if row.created_by is None or row.username is None or row.role is None:
        return None
    return Actor(row.created_by, row.username, Role(row.role))


class JobRunner:
    """Claims jobs one at a time and runs them (`run` until `stop`, or `run_once`).

    `after_step(job_id)` is called after each step of a job committed (an import's batch):
    tests stop a runner there as a crash would. `stop()` during a job hands it back after its
    current step (waiting, for the next runner to go on at once)."""

    def __init__(
        self,
        ctx: Context,
        *,
        name: str,
        lease: timedelta = LEASE,
        idle_seconds: float | None = None,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.lease = lease
        self.idle_seconds = idle_seconds
        self.after_step = after_step
        self.finished = 0
        self._stop = threading.Event()
        self._wakeup = threading.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    def run(self) -> None:
        """Run jobs until `stop`. Idle, it sleeps until woken: by a job submitted in this
        process, or by another process (store.jobs.JobWatch); it looks again on its own after
        LISTENING_IDLE_SECONDS, or IDLE_SECONDS when it cannot be woken from outside
        (`idle_seconds`, when given, instead of either)."""
        on_job_submitted(self.ctx.engine, self.wake)
        watch = store.JobWatch(self.ctx.engine, self.wake)
        try:
            while not self._stop.is_set():
                try:
                    ran = watch.may_claim(now=self.ctx.now(), kinds=KINDS) and self.run_one()
                except Exception:  # a database that went away: log, wait, try again
                    log.exception("job runner %s: a round failed", self.name)
                    ran = False
                if not ran:
                    self._wakeup.wait(self._idle(watch))
                    self._wakeup.clear()
        finally:
            watch.close()

    def _idle(self, watch: store.JobWatch) -> float:
        if self.idle_seconds is not None:
            return self.idle_seconds
        return LISTENING_IDLE_SECONDS if watch.signalled else IDLE_SECONDS

    def run_once(self) -> int:
        """Run every job that can be claimed now; how many ran."""
        count = 0
        while self.run_one():
            count += 1
        return count

    def run_one(self) -> bool:
        """Claim one job and run it to its end; False when there was none to claim."""
        row = store.claim(
            self.ctx.engine, owner=self.name, now=self.ctx.now(), lease=self.lease, kinds=KINDS
        )
        if row is None:
            return False
        log.info("job %s (%s %s): attempt %s by %s", row.id, row.kind, row.subject,
                 row.attempts, self.name)  # fmt: skip
        try:
            actor = _actor(row)
            if actor is None:
                self._fail(row, "the user who asked for it was deleted")
            elif row.kind == "flow_start":
                self._flow_start(row, actor)
            elif row.kind == "import":
                self._import(row, actor)
            else:
                self._fail(row, f"unknown kind of job {row.kind!r}")
        except JobLeaseLostError:
            log.warning("job %s: taken over by another runner; %s leaves it", row.id, self.name)
        except JobStoppedError:
            with self.ctx.engine.begin() as conn:
                store.release(conn, row.id, owner=self.name, now=self.ctx.now())
            log.info("job %s: handed back, %s is stopping", row.id, self.name)
        except Exception:
            log.exception("job %s (%s) failed", row.id, row.kind)
            self._fail(row, "it stopped on an unexpected error; the server's log says why")
        self.finished += 1
        return True

    def _fail(self, row: store.JobRow, error: str, result: dict[str, Any] | None = None) -> None:
        try:
            with self.ctx.engine.begin() as conn:
                store.finish(
                    conn,
                    row.id,
                    owner=self.name,
                    now=self.ctx.now(),
                    state="failed",
                    error=error,
                    result=result,
                )
        except JobLeaseLostError:
            log.warning("job %s: taken over by another runner before it failed", row.id)

    def _flow_start(self, row: store.JobRow, actor: Actor) -> None:
        key = str(row.payload["key"])
        count = int(row.payload["count"])
        revision = row.payload.get("revision")

        def done(conn: Connection) -> None:
            # What entered, counted in the start's own transaction, not the number confirmed
            # (a flow with no start list: none); the runs it had before are not of this start.
            entered = enrollments_ever(conn, flow_id) - before
            store.finish(
                conn,
                row.id,
                owner=self.name,
                now=self.ctx.now(),
                state="done",
                done=entered,
                result={"started": entered},
            )

        try:
            flow_id = get_flow(self.ctx, actor, key, with_document=False).id
            with read_connection(self.ctx.engine) as conn:
                before = enrollments_ever(conn, flow_id)
            change_status(
                self.ctx,
                actor,
                key,
                LifecycleAction.START,
                confirm_count=count,
                if_revision=int(revision) if revision is not None else None,
                in_transaction=done,
            )
        except CrmflowError as exc:
            self._fail(row, f"{exc}; nothing was started")

    def _import(self, row: store.JobRow, actor: Actor) -> None:
        payload = row.payload
        with read_connection(self.ctx.engine) as conn:
            content = store.content_of(conn, row.id)
        if content is None:
            self._fail(row, "its uploaded file is no longer kept; upload it again")
            return
        fmt: ImportFormat = "jsonl" if payload.get("format") == "jsonl" else "csv"
        folder = Path(tempfile.mkdtemp(prefix="crmflow-import-"))
        path = folder / f"upload.{fmt}"
        try:
            path.write_bytes(content)
            del content
            resume = ImportReport.from_dict(row.result) if row.result is not None else None

            def on_batch(conn: Connection, report: ImportReport, position: int) -> None:
                store.advance(
                    conn,
                    row.id,
                    owner=self.name,
                    now=self.ctx.now(),
                    lease=self.lease,
                    done=position,
                    result={**report.as_dict(), "source": str(payload.get("filename", ""))},
                )

            def after_batch(_rows: int, _position: int) -> None:
                if self.after_step is not None:
                    self.after_step(row.id)
                if self._stop.is_set():  # between two committed batches: hand the job back
                    raise JobStoppedError(f"job {row.id}: {self.name} is stopping")

            try:
                report = imports.import_records(
                    self.ctx,
                    actor,
                    str(payload["type"]),
                    path,
                    fmt=fmt,
                    all_or_nothing=bool(payload.get("all_or_nothing")),
                    upsert_by=payload.get("upsert_by"),
                    batch_size=IMPORT_BATCH_ROWS,
                    on_batch=on_batch,
                    on_progress=after_batch,
                    resume=resume,
                    source_name=str(payload.get("filename") or "") or None,
                )
            except ImportInterruptedError as exc:
                interrupted = exc.report if isinstance(exc.report, ImportReport) else None
                if isinstance(exc.__cause__, JobLeaseLostError):
                    raise exc.__cause__ from None
                self._fail(row, exc.message, _named(interrupted, payload))
                return
            except InvalidInputError as exc:
                # The headline, then the problems once (the message's other lines list them).
                problems = "; ".join(str(p) for p in exc.problems)
                self._fail(row, f"{exc.headline}: {problems}" if problems else exc.message)
                return
            except CrmflowError as exc:
                self._fail(row, exc.message)
                return
            with self.ctx.engine.begin() as conn:
                store.finish(
                    conn,
                    row.id,
                    owner=self.name,
                    now=self.ctx.now(),
                    state="done",
                    done=int(payload.get("size", 0)),
                    result=_named(report, payload),
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _named(report: ImportReport | None, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The report as kept, naming the file as uploaded (not the runner's temporary copy)."""
    if report is None:
        return None
    return {**report.as_dict(), "source": str(payload.get("filename", ""))}
