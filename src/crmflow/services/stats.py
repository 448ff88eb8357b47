"""Statistics of flows (the web's /stats): every automation one may see with its runs pending,
done and cancelled; per flow its funnel, entries and exits per day, actions by state and
messages sent and failed. Private flows' figures only for those who may see the flow. The
step runs and messages that retention pruned count through the counts kept when they went
(`store.retention.history_counts`), so the figures stay the same after pruning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from crmflow.services.context import Actor, Context
from crmflow.services.flow_access import visible_flow
from crmflow.services.flows import FlowView, flows_page
from crmflow.services.paging import DEFAULT_PAGE_SIZE
from crmflow.services.run_views import FlowProgress, flow_progress
from crmflow.store.database import read_connection
from crmflow.store.retention import history_counts
from crmflow.store.stats import (
    actions_by_state,
    messages_by_status,
    per_day,
    runs_by_flow_and_status,
)

__all__ = [
    "CANCELLED",
    "DONE",
    "PENDING",
    "AutomationCounts",
    "AutomationsPage",
    "FlowStats",
    "automations_page",
    "flow_stats",
]

# How a run's status counts on the automations page.
PENDING = ("active", "waiting", "held")
DONE = ("finished", "left")
CANCELLED = ("cancelled",)
# How a message's status counts: sent (or kept by the mail catcher), failed, or still to go.
SENT_STATUSES = ("sent", "delivered", "caught", "partly_sent")
FAILED_STATUSES = ("failed", "suppressed")


@dataclass(frozen=True)
class AutomationCounts:
    flow: FlowView
    pending: int
    done: int
    cancelled: int


@dataclass(frozen=True)
class AutomationsPage:
    items: list[AutomationCounts]
    next_after: str | None


def automations_page(
    ctx: Context, actor: Actor, *, after: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> AutomationsPage:
    """The flows `actor` can see, by key, `limit` at a time, each with how many of its runs
    are pending (inside), done (finished or left) and cancelled."""
    page = flows_page(ctx, actor, after=after, limit=limit)
    with read_connection(ctx.engine) as conn:
        counts = runs_by_flow_and_status(conn, [f.id for f in page.items])
    items = []
    for flow in page.items:
        mine = counts.get(flow.id, {})
        items.append(
            AutomationCounts(
                flow=flow,
                pending=sum(mine.get(s, 0) for s in PENDING),
                done=sum(mine.get(s, 0) for s in DONE),
                cancelled=sum(mine.get(s, 0) for s in CANCELLED),
            )
        )
    return AutomationsPage(items, page.next_after)


@dataclass(frozen=True)
class MessageCounts:
    kind: str
    sent: int
    failed: int
    waiting: int  # pending, retrying or being sent


@dataclass(frozen=True)
class FlowStats:
    progress: FlowProgress
    days: list[date]  # oldest first, the last `days` days up to today (UTC)
    entries: list[int]  # per day of `days`
    exits: list[int]  # per day of `days`
    actions: dict[str, int]  # per state
    messages: list[MessageCounts]  # per kind


def flow_stats(ctx: Context, actor: Actor, key: str, *, days: int = 30) -> FlowStats:
    """The figures of flow `key` (NotFoundError when `actor` may not see it): its progress and
    funnel, entries and exits per day over the last `days` days, actions by state, messages
    per kind sent, failed and waiting."""
    progress = flow_progress(ctx, actor, key)
    today = ctx.clock().date()
    first = today - timedelta(days=days - 1)
    since = ctx.clock().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days - 1
    )
    with read_connection(ctx.engine) as conn:
        flow = visible_flow(conn, actor, key)
        entered = per_day(conn, flow.id, since=since, column="entered_at")
        ended = per_day(conn, flow.id, since=since, column="finished_at")
        actions = actions_by_state(conn, flow.id)
        by_status = messages_by_status(conn, flow.id)
        # What retention pruned, counted when it went (docs/retention.md).
        for (kind, what, outcome), n in history_counts(conn, flow.id).items():
            if kind == "action":
                actions[outcome] = actions.get(outcome, 0) + n
            elif kind == "message":
                by_status[(what, outcome)] = by_status.get((what, outcome), 0) + n
    span = [first + timedelta(days=n) for n in range(days)]
    kinds = sorted({kind for kind, _ in by_status})
    messages = [
        MessageCounts(
            kind=kind,
            sent=sum(n for (k, s), n in by_status.items() if k == kind and s in SENT_STATUSES),
            failed=sum(n for (k, s), n in by_status.items() if k == kind and s in FAILED_STATUSES),
            waiting=sum(
                n
                for (k, s), n in by_status.items()
                if k == kind and s not in SENT_STATUSES + FAILED_STATUSES + ("cancelled",)
            ),
        )
        for kind in kinds
    ]
    return FlowStats(
        progress=progress,
        days=span,
        entries=[entered.get(d, 0) for d in span],
        exits=[ended.get(d, 0) for d in span],
        actions=dict(sorted(actions.items())),
        messages=messages,
    )
