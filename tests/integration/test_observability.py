"""Watching crmflow (issue 14): /metrics after a flow ran (counters, histograms and the gauges
read from the database), who may read it, and the log lines of a run as JSON with its keys."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from crmflow import logs
from crmflow.api.app import create_app
from crmflow.delivery.dispatcher import Dispatcher
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.health import LoopMonitor
from crmflow.settings import Settings
from crmflow.store import heartbeats
from crmflow.store.database import create_db_engine
from crmflow.worker import Worker, run_once
from tests.conftest import FrozenClock

TOKEN = "metrics-token-0123456789"

WATCHED = """\
schema_version: 1
key: watched
name: Watched
record_type: contact
owner: system
triggers: [{type: manual}]
steps:
  - key: greet
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
  - key: later
    timing: {type: after, amount: 1, unit: hours}
    actions:
      - type: add_to_group
        group: no-such-list
  - key: done
    type: end
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: TestClient, **headers: str) -> Samples:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    ctx.settings = ctx.settings.model_copy(update={"metrics_token": TOKEN})
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def _start(ctx: Context, admin: Actor, names: list[str]) -> list[int]:
    flows.create_flow(ctx, admin, WATCHED)
    flows.change_status(ctx, admin, "watched", LifecycleAction.START)
    ids = []
    for name in names:
        view = records.create_record(
            ctx,
            admin,
            "contact",
            {"first_name": name, "last_name": "Martin", "email": f"{name}@example.org"},
        )
        ids.append(runs.start_record(ctx, admin, "watched", view.id).id)
    return ids


def test_metrics_count_what_a_flow_did_and_read_the_backlog_from_the_database(
    ctx: Context, admin: Actor, clock: FrozenClock, client: TestClient
) -> None:
    before = _scrape(client)
    _start(ctx, admin, ["Claire", "Ana"])
    clock.advance(hours=1, seconds=30)

    # Due, not moved yet: the backlog and its age are read from the database at the scrape.
    due = _scrape(client)
    assert _value(due, "crmflow_database_up") == 1
    assert _value(due, "crmflow_due_backlog") == 2
    assert _value(due, "crmflow_due_oldest_age_seconds") == 30
    assert _value(due, "crmflow_outbox_messages", channel="email", state="pending") == 2
    assert _value(due, "crmflow_feed_lag_changes") >= 2  # the two records created
    delta = _value(due, "crmflow_runs_entered_total", flow="watched") - _value(
        before, "crmflow_runs_entered_total", flow="watched"
    )
    assert delta == 2
    greeted = ("crmflow_step_runs_total", {"flow": "watched", "step": "greet", "outcome": "done"})
    assert _value(due, greeted[0], **greeted[1]) - _value(before, greeted[0], **greeted[1]) == 2

    assert run_once(ctx) == 2
    after = _scrape(client)
    assert _value(after, "crmflow_due_backlog") == 0
    assert _value(after, "crmflow_due_oldest_age_seconds") == 0
    assert _value(after, "crmflow_feed_lag_changes") == 0  # run_once read the feed

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("crmflow_step_runs_total", flow="watched", step="later", outcome="failed") == 2
    assert grew("crmflow_runs_ended_total", flow="watched", status="finished") == 2
    # Both timers ran 30 s late: counted in the 30 s bucket, not in the 10 s one.
    assert grew("crmflow_timer_lateness_seconds_count") == 2
    assert grew("crmflow_timer_lateness_seconds_bucket", le="30.0") == 2
    assert grew("crmflow_timer_lateness_seconds_bucket", le="10.0") == 0
    assert _value(after, "crmflow_step_runs_failed_last_hour") == 2
    assert grew("crmflow_batch_size_count") == 1  # run_once's one batch of two
    assert grew("crmflow_batch_size_sum") == 2

    # The dispatcher sends the two emails (to the mail catcher): counted, and timed.
    Dispatcher(ctx).run_once()
    sent = _scrape(client)
    pending = ("crmflow_outbox_messages", (("channel", "email"), ("state", "pending")))
    assert sent[pending] == 0  # there, at 0: a gauge that disappeared would leave a gap
    for metric, labelled in (
        ("crmflow_deliveries_total", {"channel": "email", "outcome": "delivered"}),
        ("crmflow_delivery_duration_seconds_count", {"channel": "email"}),
    ):
        assert _value(sent, metric, **labelled) - _value(before, metric, **labelled) == 2
    # No record id, run id or message id is a label.
    for name, labels in after:
        assert {k for k, _ in labels} <= {
            "flow",
            "step",
            "outcome",
            "status",
            "le",
            "channel",
            "state",
            "kind",
            "version",
            "implementation",
            "generation",
            "major",
            "minor",
            "patchlevel",
        }, name


def test_metrics_say_which_workers_and_dispatchers_are_alive(
    ctx: Context, clock: FrozenClock, client: TestClient
) -> None:
    heartbeats.started(ctx.engine, name="w1", kind="worker", now=clock.current)
    heartbeats.beat(
        ctx.engine, name="w1", kind="worker", now=clock.current, success_at=clock.current
    )
    heartbeats.started(ctx.engine, name="d1", kind="dispatcher", now=clock.current)
    clock.advance(seconds=20)
    samples = _scrape(client)
    assert _value(samples, "crmflow_loops", kind="worker", state="alive") == 1
    assert _value(samples, "crmflow_loops_seen_last_minute", kind="worker") == 1
    assert _value(samples, "crmflow_loop_last_beat_age_seconds", kind="worker") == 20
    clock.advance(minutes=2)
    later = _scrape(client)
    assert _value(later, "crmflow_loops", kind="worker", state="stuck") == 1
    assert _value(later, "crmflow_loops_seen_last_minute", kind="worker") == 0
    assert _value(later, "crmflow_loops_seen_last_minute", kind="dispatcher") == 0


def test_metrics_need_the_token_or_a_call_from_this_machine(ctx: Context) -> None:
    with TestClient(create_app(ctx)) as anywhere:
        refused = anywhere.get("/metrics")
    assert refused.status_code == 403
    assert "CRMFLOW_METRICS_TOKEN" in refused.json()["message"]
    with TestClient(create_app(ctx), client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 200
    ctx.settings = ctx.settings.model_copy(update={"metrics_token": TOKEN})
    with TestClient(create_app(ctx), client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 401  # a token is set: local calls give it
        wrong = local.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "not it" in wrong.json()["message"]
        assert local.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).is_success


def test_a_database_that_does_not_answer_is_a_gauge_not_an_error(
    ctx: Context, client: TestClient
) -> None:
    ctx.engine.dispose()
    broken = ctx.engine.url.set(database="/nonexistent/dir/x.db")
    if ctx.engine.dialect.name == "postgresql":
        broken = ctx.engine.url.set(port=1)
    good = ctx.engine
    ctx.engine = create_db_engine(broken.render_as_string(hide_password=False))
    try:
        samples = _scrape(client)
    finally:
        ctx.engine.dispose()
        ctx.engine = good
    assert _value(samples, "crmflow_database_up") == 0
    assert ("crmflow_due_backlog", ()) not in samples


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure(level="DEBUG", fmt="json")
    root = logging.getLogger()
    [handler] = [h for h in root.handlers if h.get_name() == "crmflow-structlog"]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def test_a_failed_step_is_logged_as_json_with_its_run_and_reason(
    ctx: Context, admin: Actor, clock: FrozenClock, json_logs: io.StringIO
) -> None:
    [eid] = _start(ctx, admin, ["Claire"])
    clock.advance(hours=2)
    run_once(ctx)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    [failed] = [line for line in lines if line.get("logger") == "crmflow.runs"]
    assert failed["level"] == "warning"
    assert (failed["flow"], failed["version"], failed["enrollment"], failed["step"]) == (
        "watched",
        1,
        eid,
        "later",
    )
    assert isinstance(failed["record"], int)
    assert "no list (record group) named 'no-such-list'" in failed["reason"]
    assert failed["timestamp"].endswith("Z")


def test_the_worker_logs_each_batch_at_debug(
    ctx: Context, admin: Actor, clock: FrozenClock, json_logs: io.StringIO
) -> None:
    _start(ctx, admin, ["Claire", "Ana"])
    clock.advance(hours=2)
    worker = Worker(ctx, name="w-test")
    worker._round(LoopMonitor(ctx, name="w-test", kind="worker"))  # one round, as run() does
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    [batch] = [line for line in lines if line.get("event", "").startswith("batch")]
    assert batch["level"] == "debug"
    assert (batch["claimed"], batch["moved"], batch["worker"]) == (2, 2, "w-test")
    assert batch["seconds"] >= 0


def test_bad_log_settings_are_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match="DEBUG, INFO, WARNING, ERROR or CRITICAL"):
        Settings(log_level="loud")
    with pytest.raises(ValidationError, match="json or console"):
        Settings(log_format="xml")
    assert Settings(log_level="debug", log_format="JSON").log_format == "json"
