"""The `jobs` table: long operations run in the background (services.jobs says what they do).

A job is claimed with a lease: `claim` takes the oldest waiting job, or a running one whose
lease has expired (its runner died), by a compare-and-set on its state and lease, so two
runners never both take it (PostgreSQL skips the rows another claim holds; SQLite's single
writer serialises the claims). While it works the runner writes its progress with `advance`
in the transaction of the work itself, which also checks it still holds the lease: a runner
whose lease was taken over cannot commit a step twice.

An idle runner does not poll: `insert_job` sends `NOTIFY crmflow_jobs` on PostgreSQL (delivered
when the transaction commits), and `JobWatch` is what the runner waits on: that LISTEN, or on
SQLite the watch of the database's commits, with `claimable` its one statement per look.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crmflow.errors import JobLeaseLostError
from crmflow.store.schema import jobs, users
from crmflow.store.wakeups import OtherWrites

__all__ = [
    "ERROR_CHARS",
    "FINISHED",
    "JOBS_CHANNEL",
    "JobRow",
    "JobWatch",
    "advance",
    "claim",
    "claimable",
    "content_of",
    "finish",
    "insert_job",
    "job_by_id",
    "list_jobs",
    "prune_finished",
    "release",
    "unfinished_of",
]

log = logging.getLogger("crmflow.jobs")

ERROR_CHARS = 4_000
FINISHED = ("done", "failed")
JOBS_CHANNEL = "crmflow_jobs"
_LISTED = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.subject,
    jobs.c.payload,
    jobs.c.state,
    jobs.c.done,
    jobs.c.total,
    jobs.c.result,
    jobs.c.error,
    jobs.c.attempts,
    jobs.c.created_by,
    users.c.username,
    users.c.role,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.updated_at,
    jobs.c.finished_at,
    jobs.c.lease_owner,
    jobs.c.lease_until,
)


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    subject: str
    payload: dict[str, Any]
    state: str
    done: int
    total: int
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    created_by: int | None
    username: str | None
    role: str | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def _row(r: Any) -> JobRow:
    return JobRow(
        id=int(r.id),
        kind=r.kind,
        subject=r.subject,
        payload=dict(r.payload),
        state=r.state,
        done=int(r.done),
        total=int(r.total),
        result=dict(r.result) if r.result is not None else None,
        error=r.error,
        attempts=int(r.attempts),
        created_by=r.created_by,
        username=r.username,
        role=r.role,
        created_at=r.created_at,
        started_at=r.started_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
        lease_owner=r.lease_owner,
        lease_until=r.lease_until,
    )


def _select() -> sa.Select[Any]:
    return sa.select(*_LISTED).select_from(jobs.outerjoin(users, users.c.id == jobs.c.created_by))


def insert_job(
    conn: sa.Connection,
    *,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    total: int,
    created_by: int,
    now: datetime,
    content: bytes | None = None,
) -> int:
    """A new waiting job; its id."""
    result = conn.execute(
        jobs.insert().values(
            kind=kind,
            subject=subject,
            payload=payload,
            content=content,
            state="waiting",
            done=0,
            total=total,
            attempts=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
    )
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"NOTIFY {JOBS_CHANNEL}"))  # idle runners wake at the commit
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def job_by_id(conn: sa.Connection, job_id: int) -> JobRow | None:
    row = conn.execute(_select().where(jobs.c.id == job_id)).first()
    return _row(row) if row is not None else None


def unfinished_of(conn: sa.Connection, subject: str) -> JobRow | None:
    """The oldest job on `subject` that has not finished, if any."""
    query = _select().where(jobs.c.subject == subject, jobs.c.state.not_in(FINISHED))
    row = conn.execute(query.order_by(jobs.c.id).limit(1)).first()
    return _row(row) if row is not None else None


def list_jobs(
    conn: sa.Connection,
    *,
    created_by: int | None = None,
    subject: str | None = None,
    states: Sequence[str] = (),
    before: int | None = None,
    limit: int = 50,
) -> list[JobRow]:
    """Jobs, newest first (`before`: ids below it, the next page)."""
    query = _select()
    if created_by is not None:
        query = query.where(jobs.c.created_by == created_by)
    if subject is not None:
        query = query.where(jobs.c.subject == subject)
    if states:
        query = query.where(jobs.c.state.in_(list(states)))
    if before is not None:
        query = query.where(jobs.c.id < before)
    return [_row(r) for r in conn.execute(query.order_by(jobs.c.id.desc()).limit(limit))]


def content_of(conn: sa.Connection, job_id: int) -> bytes | None:
    value = conn.execute(sa.select(jobs.c.content).where(jobs.c.id == job_id)).scalar()
    return bytes(value) if value is not None else None


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        jobs.c.state == "waiting",
        sa.and_(jobs.c.state == "running", jobs.c.lease_until < now),
    )


def _first_claimable(now: datetime, kinds: Sequence[str]) -> sa.Select[Any]:
    """The oldest job of `kinds` that can be claimed at `now`: its id."""
    query = sa.select(jobs.c.id).where(_claimable(now), jobs.c.kind.in_(list(kinds)))
    return query.order_by(jobs.c.id).limit(1)


def claimable(conn: sa.Connection, *, now: datetime, kinds: Sequence[str]) -> bool:
    """Whether a job of `kinds` can be claimed now (one indexed read, no lock)."""
    return conn.execute(_first_claimable(now, kinds)).first() is not None


def claim(
    engine: sa.Engine, *, owner: str, now: datetime, lease: timedelta, kinds: Sequence[str]
) -> JobRow | None:
    """Take the oldest job of `kinds` that is waiting or whose runner's lease has expired, for
    `owner` until `now + lease`; None when there is none."""
    with engine.begin() as conn:
        query = _first_claimable(now, kinds)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job_id = conn.execute(query).scalar()
        if job_id is None:
            return None
        taken = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, _claimable(now))
            .values(
                state="running",
                lease_owner=owner,
                lease_until=now + lease,
                attempts=jobs.c.attempts + 1,
                started_at=sa.func.coalesce(jobs.c.started_at, now),
                updated_at=now,
            )
        )
        if taken.rowcount != 1:
            return None
        return job_by_id(conn, int(job_id))


def advance(
    conn: sa.Connection,
    job_id: int,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    done: int,
    total: int | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Write the job's progress (and what it produced so far) on `conn`, the transaction of the
    work done, and renew the lease; JobLeaseLostError (the transaction must roll back) when
    `owner` no longer holds the job."""
    values: dict[str, Any] = {"done": done, "lease_until": now + lease, "updated_at": now}
    if total is not None:
        values["total"] = total
    if result is not None:
        values["result"] = result
    changed = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.lease_owner == owner)
        .values(**values)
    )
    if changed.rowcount != 1:
        raise JobLeaseLostError(f"job {job_id}: lease lost by {owner}")


def finish(
    conn: sa.Connection,
    job_id: int,
    *,
    owner: str,
    now: datetime,
    state: str,
    done: int | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """The job ended (`state` done or failed) on `conn`; its uploaded content is dropped.
    JobLeaseLostError when `owner` no longer holds it."""
    assert state in FINISHED
    values: dict[str, Any] = {
        "state": state,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
        "content": None,
        "error": error[:ERROR_CHARS] if error is not None else None,
    }
    if done is not None:
        values["done"] = done
    if result is not None:
        values["result"] = result
    changed = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.lease_owner == owner)
        .values(**values)
    )
    if changed.rowcount != 1:
        raise JobLeaseLostError(f"job {job_id}: lease lost by {owner}")


def release(conn: sa.Connection, job_id: int, *, owner: str, now: datetime) -> bool:
    """Hand the job back (waiting, no lease) when `owner` still holds it: its runner stops, and
    the next one may take it at once instead of after the lease. Whether it was handed back."""
    changed = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.lease_owner == owner)
        .values(state="waiting", lease_owner=None, lease_until=None, updated_at=now)
    )
    return changed.rowcount == 1


def prune_finished(conn: sa.Connection, before: datetime, *, rows: int) -> int:
    """Delete the oldest jobs that finished (done or failed) before `before`, at most `rows` of
    them (retention, services.retention); how many."""
    j = jobs.c
    ids = list(
        conn.execute(
            sa.select(j.id)
            .where(j.state.in_(FINISHED), j.finished_at < before)
            .order_by(j.id)
            .limit(rows)
        ).scalars()
    )
    if ids:
        conn.execute(jobs.delete().where(j.id.in_(ids)))
    return len(ids)


class JobWatch:
    """What an idle job runner waits on: `wake` is called, from another thread, when a job may
    have been submitted by another process (LISTEN crmflow_jobs on PostgreSQL; on SQLite a
    watch of the commits, any connection's). `signalled` says whether it works (else the runner
    must look again soon); `close()` when done."""

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self._signal = OtherWrites(engine, wake, channel=JOBS_CHANNEL, log=log, who="job runner")

    @property
    def signalled(self) -> bool:
        return self._signal.signalled

    def may_claim(self, *, now: datetime, kinds: Sequence[str]) -> bool:
        """Whether a claim is worth trying. On SQLite one read on the commit watch's own
        connection (no transaction, no write lock, and its commits wake no one), so a runner
        woken by every commit of a busy worker takes the write lock only when a job waits. On
        PostgreSQL True: the claim is the look (one SELECT ... SKIP LOCKED)."""
        watcher = self._signal.watcher
        if watcher is None or not watcher.connected:
            return True

        def look(conn: sa.Connection) -> bool:
            try:
                return claimable(conn, now=now, kinds=kinds)
            finally:
                conn.commit()  # autocommit: nothing is sent; SQLAlchemy's transaction ends

        try:
            return watcher.run(look)
        except Exception as exc:  # the claim will say what is wrong, if anything
            log.debug("job runner: the look failed: %s", exc)
            return True

    def close(self) -> None:
        self._signal.close()
