"""`GET /metrics`: Prometheus' text format (docs/observability.md).

The counters and histograms of the work done (`crmflow.metrics`: this process's, or every
process's with CRMFLOW_METRICS_DIR), then the gauges read from the database at this moment
(`services.observability`): the due backlog, the outbox, the change feed's lag, failures, the
loops' liveness. A database that does not answer gives `crmflow_database_up 0` with the rest of
the figures, never an error page.

Access: with CRMFLOW_METRICS_TOKEN set, only a call with `Authorization: Bearer <that token>`
(Prometheus' `authorization` setting); without it, only calls from this machine (a loopback
address), so that a server listening on every address does not publish its figures.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crmflow.api.deps import ServiceContext
from crmflow.api.limits import GuardedRoute
from crmflow.errors import AuthenticationError, PermissionDeniedError
from crmflow.metrics import exposition
from crmflow.services.context import Context
from crmflow.services.health import KINDS
from crmflow.services.observability import Figures, read_figures
from crmflow.store.observability import OUTBOX_STATES

__all__ = ["STORE_METRICS", "FiguresCollector", "router"]

log = logging.getLogger("crmflow.metrics")
router = APIRouter(tags=["meta"], route_class=GuardedRoute)

LOOP_STATES = ("alive", "stuck", "dead", "stopped")

# The gauges read from the database, as scraped (the dashboard test checks its names with these).
STORE_METRICS = (
    "crmflow_database_up",
    "crmflow_due_backlog",
    "crmflow_due_oldest_age_seconds",
    "crmflow_feed_lag_changes",
    "crmflow_feed_lag_seconds",
    "crmflow_outbox_messages",
    "crmflow_step_runs_failed_last_hour",
    "crmflow_triggers_failing",
    "crmflow_loops",
    "crmflow_loops_seen_last_minute",
    "crmflow_loop_last_beat_age_seconds",
)


class FiguresCollector(Collector):
    """The gauges of `read_figures`, read when Prometheus scrapes."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield _gauge(
            "crmflow_database_up",
            "1 when the database answered the reads.",
            1 if f.database_ok else 0,
        )
        if f.database_ok:
            yield _gauge(
                "crmflow_due_backlog",
                "Runs of running flows due now and not moved yet (counted up to 100000).",
                f.due,
            )
            yield _gauge(
                "crmflow_due_oldest_age_seconds",
                "How long the oldest due run has waited past its due time (0: none due).",
                f.oldest_due_seconds,
            )
            yield _gauge(
                "crmflow_feed_lag_changes",
                "Record changes the triggers have not read yet.",
                f.feed_unread,
            )
            yield _gauge(
                "crmflow_feed_lag_seconds",
                "Age of the oldest record change not read yet (0: none).",
                f.feed_lag_seconds,
            )
            outbox = GaugeMetricFamily(
                "crmflow_outbox_messages",
                "Outbox messages per channel and state (pending, sending, retrying, failed).",
                labels=["channel", "state"],
            )
            for (channel, state), (count, _capped) in sorted(f.outbox.items()):
                if state in OUTBOX_STATES:
                    outbox.add_metric([channel, state], count)
            yield outbox
            yield _gauge(
                "crmflow_step_runs_failed_last_hour",
                "Step runs that failed (an action failed) in the last hour.",
                f.failed_step_runs,
            )
            yield _gauge(
                "crmflow_triggers_failing",
                "Triggers of flows marked failing now (retried with backoff).",
                f.failing_triggers,
            )
        loops = GaugeMetricFamily(
            "crmflow_loops",
            "Workers and dispatchers heard of in the last 10 minutes, by state.",
            labels=["kind", "state"],
        )
        seen = GaugeMetricFamily(
            "crmflow_loops_seen_last_minute",
            "Workers and dispatchers that beat within the last minute.",
            labels=["kind"],
        )
        age = GaugeMetricFamily(
            "crmflow_loop_last_beat_age_seconds",
            "Seconds since the latest heartbeat of any loop of the kind (absent: none heard of).",
            labels=["kind"],
        )
        for kind in KINDS:
            of_kind = [loop for loop in f.loops if loop["kind"] == kind]
            for state in LOOP_STATES:
                loops.add_metric(
                    [kind, state], sum(1 for loop in of_kind if loop["state"] == state)
                )
            seen.add_metric([kind], len(f.seen(kind)))
            beats = [loop["last_beat_seconds_ago"] for loop in of_kind]
            if beats:
                age.add_metric([kind], min(b for b in beats if b is not None))
        yield loops
        yield seen
        yield age


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_access(ctx: Context, request: Request) -> None:
    token = ctx.settings.metrics_token
    if token is None:
        host = request.client.host if request.client is not None else None
        if not _is_loopback(host):
            raise PermissionDeniedError(
                f"/metrics answers only calls from this machine ({host} is not a loopback "
                "address): set CRMFLOW_METRICS_TOKEN and give it as 'Authorization: Bearer "
                "<token>' to scrape from elsewhere"
            )
        return
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        raise AuthenticationError(
            "/metrics needs 'Authorization: Bearer <CRMFLOW_METRICS_TOKEN>'"
            + (" (the token given is not it)" if given else "")
        )


def _body(ctx: Context) -> bytes:
    return exposition(FiguresCollector(read_figures(ctx)))


# Not in the OpenAPI document (a JSON API's): Prometheus reads it, docs/observability.md says how.
@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(ctx: ServiceContext, request: Request) -> Response:
    """The figures of crmflow in Prometheus' text format (docs/observability.md)."""
    _check_access(ctx, request)
    body = await run_in_threadpool(_body, ctx)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
