"""Heartbeats of the long-running loops (workers, dispatchers): one row per loop, by name.

A loop writes its row when it starts, beats as it goes (at most every few seconds: a write on
SQLite takes the write lock), notes its last successful round and its last error, and says when
it stopped cleanly. `/api/health` reads the rows of every process on the database, so a worker
on another machine that hangs or died is seen as well as the one in the server's own process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.schema import worker_heartbeats

__all__ = [
    "ERROR_CHARS",
    "Beat",
    "Heartbeat",
    "beat",
    "beat_statement",
    "read_heartbeats",
    "started",
    "stopped",
]

ERROR_CHARS = 2_000
_KEEP = timedelta(days=7)  # how long the row of a loop that is gone is kept


@dataclass(frozen=True)
class Heartbeat:
    name: str
    kind: str
    started_at: datetime
    beat_at: datetime
    last_success_at: datetime | None
    last_error: str | None
    stopped_at: datetime | None


@dataclass(frozen=True)
class Beat:
    """A heartbeat to write: the loop `name` is alive at `now`; `success_at`: its last round
    that completed; `error`: what went wrong last (kept until a later round completes without
    one)."""

    name: str
    kind: str
    now: datetime
    success_at: datetime | None = None
    error: str | None = None


def _insert(conn: sa.Connection) -> Any:
    return _insert_for(conn.dialect.name)


def _insert_for(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(worker_heartbeats)


def beat_statement(dialect: str, heartbeat: Beat) -> Any:
    """The upsert that writes `heartbeat` (a row removed meanwhile, e.g. by a test, is written
    anew), for `dialect`: what `beat` runs, and what an idle worker's look
    (`store.wakeups.RestLooks`) folds into its one statement, with a RETURNING clause or as a
    CTE."""
    values: dict[str, Any] = {
        "kind": heartbeat.kind,
        "beat_at": heartbeat.now,
        "stopped_at": None,
    }
    if heartbeat.success_at is not None:
        values["last_success_at"] = heartbeat.success_at
    if heartbeat.error is not None:
        values["last_error"] = heartbeat.error[:ERROR_CHARS]
    elif heartbeat.success_at is not None:
        values["last_error"] = None
    return (
        _insert_for(dialect)
        .values(name=heartbeat.name, started_at=heartbeat.now, **values)
        .on_conflict_do_update(index_elements=["name"], set_=values)
    )


def started(engine: sa.Engine, *, name: str, kind: str, now: datetime) -> None:
    """The loop `name` starts (a name seen before starts over)."""
    values = {
        "kind": kind,
        "started_at": now,
        "beat_at": now,
        "last_success_at": None,
        "last_error": None,
        "stopped_at": None,
    }
    with engine.begin() as conn:
        conn.execute(
            _insert(conn)
            .values(name=name, **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
        )
        # Each start has a new name (host, pid, random): forget the loops long gone.
        conn.execute(worker_heartbeats.delete().where(worker_heartbeats.c.beat_at < now - _KEEP))


def beat(
    engine: sa.Engine,
    *,
    name: str,
    kind: str,
    now: datetime,
    success_at: datetime | None = None,
    error: str | None = None,
) -> None:
    """The loop is alive at `now`; `success_at`: its last round that completed; `error`: what
    went wrong last (kept until a later round completes without one). A row removed meanwhile
    (e.g. by a test) is written anew."""
    heartbeat = Beat(name, kind, now, success_at, error)
    with engine.begin() as conn:
        conn.execute(beat_statement(conn.dialect.name, heartbeat))


def stopped(
    engine: sa.Engine,
    *,
    name: str,
    now: datetime,
    success_at: datetime | None = None,
    error: str | None = None,
) -> None:
    """The loop ended: cleanly (`error` None), or because of `error`; `success_at`: its last
    round that completed."""
    values: dict[str, Any] = {"beat_at": now}
    if success_at is not None:
        values["last_success_at"] = success_at
    if error is None:
        values["stopped_at"] = now
    else:
        values["last_error"] = error[:ERROR_CHARS]
    with engine.begin() as conn:
        conn.execute(
            worker_heartbeats.update().where(worker_heartbeats.c.name == name).values(**values)
        )


def read_heartbeats(conn: sa.Connection, *, since: datetime) -> list[Heartbeat]:
    """The loops that beat at or after `since` (a small table: `started` prunes it)."""
    h = worker_heartbeats.c
    rows = conn.execute(
        sa.select(worker_heartbeats).where(h.beat_at >= since).order_by(h.kind, h.name)
    )
    return [
        Heartbeat(
            name=r.name,
            kind=r.kind,
            started_at=r.started_at,
            beat_at=r.beat_at,
            last_success_at=r.last_success_at,
            last_error=r.last_error,
            stopped_at=r.stopped_at,
        )
        for r in rows
    ]
