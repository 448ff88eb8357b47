"""The figures of a running crmflow read from its database at one moment: what `/metrics`
exports as gauges and `crmflow status` shows a person (docs/observability.md).

- the due backlog: runs of running flows due now, and how long the oldest has waited;
- the change feed: record changes the triggers have not read yet, and the oldest one's age;
- the outbox: messages waiting (pending, sending, retrying) or failed, per channel;
- failures: step runs failed in the last hour, triggers failing now, loops stuck;
- the loops (workers, dispatchers): their heartbeats (`services.health`), those seen in the
  last minute.

A few reads on indexes, each count bounded by COUNT_CAP (then "at least"); no write, no lock.
A database that does not answer is said (`database_ok`), never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from crmflow.services.context import Context
from crmflow.services.health import HealthReport, check_health
from crmflow.store import observability as reads
from crmflow.store.database import read_connection

__all__ = ["COUNT_CAP", "RECENT", "Figures", "read_figures"]

log = logging.getLogger("crmflow.observability")

COUNT_CAP = 100_000  # a count stops there: the figure is then "at least"
RECENT = timedelta(minutes=1)  # a loop that beat within it is "seen"
FAILURE_WINDOW = timedelta(hours=1)


@dataclass
class Figures:
    at: datetime
    database: str
    database_ok: bool = True
    database_error: str | None = None
    due: int = 0
    due_capped: bool = False
    oldest_due_at: datetime | None = None
    feed_unread: int = 0
    feed_oldest_unread_at: datetime | None = None
    # (channel, state) -> (count, capped)
    outbox: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    failed_step_runs: int = 0  # in the last FAILURE_WINDOW
    failed_step_runs_capped: bool = False
    failing_triggers: int = 0
    loops: list[dict[str, Any]] = field(default_factory=list)  # as /api/health lists them

    @property
    def oldest_due_seconds(self) -> float:
        """How long the oldest due run has waited past its due time (0: none due)."""
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (self.at - self.oldest_due_at).total_seconds())

    @property
    def feed_lag_seconds(self) -> float:
        if self.feed_oldest_unread_at is None:
            return 0.0
        return max(0.0, (self.at - self.feed_oldest_unread_at).total_seconds())

    def seen(self, kind: str) -> list[dict[str, Any]]:
        """The loops of `kind` that beat within RECENT and have not stopped."""
        bound = RECENT.total_seconds()
        return [
            loop
            for loop in self.loops
            if loop["kind"] == kind
            and loop["state"] != "stopped"
            and loop["last_beat_seconds_ago"] is not None
            and loop["last_beat_seconds_ago"] <= bound
        ]

    def as_dict(self) -> dict[str, Any]:
        """What `crmflow status --json` prints."""
        outbox: dict[str, dict[str, int]] = {}
        for (channel, state), (count, _capped) in sorted(self.outbox.items()):
            outbox.setdefault(channel, {})[state] = count
        return {
            "at": self.at.isoformat(),
            "database": self.database,
            "database_ok": self.database_ok,
            "database_error": self.database_error,
            "backlog": {
                "due": self.due,
                "at_least": self.due_capped,
                "oldest_due_at": self.oldest_due_at.isoformat() if self.oldest_due_at else None,
                "oldest_due_seconds": round(self.oldest_due_seconds, 3),
            },
            "feed": {
                "unread_changes": self.feed_unread,
                "lag_seconds": round(self.feed_lag_seconds, 3),
            },
            "outbox": outbox,
            "failures": {
                "step_runs_last_hour": self.failed_step_runs,
                "step_runs_at_least": self.failed_step_runs_capped,
                "triggers_failing": self.failing_triggers,
                "loops_stuck_or_dead": sum(
                    1 for loop in self.loops if loop["state"] in ("stuck", "dead")
                ),
            },
            "seen_last_minute": {
                "workers": len(self.seen("worker")),
                "dispatchers": len(self.seen("dispatcher")),
            },
            "loops": self.loops,
        }


def read_figures(ctx: Context, *, now: datetime | None = None, cap: int = COUNT_CAP) -> Figures:
    """The figures at `now` (default: the context's clock), from one read snapshot."""
    at = now or ctx.now()
    figures = Figures(at=at, database=ctx.engine.dialect.name)
    health: HealthReport = check_health(ctx, now=at)
    figures.loops = health.loops
    if not health.database_ok:
        figures.database_ok = False
        figures.database_error = health.database_error
        return figures
    try:
        with read_connection(ctx.engine) as conn:
            backlog = reads.due_backlog(conn, now=at, cap=cap)
            feed = reads.feed_lag(conn)
            figures.outbox = reads.outbox_counts(conn, cap=cap)
            failed = reads.failed_step_runs_since(conn, at - FAILURE_WINDOW, cap=cap)
            figures.failing_triggers = reads.failing_triggers(conn)
    except Exception as exc:  # a figure that cannot be read is said, never raised
        log.warning("figures not read: %s", exc, exc_info=True)
        figures.database_ok = False
        figures.database_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return figures
    figures.due, figures.due_capped, figures.oldest_due_at = (
        backlog.due,
        backlog.capped,
        backlog.oldest_due_at,
    )
    figures.feed_unread, figures.feed_oldest_unread_at = feed.unread, feed.oldest_unread_at
    figures.failed_step_runs, figures.failed_step_runs_capped = failed
    return figures
