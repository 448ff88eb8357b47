"""Triggers that failed: one row per (flow, trigger index) whose last run raised, retried with
exponential backoff and removed by its next successful run.

A failing trigger must not stop the flow's other triggers, the other flows, or the worker: its
run is rolled back alone, this row says why and when it is tried again, and the timed triggers'
query (`blocked`) passes it over until then. The flow's page lists these rows.

The change feed writes rows of its own (`services.triggers.change_feed`): the index of the flow's
change trigger that fired (or FEED_INDEX, -1, when the failure came from the records inside the
flow hearing their record's changes), tried again with the next change, not after a backoff (the
feed cannot wait for one flow), so their `retry_at` is the failure's time. `blocked` and the
timed triggers' schedules never see them: those only look at the indexes of timed triggers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from crmflow.store.flows import insert_status_change
from crmflow.store.schema import flows, trigger_failures

__all__ = [
    "FEED_INDEX",
    "FEED_TYPE",
    "FIRST_RETRY",
    "LAST_ERROR_CHARS",
    "MAX_RETRY",
    "TriggerFailure",
    "backoff",
    "blocked",
    "clear",
    "failing",
    "next_retry_at",
    "note_in_flow_history",
    "record_failure",
]

FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(hours=1)
LAST_ERROR_CHARS = 2_000  # an error message can quote a whole document: keep the row small
# The trigger index of a change-feed failure that no change trigger of the flow owns: the
# records inside the flow hearing their record's changes (wait steps, date timings).
FEED_INDEX = -1
FEED_TYPE = "record_change"  # its trigger type


@dataclass(frozen=True)
class TriggerFailure:
    flow_id: int
    trigger_index: int
    trigger_type: str
    failures: int
    last_error: str
    first_failed_at: datetime
    last_failed_at: datetime
    retry_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "trigger_index": self.trigger_index,
            "trigger_type": self.trigger_type,
            "failures": self.failures,
            "last_error": self.last_error,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
            "retry_at": self.retry_at.isoformat(),
        }


def backoff(failures: int) -> timedelta:
    """The wait before retrying a trigger that failed `failures` times in a row: 5 s, doubling,
    at most an hour."""
    if failures >= 20:  # 5 s * 2**19 is far past the cap; do not compute huge powers
        return MAX_RETRY
    wait: timedelta = FIRST_RETRY * (2 ** max(failures - 1, 0))
    return min(wait, MAX_RETRY)


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        trigger_failures
    )


def record_failure(
    conn: sa.Connection,
    *,
    flow_id: int,
    trigger_index: int,
    trigger_type: str,
    error: str,
    now: datetime,
    retry_at: datetime | None = None,
) -> TriggerFailure:
    """Count one more failure of the trigger and set its next try (by default after the backoff
    of so many failures in a row; `retry_at` when the caller retries on its own terms); the row
    as it now is."""
    t = trigger_failures.c
    before = conn.execute(
        sa.select(t.failures, t.first_failed_at).where(
            t.flow_id == flow_id, t.trigger_index == trigger_index
        )
    ).first()
    failures = (int(before.failures) if before is not None else 0) + 1
    first = before.first_failed_at if before is not None else now
    values = {
        "trigger_type": trigger_type,
        "failures": failures,
        "last_error": error[:LAST_ERROR_CHARS],
        "first_failed_at": first,
        "last_failed_at": now,
        "retry_at": retry_at or now + backoff(failures),
    }
    conn.execute(
        _insert(conn)
        .values(flow_id=flow_id, trigger_index=trigger_index, **values)
        .on_conflict_do_update(index_elements=["flow_id", "trigger_index"], set_=values)
    )
    return TriggerFailure(flow_id, trigger_index, **values)  # type: ignore[arg-type]


def clear(conn: sa.Connection, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The triggers `pairs` (flow id, trigger index) ran, or are gone: they are failing no
    more. Those that were failing until now."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    t = trigger_failures.c
    among = sa.tuple_(t.flow_id, t.trigger_index).in_(wanted)
    were = [
        (int(r.flow_id), int(r.trigger_index))
        for r in conn.execute(sa.select(t.flow_id, t.trigger_index).where(among))
    ]
    if were:
        conn.execute(trigger_failures.delete().where(among))
    return were


def note_in_flow_history(conn: sa.Connection, *, flow_id: int, note: str, now: datetime) -> None:
    """A line in the flow's history (its status and version unchanged), by no user: a trigger
    that started failing, or that runs again."""
    row = conn.execute(
        sa.select(flows.c.status, flows.c.current_version).where(flows.c.id == flow_id)
    ).first()
    if row is None:
        return
    insert_status_change(
        conn,
        flow_id=flow_id,
        from_status=row.status,
        to_status=row.status,
        version=row.current_version,
        actor_id=None,
        at=now,
        note=note[:LAST_ERROR_CHARS],
    )


def blocked(now: datetime) -> sa.Select[Any]:
    """`(flow_id, trigger_index)` of the triggers that failed and wait for their retry at
    `now` (for a NOT IN over those two columns)."""
    t = trigger_failures.c
    return sa.select(t.flow_id, t.trigger_index).where(t.retry_at > now)


def failing(conn: sa.Connection, flow_ids: Sequence[int]) -> dict[int, list[TriggerFailure]]:
    """The failing triggers of `flow_ids`, per flow, by trigger index."""
    if not flow_ids:
        return {}
    t = trigger_failures.c
    rows = conn.execute(
        sa.select(trigger_failures)
        .where(t.flow_id.in_(sorted(set(flow_ids))))
        .order_by(t.flow_id, t.trigger_index)
    )
    out: dict[int, list[TriggerFailure]] = {}
    for r in rows:
        out.setdefault(int(r.flow_id), []).append(
            TriggerFailure(
                flow_id=int(r.flow_id),
                trigger_index=int(r.trigger_index),
                trigger_type=r.trigger_type,
                failures=int(r.failures),
                last_error=r.last_error,
                first_failed_at=r.first_failed_at,
                last_failed_at=r.last_failed_at,
                retry_at=r.retry_at,
            )
        )
    return out


def next_retry_at(conn: sa.Connection, flow_id: int, trigger_index: int) -> datetime | None:
    """When a failing trigger is tried again (None: it is not failing)."""
    t = trigger_failures.c
    value: datetime | None = conn.execute(
        sa.select(t.retry_at).where(t.flow_id == flow_id, t.trigger_index == trigger_index)
    ).scalar()
    return value
