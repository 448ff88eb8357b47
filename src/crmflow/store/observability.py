"""The figures `/metrics` and `crmflow status` read from the database at the moment they are
asked (`services.observability`): the due backlog and its oldest row, the outbox's messages
waiting or failed per channel, the change feed's unread changes, the failed step runs of the
last hour, the triggers failing now.

Only reads, each a query on an index (or on a few rows), and bounded: a count stops at `cap`
rows, so a backlog of millions costs what `cap` rows cost (the answer then says "at least").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crmflow.store.enrollments.claims import first_due_probes
from crmflow.store.enrollments.rows import RUNNING, RUNNING_FLOWS
from crmflow.store.feed import FEED
from crmflow.store.schema import (
    enrollments,
    feed_cursors,
    flows,
    outbox,
    record_changes,
    step_runs,
    trigger_failures,
)

__all__ = [
    "CHANNELS",
    "OUTBOX_STATES",
    "Backlog",
    "FeedLag",
    "due_backlog",
    "failed_step_runs_since",
    "failing_triggers",
    "feed_lag",
    "oldest_due_select",
    "outbox_counts",
]

# The outbox states counted: those that wait, and failed (delivered ones are counted by the
# dispatcher as they go: crmflow_deliveries_total).
OUTBOX_STATES = ("pending", "sending", "retrying", "failed")
CHANNELS = ("email", "sms", "webhook")  # always counted (0 when none), others when found


@dataclass(frozen=True)
class Backlog:
    due: int  # runs of running flows due now (at most `cap`)
    capped: bool  # there are `cap` or more
    oldest_due_at: datetime | None


@dataclass(frozen=True)
class FeedLag:
    unread: int  # record changes after the feed's cursor (by id: an upper bound)
    oldest_unread_at: datetime | None


def _capped_count(conn: sa.Connection, query: sa.Select[Any], cap: int) -> tuple[int, bool]:
    inner = query.limit(cap).subquery()
    count = int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())
    return count, count >= cap


def due_backlog(conn: sa.Connection, *, now: datetime, cap: int) -> Backlog:
    """The runs of running flows due at `now` (leased or not: due work not done yet)."""
    e = enrollments.c
    due = sa.and_(
        e.status.in_(RUNNING),
        e.due_at <= now,
        e.flow_id.in_(sa.select(flows.c.id).where(flows.c.status.in_(RUNNING_FLOWS))),
    )
    count, capped = _capped_count(conn, sa.select(e.id).where(due), cap)
    oldest: datetime | None = conn.execute(oldest_due_select(now)).scalar()
    return Backlog(count, capped, oldest)


def oldest_due_select(now: datetime) -> sa.Select[Any]:
    """The earliest due time at or before `now` among the rows inside a running flow: for each
    running flow and each status inside, its first due row, one probe of
    `ix_enrollments_flow_status_due` (the min over every due row read them all: a million for a
    backlog of a million)."""
    e = enrollments.c
    found = sa.union_all(*first_due_probes(e.due_at <= now, label="due_at")).subquery("first_due")
    return sa.select(sa.func.min(sa.type_coerce(found.c.due_at, e.due_at.type)))


def outbox_counts(conn: sa.Connection, *, cap: int) -> dict[tuple[str, str], tuple[int, bool]]:
    """Per (channel, state) of OUTBOX_STATES: how many messages (at most `cap` per state, on
    the status index: capped?), for each of CHANNELS and any other channel found; 0 where
    there are none, so that a gauge goes to 0 rather than disappearing."""
    o = outbox.c
    found: dict[tuple[str, str], int] = {}
    capped: set[str] = set()
    for state in OUTBOX_STATES:
        some = sa.select(o.kind).where(o.status == state).limit(cap).subquery()
        rows = conn.execute(sa.select(some.c.kind, sa.func.count()).group_by(some.c.kind))
        total = 0
        for kind, count in rows:
            found[(str(kind), state)] = int(count)
            total += int(count)
        if total >= cap:
            capped.add(state)
    channels = sorted(set(CHANNELS) | {kind for kind, _ in found})
    return {
        (kind, state): (found.get((kind, state), 0), state in capped)
        for kind in channels
        for state in OUTBOX_STATES
    }


def feed_lag(conn: sa.Connection) -> FeedLag:
    """How far the triggers' reading of the change feed is behind its newest change."""
    position = conn.execute(
        sa.select(feed_cursors.c.position).where(feed_cursors.c.name == FEED)
    ).scalar()
    after = int(position or 0)
    newest = conn.execute(sa.select(sa.func.max(record_changes.c.id))).scalar()
    if newest is None or int(newest) <= after:
        return FeedLag(0, None)
    first = conn.execute(
        sa.select(record_changes.c.at)
        .where(record_changes.c.id > after)
        .order_by(record_changes.c.id)
        .limit(1)
    ).scalar()
    return FeedLag(int(newest) - after, first)


def failed_step_runs_since(conn: sa.Connection, since: datetime, *, cap: int) -> tuple[int, bool]:
    """Step runs that failed (an action failed) since `since`: at most `cap`, capped?"""
    s = step_runs.c
    # The status as a literal, as the partial index ix_step_runs_failed has it: a bound
    # parameter would not let the database use it.
    failed = s.status == sa.literal_column("'failed'")
    query = sa.select(s.enrollment_id).where(failed, s.started_at >= since)
    return _capped_count(conn, query, cap)


def failing_triggers(conn: sa.Connection) -> int:
    """Triggers of flows marked failing now (retried with backoff)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(trigger_failures)).scalar_one())
