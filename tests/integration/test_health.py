"""A saved query whose relative date is out of range is refused when saved and again when run,
a scheduled flow using one (from an old database) is marked failing while every other flow goes
on, and /api/health tells whether the worker is alive: on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, queries, records, run_views
from crmflow.services.context import Actor, Context
from crmflow.services.health import STALE_AFTER, LoopMonitor
from crmflow.store import heartbeats
from crmflow.store.schema import saved_queries, trigger_failures, worker_heartbeats
from crmflow.worker import Worker, run_once
from tests.acceptance.conftest import auth_headers
from tests.conftest import FrozenClock

POISON = {"all": [{"field": "client_since", "op": "=", "value": "today - 99999999 days"}]}
CLIENTS = {"all": [{"field": "status", "op": "=", "value": "client"}]}


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as test_client:
        yield test_client


def _problems(response: Any) -> list[dict[str, Any]]:
    return list(response.json()["problems"])


def _daily_flow(ctx: Context, admin: Actor, key: str, query: str) -> None:
    text = f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
triggers:
  - {{type: schedule, time: '09:00', query: {query}}}
steps:
  - key: hello
    actions:
      - type: history
        message: "{key} says hello"
"""
    flows.create_flow(ctx, admin, text)
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _entered(ctx: Context, admin: Actor, key: str) -> int:
    return run_views.flow_progress(ctx, admin, key).entered


def _failures(ctx: Context) -> list[sa.Row[Any]]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(trigger_failures)).all())


# -- relative dates out of range -----------------------------------------------------------------


def test_a_relative_date_out_of_range_is_refused_when_the_query_is_saved(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    headers = auth_headers(ctx, admin, admin.username)
    body = {"name": "poison", "record_type": "contact", "filter": POISON}
    response = client.post("/api/queries", json=body, headers=headers)
    assert response.status_code == 422, response.text
    [problem] = _problems(response)
    assert problem["path"] == "filter.all[0].value"
    assert "99999999 days is out of range" in problem["message"]
    assert "year 9999" in problem["message"] and "use a smaller offset" in problem["message"]
    # Within each unit's bound but out of range from today: refused as well, at save.
    late = {"all": [{"field": "client_since", "op": "<", "value": "today - 3000 years"}]}
    response = client.post("/api/queries", json={**body, "filter": late}, headers=headers)
    assert response.status_code == 422, response.text
    [problem] = _problems(response)
    assert problem["path"] == "filter.all[0].value"
    assert "falls outside the years 1 to 9999" in problem["message"]
    # And an hour count that does not fit a timedelta at all.
    hours = {"all": [{"field": "created_at", "op": ">", "value": f"now + {10**12} hours"}]}
    response = client.post(
        "/api/queries/count", json={"record_type": "contact", "filter": hours}, headers=headers
    )
    assert response.status_code == 422, response.text
    assert "out of range" in _problems(response)[0]["message"]


def test_a_manager_cannot_patch_a_query_to_a_date_out_of_range(
    ctx: Context, admin: Actor, manager: Actor, client: TestClient
) -> None:
    queries.save_query(ctx, admin, name="clients", record_type="contact", filter=CLIENTS)
    headers = auth_headers(ctx, admin, manager.username)
    response = client.patch("/api/queries/clients", json={"filter": POISON}, headers=headers)
    assert response.status_code == 422, response.text
    assert "'clients'" in response.json()["message"]
    assert _problems(response)[0]["path"] == "filter.all[0].value"
    # Nothing was saved: the query still counts as before.
    assert client.get("/api/queries/clients/count", headers=headers).status_code == 200


def test_a_poisoned_query_from_an_old_database_is_a_422_when_counted(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    queries.save_query(ctx, admin, name="clients", record_type="contact", filter=CLIENTS)
    _force_filter(ctx, "clients", POISON)
    headers = auth_headers(ctx, admin, admin.username)
    for path in ("/api/queries/clients/count", "/api/queries/clients/records"):
        response = client.get(path, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert "the saved query 'clients'" in response.json()["message"]
        assert "PATCH /api/queries" in response.json()["message"]
        assert "out of range" in _problems(response)[0]["message"]


def _force_filter(ctx: Context, name: str, filter: dict[str, Any]) -> None:
    """What an old database may hold: a filter saved before it would have been refused."""
    with ctx.engine.begin() as conn:
        conn.execute(
            saved_queries.update().where(saved_queries.c.name == name).values(filter=filter)
        )


# -- a failing trigger -----------------------------------------------------------------------------


def test_a_poisoned_schedule_is_marked_failing_and_every_other_flow_goes_on(
    ctx: Context, admin: Actor, clock: FrozenClock, client: TestClient
) -> None:
    clock.current = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    records.create_record(ctx, admin, "contact", {"last_name": "A", "status": "client"})
    queries.save_query(ctx, admin, name="doomed", record_type="contact", filter=CLIENTS)
    queries.save_query(ctx, admin, name="clients", record_type="contact", filter=CLIENTS)
    _daily_flow(ctx, admin, "poisoned", "doomed")
    _daily_flow(ctx, admin, "healthy", "clients")
    _force_filter(ctx, "doomed", POISON)

    clock.advance(hours=2)  # past 09:00 in any European zone: both schedules are due
    run_once(ctx)
    assert _entered(ctx, admin, "healthy") == 1
    assert _entered(ctx, admin, "poisoned") == 0
    [failure] = _failures(ctx)
    assert (failure.trigger_index, failure.trigger_type, failure.failures) == (0, "schedule", 1)
    assert "'doomed'" in failure.last_error and "out of range" in failure.last_error
    assert failure.retry_at == clock.current + timedelta(seconds=5)

    # The flow's trigger failures say which trigger fails, why, and when it is tried again.
    headers = auth_headers(ctx, admin, admin.username)
    [shown] = client.get("/api/flows/poisoned/trigger-failures", headers=headers).json()
    assert shown["trigger_type"] == "schedule" and "out of range" in shown["last_error"]
    assert shown["failures"] == 1 and shown["retry_at"] == failure.retry_at.isoformat()
    assert client.get("/api/flows/healthy/trigger-failures", headers=headers).json() == []
    notes = [c["note"] for c in client.get("/api/flows/poisoned/history", headers=headers).json()]
    assert any("trigger 0 (schedule) failed" in n for n in notes)

    # Not retried before its time; retried then, with the wait doubled.
    run_once(ctx)
    assert _failures(ctx)[0].failures == 1
    clock.advance(seconds=6)
    run_once(ctx)
    [failure] = _failures(ctx)
    assert failure.failures == 2
    assert failure.retry_at == clock.current + timedelta(seconds=10)

    # Fixed: the next retry runs the missed schedule and the failure is cleared.
    queries.update_query(ctx, admin, "doomed", filter=CLIENTS)
    clock.advance(seconds=11)
    run_once(ctx)
    assert _entered(ctx, admin, "poisoned") == 1
    assert _failures(ctx) == []
    assert client.get("/api/flows/poisoned/trigger-failures", headers=headers).json() == []
    notes = [c["note"] for c in client.get("/api/flows/poisoned/history", headers=headers).json()]
    assert "trigger 0 (schedule) runs again" in notes


def test_a_worker_with_a_poisoned_schedule_keeps_moving_the_other_flows(
    ctx: Context, admin: Actor, clock: FrozenClock
) -> None:
    """What a restarted server with the poisoned query does: its worker keeps running."""
    clock.current = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    queries.save_query(ctx, admin, name="doomed", record_type="contact", filter=CLIENTS)
    queries.save_query(ctx, admin, name="clients", record_type="contact", filter=CLIENTS)
    _daily_flow(ctx, admin, "poisoned", "doomed")
    _daily_flow(ctx, admin, "healthy", "clients")
    _force_filter(ctx, "doomed", POISON)
    records.create_record(ctx, admin, "contact", {"last_name": "A", "status": "client"})
    clock.advance(hours=2)
    worker = Worker(ctx, max_idle=0.05, name="poison-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: _entered(ctx, admin, "healthy") == 1 and len(_failures(ctx)) == 1)
        # And it goes on looping: rounds, or at rest (the failing trigger waits for its
        # retry) looks, one statement each.
        went = worker.rounds + worker.looks
        _wait_for(lambda: worker.rounds + worker.looks > went + 3)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert _entered(ctx, admin, "poisoned") == 0
    with ctx.engine.connect() as conn:
        beat = conn.execute(
            sa.select(worker_heartbeats).where(worker_heartbeats.c.name == "poison-test")
        ).one()
    assert beat.stopped_at is not None and beat.last_success_at is not None


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- /api/health ---------------------------------------------------------------------------------


def test_health_without_any_worker_says_so_and_is_not_a_failure(
    ctx: Context, client: TestClient
) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["database"] == ctx.engine.dialect.name
    assert body["workers"]["status"] == "none"
    assert "crmflow worker" in body["workers"]["note"]


def test_health_is_200_with_a_live_worker_and_503_when_it_goes_stale(
    ctx: Context, clock: FrozenClock, client: TestClient
) -> None:
    worker = Worker(ctx, max_idle=0.05, name="health-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: worker.rounds > 0)
        response = client.get("/api/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["workers"]["status"] == "ok"
        [loop] = body["loops"]
        assert (loop["name"], loop["state"], loop["in_this_process"]) == (
            "health-test",
            "alive",
            True,
        )
    finally:
        worker.stop()
        thread.join(timeout=10)
    # A stopped worker is not a failure.
    assert client.get("/api/health").status_code == 200

    # Another process's worker that stopped beating a while ago: stuck, and nobody else works.
    heartbeats.started(ctx.engine, name="elsewhere", kind="worker", now=clock.current)
    heartbeats.beat(
        ctx.engine, name="elsewhere", kind="worker", now=clock.current, success_at=clock.current
    )
    assert client.get("/api/health").status_code == 200
    clock.advance(seconds=STALE_AFTER.total_seconds() + 5)
    response = client.get("/api/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "failing"
    assert body["workers"]["status"] == "failing"
    assert any("no worker is alive" in r for r in body["reasons"])
    [stuck] = [loop for loop in body["loops"] if loop["name"] == "elsewhere"]
    assert stuck["state"] == "stuck" and "no heartbeat for 65 s" in stuck["reason"]
    assert stuck["in_this_process"] is False


def test_health_is_503_when_the_worker_of_this_process_completes_no_round(
    ctx: Context, clock: FrozenClock, client: TestClient
) -> None:
    """A worker that beats but whose rounds fail (a database refusing its writes, a batch that
    raises every time) is stuck once it went a while without a round that completed."""
    monitor = LoopMonitor(ctx, name="failing-rounds", kind="worker", beat_every=0)
    monitor.started()
    monitor.round_done()
    assert client.get("/api/health").status_code == 200
    clock.advance(seconds=STALE_AFTER.total_seconds() + 5)
    monitor.round_done(["batch: RuntimeError: boom"])
    response = client.get("/api/health")
    assert response.status_code == 503, response.text
    [reason] = response.json()["reasons"]
    assert "this process's worker failing-rounds is stuck" in reason
    assert "no round completed for 65 s" in reason and "batch: RuntimeError: boom" in reason
    monitor.round_done()  # a round completes again: healthy again
    assert client.get("/api/health").status_code == 200


def test_health_is_503_when_the_worker_of_this_process_died(
    ctx: Context, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt  # what no round catches: the thread ends

    monkeypatch.setattr("crmflow.worker.Worker._round", dies)
    worker = Worker(ctx, name="doomed-worker")
    thread = threading.Thread(target=_swallow(worker.run), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    response = client.get("/api/health")
    assert response.status_code == 503, response.text
    reasons = response.json()["reasons"]
    assert any("doomed-worker is dead" in r and "KeyboardInterrupt" in r for r in reasons)


def _swallow(run: Any) -> Any:
    def quietly() -> None:
        with contextlib.suppress(BaseException):
            run()

    return quietly
