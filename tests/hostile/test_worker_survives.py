"""The worker never dies: an exception in its triggers or its batches is caught, logged and
backed off while the loop goes on, and a poisoned saved query (a relative date out of range,
from an old database) marks its flow's trigger failing on a live server whose worker keeps
running every other flow and whose /api/health says so."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from crmflow import worker as worker_module
from crmflow.engine import transition
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.runner import evaluation as evaluation_module
from crmflow.services import flows, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.services.triggers import process_triggers
from crmflow.store.database import create_db_engine
from crmflow.store.schema import flows as flows_table
from crmflow.store.schema import saved_queries, trigger_schedules
from crmflow.worker import Worker
from crmflow.worker import run_once as run_worker_once
from tests.hostile.conftest import MANAGER_TOKEN, LiveServer

POISON = {"all": [{"field": "client_since", "op": "=", "value": "today - 99999999 days"}]}


WELCOME = """\
schema_version: 1
key: welcome
name: welcome
record_type: contact
triggers: [{type: record_created}]
steps:
  - key: hello
    actions: [{type: history, message: hello}]
"""


def _start_welcome(ctx: Context, admin: Actor) -> None:
    """A started flow that every new contact enters, to see the worker move records."""
    flows.create_flow(ctx, admin, WELCOME)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _flaky(real: Callable[..., Any], failures: list[int], message: str) -> Callable[..., Any]:
    """`real`, raising RuntimeError(message) on its first `failures[0]` calls."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError(message)
        return real(*args, **kwargs)

    return call


def test_the_worker_loop_survives_exceptions_in_its_triggers_and_its_batches(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _start_welcome(ctx, admin)
    trigger_failures, batch_failures = [3], [3]
    monkeypatch.setattr(
        worker_module,
        "process_triggers",
        _flaky(process_triggers, trigger_failures, "injected in the triggers"),
    )
    monkeypatch.setattr(
        worker_module,
        "run_batch",
        _flaky(worker_module.run_batch, batch_failures, "injected in the batch"),
    )
    record_id = records.create_record(ctx, admin, "contact", {"last_name": "Survivor"}).id
    worker = Worker(ctx, max_idle=0.05, error_backoff=0.01, name="survivor")
    thread = threading.Thread(target=worker.run, daemon=True)
    caplog.set_level(logging.ERROR, logger="crmflow.worker")
    started = time.monotonic()
    thread.start()
    try:
        # The record enters and finishes once the injected failures are over.
        def finished() -> bool:
            runs = run_views.record_status(ctx, admin, record_id).enrollments
            return [r.status for r in runs] == ["finished"]

        _wait_for(finished)
        assert (trigger_failures, batch_failures) == ([0], [0])
        assert thread.is_alive()
        assert time.monotonic() - started < 10  # the backoff is short, not a stall
        # Each failure is in the log, with the worker and the part that failed.
        logged = [r.getMessage() for r in caplog.records]
        assert sum("survivor: triggers failed: injected in the triggers" in m for m in logged) == 3
        assert sum("survivor: batch failed: injected in the batch" in m for m in logged) == 3
        # And the loop goes on after them (at rest: a look at each wake-up, not a round).
        went = worker.rounds + worker.looks
        _wait_for(lambda: worker.rounds + worker.looks > went + 2)
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_one_record_that_makes_the_engine_raise_fails_alone_and_the_batch_goes_on(
    ctx: Context, admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _start_welcome(ctx, admin)
    real_enter = transition.enter

    def enter(*args: Any, **kwargs: Any) -> Any:
        if kwargs["record"].values.get("last_name") == "Poison":
            raise RuntimeError("a bug met by this record only")
        return real_enter(*args, **kwargs)

    monkeypatch.setattr(evaluation_module, "enter", enter)
    ids = {
        name: records.create_record(ctx, admin, "contact", {"last_name": name}).id
        for name in ("Before", "Poison", "After")
    }
    run_worker_once(ctx)  # does not raise
    status = {
        name: [(r.flow, r.status, r.end_reason) for r in _runs(ctx, admin, rid)]
        for name, rid in ids.items()
    }
    assert status["Before"] == [("welcome", "finished", status["Before"][0][2])]
    assert status["After"] == [("welcome", "finished", status["After"][0][2])]
    [(flow, state, reason)] = status["Poison"]
    assert (flow, state) == ("welcome", "cancelled")
    assert "RuntimeError: a bug met by this record only" in reason


def _runs(ctx: Context, admin: Actor, record_id: int) -> list[Any]:
    return list(run_views.record_status(ctx, admin, record_id).enrollments)


# -- the poisoned saved query on a live server -----------------------------------------------------


def _get(server: LiveServer, path: str, token: str | None = None) -> httpx.Response:
    headers = server.headers(token) if token else server.headers()
    return httpx.get(f"{server.base}{path}", headers=headers, timeout=5)


def test_a_poisoned_query_on_a_live_server_fails_its_trigger_and_the_rest_runs(
    live_server: LiveServer,
) -> None:
    # A manager can no longer save the poison.
    started = time.monotonic()
    response = httpx.patch(
        f"{live_server.base}/api/queries/six-month-clients",
        json={"filter": POISON},
        headers=live_server.headers(MANAGER_TOKEN),
        timeout=5,
    )
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["problems"][0]["message"]
    assert time.monotonic() - started < 3

    # An old database may hold it: force it in, and make the daily schedule due now.
    engine = create_db_engine(live_server.env["CRMFLOW_DATABASE_URL"])
    original: Any = None
    try:
        with engine.begin() as conn:
            original = conn.execute(
                sa.select(saved_queries.c.filter).where(saved_queries.c.name == "six-month-clients")
            ).scalar_one()
            conn.execute(
                saved_queries.update()
                .where(saved_queries.c.name == "six-month-clients")
                .values(filter=POISON)
            )
        flow_id = _flow_id(engine, "six-month-promotion")
        _wait_for(lambda: _has_schedule(engine, flow_id))
        with engine.begin() as conn:
            conn.execute(
                trigger_schedules.update()
                .where(trigger_schedules.c.flow_id == flow_id)
                .values(next_at=datetime.now(UTC) - timedelta(minutes=1))
            )

        def failing() -> list[dict[str, Any]]:
            failures = _get(live_server, "/api/flows/six-month-promotion/trigger-failures")
            return list(failures.json())

        _wait_for(lambda: bool(failing()))
        [failure] = failing()
        assert failure["trigger_type"] == "schedule"
        assert "six-month-clients" in failure["last_error"]
        assert "out of range" in failure["last_error"]
        assert datetime.fromisoformat(failure["retry_at"]) > datetime.now(UTC)

        # Counting the poisoned query is a clear 422, not a 500.
        response = _get(live_server, "/api/queries/six-month-clients/count")
        assert response.status_code == 422, response.text

        # The worker goes on: a new event enters the other running flow.
        created = httpx.post(
            f"{live_server.base}/api/records/event",
            json={"data": {"title": "Gala", "start": "2031-06-01T18:00:00+00:00"}},
            headers=live_server.headers(),
            timeout=5,
        )
        assert created.status_code == 201, created.text
        event_id = created.json()["id"]

        def entered() -> bool:
            runs = _get(live_server, f"/api/records/event/{event_id}/runs").json()
            return any(r["flow"] == "event-automations" for r in runs["flows"])

        _wait_for(entered)
        health = _get(live_server, "/api/health")
        assert health.status_code == 200, health.text
        assert health.json()["workers"]["status"] == "ok"
        assert live_server.alive()
    finally:
        if original is not None:
            with engine.begin() as conn:
                conn.execute(
                    saved_queries.update()
                    .where(saved_queries.c.name == "six-month-clients")
                    .values(filter=original)
                )
        engine.dispose()


def _flow_id(engine: sa.Engine, key: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(flows_table.c.id).where(flows_table.c.key == key)).scalar_one()
        )


def _has_schedule(engine: sa.Engine, flow_id: int) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(trigger_schedules.c.flow_id).where(trigger_schedules.c.flow_id == flow_id)
        ).first()
    return found is not None
