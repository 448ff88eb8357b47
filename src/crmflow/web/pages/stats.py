"""Statistics (`/stats`): every automation one may see with its runs pending, done and
cancelled (seed 001), paged by key; a flow's page (`/stats/{key}`) with its funnel, entries and
exits per day over the last 30 days, actions by state and messages sent and failed, each as a
Chart.js chart (static/stats.js reads the figures from a JSON data block) and as a table under
it. A private flow's figures only for those who may see the flow (404 otherwise, as the API)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response

from crmflow.services import stats
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import render

router = web_router()

PAGE_SIZE = 50
DAYS = 30


@router.get("/stats")
def automations(
    request: Request,
    user: CurrentUser,
    after: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    page = stats.automations_page(context_of(request), user, after=after, limit=PAGE_SIZE)
    return render(
        request,
        "stats.html",
        items=page.items,
        next_url=f"/stats?after={page.next_after}" if page.next_after is not None else None,
        first_url="/stats" if after else None,
    )


def _charts(figures: stats.FlowStats) -> dict[str, dict[str, Any]]:
    """What static/stats.js draws: per chart its type, labels and data sets."""
    progress = figures.progress
    days = [d.isoformat() for d in figures.days]
    messages = figures.messages
    return {
        "funnel": {
            "type": "bar",
            "horizontal": True,
            "labels": list(progress.funnel),
            "datasets": [{"label": "Records", "data": list(progress.funnel.values())}],
        },
        "over-time": {
            "type": "line",
            "labels": days,
            "datasets": [
                {"label": "Entries", "data": figures.entries},
                {"label": "Exits", "data": figures.exits},
            ],
        },
        "actions": {
            "type": "bar",
            "labels": list(figures.actions),
            "datasets": [{"label": "Actions", "data": list(figures.actions.values())}],
        },
        "messages": {
            "type": "bar",
            "labels": [m.kind for m in figures.messages],
            "datasets": [
                {"label": label, "colour": colour, "data": [getattr(m, attr) for m in messages]}
                for label, colour, attr in (
                    ("Sent", "#2e7d32", "sent"),
                    ("Failed", "#b3261e", "failed"),
                    ("Waiting", "#1d5f8a", "waiting"),
                )
            ],
        },
    }


@router.get("/stats/{flow_key}")
def flow_stats(request: Request, user: CurrentUser, flow_key: str) -> Response:
    figures = stats.flow_stats(context_of(request), user, flow_key, days=DAYS)
    over_time = [
        (day, entered, ended)
        for day, entered, ended in zip(figures.days, figures.entries, figures.exits, strict=True)
    ]
    return render(
        request,
        "stats_flow.html",
        flow_key=flow_key,
        figures=figures,
        progress=figures.progress,
        over_time=over_time,
        days=DAYS,
        charts=_charts(figures),
    )
