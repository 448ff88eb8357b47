"""What crmflow counts as it works, for Prometheus (`/metrics`, docs/observability.md).

The counters and histograms here are kept by the process that does the work (the worker of
`crmflow serve`, a `crmflow worker`, a `crmflow dispatch`), a few calls at the points where the
work is done: `observe_moved` (the batch runner, once per batch), `observe_batch` (the worker),
`observe_delivery` / `timed_send` (the dispatcher). The figures read from the database at
scrape time (the due backlog, the outbox, the change feed's lag, the loops' heartbeats) are
not here: `/metrics` reads them (`services.observability`).

Several processes: set CRMFLOW_METRICS_DIR (or PROMETHEUS_MULTIPROC_DIR) to the same empty
directory for every crmflow process of the machine, before they start: each then writes its
figures to files there, and `/metrics` adds them up (prometheus-client's multiprocess mode).
Without it each process counts in its memory, and `/metrics` shows the server's own worker.

Labels are bounded: flow and step keys (a flow has at most its steps; past `MAX_FLOWS`
distinct flows the rest are counted under `other`), an outcome or status out of a fixed list,
a channel (email, sms, webhook). No record, run or message id is ever a label.

Counting never raises: a figure that could not be written (a full disk under the metrics
directory) is logged once and the work goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from crmflow.engine.runtime import EnrollmentState, EnrollmentStatus, StepRunLog
from crmflow.engine.step_loop import Outcome

__all__ = [
    "METRICS_DIR_ENV",
    "MetricsRow",
    "exposition",
    "metric_names",
    "multiprocess_dir",
    "observe_all",
    "observe_batch",
    "observe_delivery",
    "observe_moved",
    "timed_send",
]

log = logging.getLogger("crmflow.metrics")

METRICS_DIR_ENV = "CRMFLOW_METRICS_DIR"
_PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _choose_directory() -> str | None:
    """CRMFLOW_METRICS_DIR (or PROMETHEUS_MULTIPROC_DIR), made if missing; None: one process."""
    chosen = os.environ.get(METRICS_DIR_ENV) or os.environ.get(_PROMETHEUS_DIR_ENV)
    if not chosen:
        return None
    try:
        Path(chosen).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error(
            "%s=%s cannot be used (%s): this process counts in memory only",
            METRICS_DIR_ENV,
            chosen,
            exc,
        )
        return None
    # prometheus-client reads this variable when its metrics are made (just below).
    os.environ[_PROMETHEUS_DIR_ENV] = chosen
    return chosen


_DIRECTORY = _choose_directory()

# Imported after the directory is chosen: the value class (in memory, or in files) is picked
# when the metrics below are made.
from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402

if _DIRECTORY is not None and values.ValueClass is values.MutexValue:
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # prometheus_client was imported before us

MAX_FLOWS = 500  # distinct flow labels; more flows are counted as "other"
OTHER = "other"

RUNS_ENTERED = Counter(
    "crmflow_runs_entered", "Runs that entered a flow (their first step ran).", ["flow"]
)
RUNS_ENDED = Counter(
    "crmflow_runs_ended",
    "Runs that ended, by how: finished, left or cancelled.",
    ["flow", "status"],
)
STEP_RUNS = Counter(
    "crmflow_step_runs",
    "Step runs written, by flow, step and outcome (done, skipped, waiting, failed, ended).",
    ["flow", "step", "outcome"],
)
TIMER_LATENESS = Histogram(
    "crmflow_timer_lateness_seconds",
    "How long after its due time a run waiting for a timer was moved.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
BATCH_DURATION = Histogram(
    "crmflow_batch_duration_seconds",
    "A worker's batch that claimed runs: claim, engine and write, wall time.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
BATCH_SIZE = Histogram(
    "crmflow_batch_size",
    "Runs claimed by a worker's batch (batches that claimed none are not counted).",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
DELIVERY_DURATION = Histogram(
    "crmflow_delivery_duration_seconds",
    "Time to hand one message to its channel (SMTP server, webhook, SMS provider).",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERIES = Counter(
    "crmflow_deliveries",
    "Delivery attempts by channel and outcome: delivered, retrying (failed for now), failed "
    "(for good).",
    ["channel", "outcome"],
)

_PROCESS_METRICS = (
    RUNS_ENTERED,
    RUNS_ENDED,
    STEP_RUNS,
    TIMER_LATENESS,
    BATCH_DURATION,
    BATCH_SIZE,
    DELIVERY_DURATION,
    DELIVERIES,
)

_flows_seen: set[str] = set()
_flows_lock = threading.Lock()
_failed_once: list[bool] = []  # one element once a failure to count was logged
_T = TypeVar("_T")
_M = TypeVar("_M")


def _flow_label(key: str) -> str:
    if key in _flows_seen:
        return key
    with _flows_lock:
        if len(_flows_seen) >= MAX_FLOWS:
            return OTHER
        _flows_seen.add(key)
    return key


def _never_raise(what: str, exc: Exception) -> None:
    if not _failed_once:
        _failed_once.append(True)
        log.error("metrics: %s not counted (said once): %s", what, exc)


class MetricsRow(Protocol):
    """What `observe_moved` reads of an enrollment row of a batch (store.enrollments)."""

    @property
    def id(self) -> int: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def state(self) -> EnrollmentState | None: ...


_ENDS = (EnrollmentStatus.FINISHED, EnrollmentStatus.LEFT, EnrollmentStatus.CANCELLED)


def observe_moved(
    rows: Sequence[MetricsRow],
    outcomes: Mapping[int, Outcome],
    step_logs: Sequence[StepRunLog],
    *,
    now: datetime,
    timers: bool,
) -> None:
    """Count what a batch moved: runs entered and ended per flow, the step runs written
    (`step_logs`, with the actions whose effects failed marked) per flow, step and outcome, and
    (`timers`: moved by their due time, not by an event) each waiting run's lateness. Tallied
    first, then one increment per label set."""
    try:
        entered: Tally[str] = Tally()
        ended: Tally[tuple[str, str]] = Tally()
        late: list[float] = []
        flow_of: dict[int, str] = {}  # the runs counted: their flow's key
        for row in rows:
            outcome = outcomes.get(row.id)
            if outcome is None or outcome.refused or outcome.not_due:
                continue
            before, after = row.state, outcome.state
            if before is None and not outcome.log:
                continue  # cancelled before it entered (held by the loop guard, record gone)
            flow = flow_of[row.id] = after.flow_key
            if before is None:
                entered[flow] += 1
            elif timers and row.due_at is not None:
                late.append(max(0.0, (now - row.due_at).total_seconds()))
            if after.status in _ENDS and (before is None or before.status not in _ENDS):
                ended[(flow, after.status)] += 1  # a StrEnum: its value as a label
        # Counted by Counter's own loop (a batch writes thousands of step runs).
        steps: Tally[tuple[str, str, str]] = Tally(
            (run_flow, run.step_key, run.status)
            for run in step_logs
            if (run_flow := flow_of.get(run.enrollment_id)) is not None
        )
        for flow, n in entered.items():
            RUNS_ENTERED.labels(_flow_label(flow)).inc(n)
        for (flow, status), n in ended.items():
            RUNS_ENDED.labels(_flow_label(flow), status).inc(n)
        for (flow, step_key, status), n in steps.items():
            STEP_RUNS.labels(_flow_label(flow), step_key, status).inc(n)
        observe_all(TIMER_LATENESS, late)
    except Exception as exc:
        _never_raise("a batch's runs", exc)


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(amount)` for each of `amounts` (a histogram without labels), with one
    increment of the sum and one per bucket reached: a batch moves hundreds of runs, most of
    them in the same bucket, and prometheus-client observes one amount at a time (two locked
    writes each, a file write each in multiprocess mode). Falls back to one `observe` per
    amount should the library's histogram no longer have the parts this relies on."""
    if not amounts:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    # `observe` counts an amount in the first bucket whose bound is >= it (the last is +Inf).
    reached = Tally(bisect_left(bounds, amount) for amount in amounts)
    total.inc(sum(amounts))
    for index, count in reached.items():
        buckets[index].inc(count)


def observe_batch(seconds: float, claimed: int) -> None:
    """A worker's batch that claimed `claimed` runs took `seconds` (idle batches not counted)."""
    if claimed <= 0:
        return
    try:
        BATCH_DURATION.observe(seconds)
        BATCH_SIZE.observe(claimed)
    except Exception as exc:
        _never_raise("a batch", exc)


def observe_delivery(channel: str, outcome: str) -> None:
    """A message of `channel` was delivered, is retried later (`retrying`) or `failed`."""
    try:
        DELIVERIES.labels(channel, outcome).inc()
    except Exception as exc:
        _never_raise("a delivery", exc)


def timed_send(channel: str, send: Callable[[_M], _T], message: _M) -> _T:
    """`send(message)`, its duration observed for `channel` (whether it succeeded or raised)."""
    started = time.perf_counter()
    try:
        return send(message)
    finally:
        try:
            DELIVERY_DURATION.labels(channel).observe(time.perf_counter() - started)
        except Exception as exc:
            _never_raise("a delivery's duration", exc)


def multiprocess_dir() -> str | None:
    """The directory the processes' figures are shared in (None: each process its own)."""
    return _DIRECTORY


def exposition(*extra: Collector) -> bytes:
    """The Prometheus text of this process's figures (or, with a metrics directory, of every
    process's), followed by `extra` collectors' (read at this moment)."""
    try:
        if _DIRECTORY is not None:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=_DIRECTORY)  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
        else:
            body = generate_latest(REGISTRY)
    except Exception as exc:  # a damaged file in the metrics directory: the rest is shown
        log.error("metrics: the processes' figures could not be read: %s", exc, exc_info=True)
        body = b"# the processes' figures could not be read: see the server's log\n"
    if not extra:
        return body
    more = CollectorRegistry(auto_describe=False)
    for collector in extra:
        more.register(collector)
    return body + generate_latest(more)


def metric_names() -> set[str]:
    """The names of the process's metrics as scraped (a counter's with _total, a histogram's
    _bucket, _sum and _count): what the dashboard test compares with."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for metric in _PROCESS_METRICS
        for family in metric.describe()
        for suffix in suffixes.get(family.type, ("",))
    }
