"""How long the server takes to render the web pages of long lists: `/records` of a type with
10,000 records (its first page, a page deep in the list, a search) and `/tasks` with 10,000
open tasks, each against the API's JSON list of the same page in the same run.

    python -m bench.bench_web_pages --rows 10000 --runs 7 --backend both

The requests go through FastAPI's TestClient, in process: what is timed is the server's side
(routing, session, services, SQL, rendering), without a network or a browser. The baseline is
`GET /api/records/contact?limit=50` (`/api/tasks?limit=50` for tasks), the same page as JSON,
so the ratio is what the HTML page costs over the API. The aim is an absolute one (issue 12: a
page of 10,000 records or tasks renders in under 300 ms server time); the ratio is printed to
tell the page's own cost apart from the database's. Runs alternate page and baseline; the
median of `runs` is reported, after one warm-up of each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from bench.bench_query_count import _fill  # 10,000 contacts straight into `records`
from bench.common import fresh_database
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments, flows, users, web_sessions
from crmflow.services.context import Context
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web import create_site

__all__ = ["AIM_MS", "PageTimes", "main", "run"]

AIM_MS = 300.0
PASSWORD = "bench-password-1"
TOKEN = "bench-token-0123456789abcdef0123456789"
TASK_FLOW = """\
schema_version: 1
key: calls
name: Calls
record_type: contact
controller: alice
triggers: [{type: manual}]
steps:
  - key: call
    actions:
      - type: create_task
        title: "Call {{ record.last_name }}"
        assignee: {type: user, user: alice}
        due_days: 3
"""


@dataclass
class PageTimes:
    """Seconds of one page and of its API baseline, one pair per run."""

    name: str
    backend: str
    rows: int
    page: list[float]
    baseline: list[float]
    # CPU seconds of this process (server and client threads) per request of the page: steadier
    # than the wall time on a loaded machine, since waiting for other processes is not counted.
    page_cpu: list[float]

    def line(self) -> str:
        ours = statistics.median(self.page) * 1000
        base = statistics.median(self.baseline) * 1000
        cpu = statistics.median(self.page_cpu) * 1000
        verdict = "ok" if ours <= AIM_MS else "ABOVE AIM"
        return (
            f"{self.name:<26} {self.backend:<8} rows={self.rows:>7,}  "
            f"median page={ours:6.1f} ms (cpu {cpu:5.1f} ms; aim < {AIM_MS:g} ms, {verdict})  "
            f"api json={base:6.1f} ms  ratio={ours / base:5.2f}x  runs={len(self.page)}"
        )


def _tasks(ctx: Context, rows: int) -> None:
    """`rows` open tasks for alice: one real run of a task flow, its task copied onto other
    contacts (the list reads each task's record, flow and step, as for real ones)."""
    alice = users.actor_by_username(ctx, "alice")
    flows.create_flow(ctx, alice, TASK_FLOW)
    flows.change_status(ctx, alice, "calls", LifecycleAction.START)
    with ctx.engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(id) FROM records")).scalar_one()
    enrollments.start_record(ctx, alice, "calls", first)
    with ctx.engine.begin() as conn:
        task = conn.execute(sa.text("SELECT * FROM tasks")).mappings().one()
        ids = conn.execute(
            sa.text("SELECT id FROM records WHERE id <> :first ORDER BY id LIMIT :n"),
            {"first": first, "n": rows - 1},
        ).scalars()
        copies = [{**{k: v for k, v in task.items() if k != "id"}, "record_id": rid} for rid in ids]
        columns = ", ".join(k for k in task if k != "id")
        values = ", ".join(f":{k}" for k in task if k != "id")
        conn.execute(sa.text(f"INSERT INTO tasks ({columns}) VALUES ({values})"), copies)


def _time(
    client: TestClient, page: str, api: str, headers: dict[str, str], runs: int
) -> tuple[list[float], list[float], list[float]]:
    def get(url: str, extra: dict[str, str] | None = None) -> Callable[[], None]:
        def call() -> None:
            answer = client.get(url, headers=extra)
            if answer.status_code != 200:
                raise AssertionError(f"{url} answered {answer.status_code}: {answer.text[:300]}")

        return call

    on_page, on_api = get(page), get(api, headers)
    on_page(), on_api()  # warm-up
    pages: list[float] = []
    apis: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        for fn, out in ((on_page, pages), (on_api, apis)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            out.append(time.perf_counter() - start)
            if out is pages:
                cpu.append(time.process_time() - start_cpu)
    return pages, apis, cpu


def run(backend: str, rows: int, runs: int) -> list[PageTimes]:
    """Fill a fresh `backend` database with `rows` contacts and `rows` open tasks; time each
    page against its API list, `runs` times each."""
    with fresh_database(backend) as ctx:
        system = users.actor_by_username(ctx, "system")
        users.create_user(ctx, system, username="alice", role="admin", password=PASSWORD)
        users.store_known_token(ctx, "alice", TOKEN, "bench")
        _fill(ctx, rows, ctx.now().date() - timedelta(days=180))
        _tasks(ctx, rows)
        with TestClient(create_site(ctx)) as client:
            signed = web_sessions.sign_in(ctx, "alice", PASSWORD)
            client.cookies.set(SESSION_COOKIE, signed.token)
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            with ctx.engine.connect() as conn:
                deep = conn.execute(
                    sa.text("SELECT id FROM records ORDER BY id LIMIT 1 OFFSET :n"),
                    {"n": max(rows - 100, 0)},
                ).scalar_one()
            cases = [
                ("web /records first page", "/records?type=contact", "/api/records/contact"),
                (
                    "web /records deep page",
                    f"/records?type=contact&after={deep}",
                    f"/api/records/contact?after={deep}",
                ),
                (
                    "web /records search",
                    "/records?type=contact&q=ionescu",
                    "/api/records/contact",
                ),
                ("web /tasks first page", "/tasks", "/api/tasks"),
            ]
            out = []
            for name, page, api in cases:
                pages, apis, cpu = _time(client, page, api, bearer, runs)
                out.append(PageTimes(name, backend, rows, pages, apis, cpu))
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        for times in run(backend, args.rows, args.runs):
            print(times.line(), flush=True)


if __name__ == "__main__":
    main()
