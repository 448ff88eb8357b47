"""A running crmflow keeps answering reads while something holds the database's write lock (as
a long worker batch does) or while a runaway flow keeps its worker busy, and SIGTERM ends
`crmflow serve` in a bounded time even while a request waits for that lock (SQLite and
PostgreSQL).

The SIGTERM test stops the module's live server: it must stay the last test using it.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.cli.shutdown import HARD_STOP_SECONDS
from crmflow.services.context import Context
from crmflow.services.demo import load_demo
from crmflow.store.database import create_db_engine
from tests.hostile.conftest import LiveServer

# What a process needs, past the hard stop, to be gone (the interpreter's own exit).
EXIT_MARGIN_SECONDS = 2.0


def _first_contact(server: LiveServer) -> dict[str, Any]:
    answer = httpx.get(
        f"{server.base}/api/records/contact", params={"limit": 1}, headers=server.headers()
    )
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()["items"][0]
    return record


@contextmanager
def _write_lock_held(server: LiveServer, record_id: int) -> Iterator[None]:
    """Another process's write transaction, left open: on SQLite `BEGIN IMMEDIATE` on the
    server's database file (the one write lock, as a worker's batch holds it); on PostgreSQL
    an uncommitted update of the record (its row lock)."""
    url = server.env["CRMFLOW_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("UPDATE records SET updated_at = updated_at WHERE id = ?", (record_id,))
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            conn.execute(
                sa.text("UPDATE records SET updated_at = updated_at WHERE id = :id"),
                {"id": record_id},
            )
            yield
            transaction.rollback()
    finally:
        engine.dispose()


def _timed_get(server: LiveServer, path: str) -> tuple[int, float]:
    started = time.monotonic()
    answer = httpx.get(f"{server.base}{path}", headers=server.headers(), timeout=40)
    return answer.status_code, time.monotonic() - started


def _path_values(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    """A value for each path parameter of the API's GET routes, from the demo data."""
    record = client.get("/api/records/contact", params={"limit": 1}, headers=headers)
    flow = client.get("/api/flows", headers=headers)
    query = client.get("/api/queries", headers=headers)
    assert record.status_code == flow.status_code == query.status_code == 200
    flows = flow.json()
    first_flow = flows[0] if isinstance(flows, list) else flows["items"][0]
    return {
        "type_key": "contact",
        "record_id": str(record.json()["items"][0]["id"]),
        "flow_key": first_flow["key"],
        "key": first_flow["key"],
        "name": query.json()["items"][0]["name"],
        "username": "alice",
        "mail_id": "1",  # the mail catcher's (none in the demo data: a 404, timed all the same)
        "external_id": "crm-1",  # none in the demo data: a 404, timed all the same
        "task_id": "1",  # the demo's first task, or a 404, timed all the same
        "job_id": "1",  # no job in the demo data: a 404, timed all the same
        "version": "1",
        "field": "contract",  # no file field in the demo data: a 404, timed all the same
    }


@contextmanager
def _lock_held_in_process(ctx: Context) -> Iterator[None]:
    """Another connection's open write transaction, as a worker's batch holds it."""
    with ctx.engine.connect() as writer:
        writer.begin()
        writer.execute(sa.text("UPDATE records SET updated_at = updated_at"))
        try:
            yield
        finally:
            writer.rollback()


def test_every_get_route_answers_within_a_second_while_a_writer_holds_the_lock(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    load_demo(ctx)
    headers = as_admin
    values = _path_values(client, headers)
    # Under /api/record-types and /api/record-groups, {key} and {name} name those.
    own_values = {"/api/record-types/": {"key": "contact"}}
    routes = [
        path
        for path, operations in client.get("/openapi.json").json()["paths"].items()
        if "get" in operations
    ]
    urls: list[str] = []
    for path in routes:
        given = {**values, **next((v for p, v in own_values.items() if path.startswith(p)), {})}
        missing = set(re.findall(r"{(\w+)}", path)) - set(given)
        assert not missing, f"no test value for {missing} of GET {path}: add one above"
        urls.append(path.format(**given))
    took: dict[str, tuple[int, float]] = {}

    def read_all() -> None:
        for url in urls:
            started = time.monotonic()
            status = client.get(url, headers=headers).status_code
            took[url] = (status, time.monotonic() - started)

    with _lock_held_in_process(ctx):
        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        reader.join(timeout=20)
        waiting = [url for url in urls if url not in took]
    assert not waiting, f"GET routes still waiting for the writer after 20 s: {waiting[:3]}"
    failed = {url: status for url, (status, _) in took.items() if status >= 500}
    assert not failed, f"GET routes that failed while a writer held the lock: {failed}"
    slow = {url: round(seconds, 2) for url, (_, seconds) in took.items() if seconds >= 1.0}
    assert not slow, f"GET routes that waited for the writer (seconds): {slow}"
    assert len(took) >= 25, sorted(took)


def test_health_and_a_record_answer_within_a_second_while_the_write_lock_is_held(
    live_server: LiveServer,
) -> None:
    record = _first_contact(live_server)
    paths = ["/api/health", f"/api/records/contact/{record['id']}", "/api/flows"]
    with _write_lock_held(live_server, record["id"]):
        held_since = time.monotonic()
        answers: list[tuple[str, int, float]] = []
        # Several rounds over a few seconds: a reader that waited for the lock would show.
        while time.monotonic() - held_since < 3:
            answers += [(path, *_timed_get(live_server, path)) for path in paths]
            time.sleep(0.2)
    failed = [(path, status) for path, status, _ in answers if status != 200]
    assert not failed, f"reads refused while the lock was held: {failed}"
    slow = [(path, round(took, 2)) for path, _, took in answers if took >= 1.0]
    assert not slow, f"reads that waited for the write lock (seconds): {slow}"
    assert live_server.alive()


# Each record's history message runs until the evaluation's wall-clock budget stops it (each
# call of the macro doubles the work): a runaway that costs the worker about a second a record.
RUNAWAY = """\
schema_version: 1
key: KEY
name: Runaway
record_type: contact
triggers: [{type: start_list, query: QUERY}]
steps:
  - key: grow
    actions:
      - type: history
        message: >-
          {% macro grow(n) %}{% if n %}{{ grow(n - 1) }}{{ grow(n - 1) }}{% endif %}{% endmacro %}
          {{ grow(60) }}
"""


def _started_runaway(server: LiveServer) -> tuple[str, int]:
    """A runaway flow started for every contact; its key and how many records entered."""
    suffix = uuid.uuid4().hex[:8]
    query, key = f"everyone-{suffix}", f"runaway-{suffix}"
    admin = server.headers()
    saved = httpx.post(
        f"{server.base}/api/queries",
        json={
            "name": query,
            "record_type": "contact",
            "filter": {"field": "last_name", "op": "is not empty"},
        },
        headers=admin,
    )
    assert saved.status_code == 201, saved.text
    document = RUNAWAY.replace("KEY", key).replace("QUERY", query)
    created = httpx.post(
        f"{server.base}/api/flows",
        content=document,
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert created.status_code == 201, created.text
    count = httpx.get(f"{server.base}/api/flows/{key}/start-list", headers=admin)
    assert count.status_code == 200, count.text
    records = int(count.json()["count"])
    started = httpx.post(
        f"{server.base}/api/flows/{key}/start",
        params={"confirm_count": records},
        headers=admin,
        timeout=30,
    )
    assert started.status_code == 200, started.text
    return key, records


def _entered(server: LiveServer, key: str) -> int:
    answer = httpx.get(f"{server.base}/api/flows/{key}/progress", headers=server.headers())
    assert answer.status_code == 200, answer.text
    progress: dict[str, Any] = answer.json()
    return int(progress["finished"]) + int(progress["left"]) + int(progress["cancelled"])


def test_health_and_a_record_answer_within_a_second_while_a_runaway_flow_runs(
    live_server: LiveServer,
) -> None:
    record = _first_contact(live_server)
    key, records = _started_runaway(live_server)
    assert records >= 5, f"the demo has {records} contacts: too few to keep the worker busy"
    paths = ["/api/health", f"/api/records/contact/{record['id']}"]
    answers: list[tuple[str, int, float]] = []
    watched_since = time.monotonic()
    while time.monotonic() - watched_since < 4:
        answers += [(path, *_timed_get(live_server, path)) for path in paths]
        time.sleep(0.1)
    busy_after = _entered(live_server, key)

    failed = [(path, status) for path, status, _ in answers if status != 200]
    assert not failed, f"reads refused while a runaway flow ran: {failed}"
    slow = [(path, round(took, 2)) for path, _, took in answers if took >= 1.0]
    assert not slow, f"reads that waited while a runaway flow ran (seconds): {slow}"
    # The reads above did run while the runaway did: it had not got through every record.
    assert busy_after < records, f"the runaway flow was over after 4 s ({busy_after} done)"
    archived = httpx.post(
        f"{live_server.base}/api/flows/{key}/drain", headers=live_server.headers()
    )
    assert archived.status_code == 200, archived.text


def test_sigterm_ends_serve_in_bounded_time_while_a_request_waits_for_the_lock(
    live_server: LiveServer,
) -> None:
    record = _first_contact(live_server)
    finished: list[int | str] = []

    def blocked_update() -> None:
        try:
            answer = httpx.patch(
                f"{live_server.base}/api/records/contact/{record['id']}",
                json={"data": {"first_name": "Never written"}},
                headers=live_server.headers(),
                timeout=60,
            )
            finished.append(answer.status_code)
        except httpx.TransportError as exc:  # the server went away under it: expected
            finished.append(type(exc).__name__)

    with _write_lock_held(live_server, record["id"]):
        request = threading.Thread(target=blocked_update, daemon=True)
        request.start()
        request.join(timeout=1.0)
        assert not finished, f"the update did not wait for the lock: {finished}"

        live_server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while live_server.alive() and time.monotonic() - signalled < 30:
            time.sleep(0.05)
        took = time.monotonic() - signalled

    assert not live_server.alive(), "crmflow serve still runs 30 s after SIGTERM"
    bound = HARD_STOP_SECONDS + EXIT_MARGIN_SECONDS
    assert took < bound, f"crmflow serve took {took:.1f} s to stop after SIGTERM (bound {bound})"
    log = live_server.log.read_text()
    # It says why it did not stop cleanly: a request was still waiting.
    assert "after the stop signal" in log and "exiting now" in log, log[-2000:]
    request.join(timeout=5)
    assert finished and finished[0] != 200, f"the waiting update was applied: {finished}"
