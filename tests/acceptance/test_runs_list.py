"""The list of a flow's running processes, as a user reads it: `crmflow runs list FLOW` and
`GET /api/flows/{key}/runs`, filtered by status and step, paged, a loop-guard cancellation
showing with its reason, and a private flow hidden from those outside it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import ConflictError
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.services.users import actor_by_username
from crmflow.settings import Settings
from tests.acceptance.conftest import Run
from tests.conftest import FrozenClock, make_user

FLOW = """\
schema_version: 1
key: {key}
name: {key}
record_type: contact
reentry: {{mode: always}}
{extra}triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{{{ record.first_name }}}}"
        body: "Hi"
  - key: ask
    type: approval
    responsibility: {{type: user, user: system}}
    buttons:
      - {{key: ok, label: OK}}
"""
LOOP_GUARD = "loop guard: flow 'welcome' was started more than 10 times for record"


def _flow(ctx: Context, admin: Actor, key: str, extra: str = "") -> None:
    flows.create_flow(ctx, admin, FLOW.format(key=key, extra=extra))
    flows.change_status(ctx, admin, key, LifecycleAction.START)


def _contact(ctx: Context, admin: Actor, first: str, last: str) -> int:
    data = {"first_name": first, "last_name": last, "email": f"{first.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", data).id


def _people_in_flows(ctx: Context, admin: Actor) -> dict[str, int]:
    """Ana finished, Bob waits at `ask`, Claire tripped the loop guard (11 starts, cancelled);
    a private flow holds Dan."""
    _flow(ctx, admin, "welcome")
    ana, bob, claire = (
        _contact(ctx, admin, "Ana", "Pop"),
        _contact(ctx, admin, "Bob", "Ionescu"),
        _contact(ctx, admin, "Claire", "Martin"),
    )
    done = runs.start_record(ctx, admin, "welcome", ana)
    runs.decide(ctx, admin, done.id, "ask", "ok")
    runs.start_record(ctx, admin, "welcome", bob)
    for _ in range(10):
        runs.start_record(ctx, admin, "welcome", claire)
    with pytest.raises(ConflictError, match="loop guard"):
        runs.start_record(ctx, admin, "welcome", claire)
    _flow(ctx, admin, "secret", extra="visibility: private\nmembers: [system]\n")
    dan = _contact(ctx, admin, "Dan", "Secret")
    runs.start_record(ctx, admin, "secret", dan)
    return {"ana": ana, "bob": bob, "claire": claire, "dan": dan}


# -- the command line ---------------------------------------------------------------------------


def _table(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines()]


def test_runs_list_shows_where_each_record_is_and_why_the_cancelled_ones_stopped(
    crmflow: Run, cli_env: dict[str, str]
) -> None:
    crmflow("db", "upgrade")
    ctx = Context.from_settings(
        Settings(database_url=cli_env["CRMFLOW_DATABASE_URL"], timezone="Europe/Paris")
    )
    admin = actor_by_username(ctx, "system")
    ids = _people_in_flows(ctx, admin)
    make_user(ctx, "andrei", "member")
    ctx.engine.dispose()

    every = json.loads(crmflow("runs", "list", "welcome", "--json").stdout)
    assert every["next_after"] is None
    assert [(r["record_name"], r["status"]) for r in every["items"]] == [
        ("Ana Pop", "finished"),
        ("Bob Ionescu", "waiting"),
    ] + [("Claire Martin", "cancelled")] * 11
    bob = every["items"][1]
    assert (bob["record_id"], bob["step"], bob["end_reason"]) == (ids["bob"], "ask", "")
    assert bob["due_at"] is None and bob["finished_at"] is None  # an approval waits, no timer

    cancelled = json.loads(
        crmflow("runs", "list", "welcome", "--status", "cancelled", "--json").stdout
    )["items"]
    assert len(cancelled) == 11
    assert all(r["end_reason"].startswith(LOOP_GUARD) for r in cancelled)
    assert all(r["finished_at"] is not None for r in cancelled)

    table = crmflow("runs", "list", "welcome", "--status", "cancelled").stdout
    assert "loop guard" in table
    rows = [r for r in _table(table) if r and r[0].isdigit()]
    assert len(rows) == 11
    assert {(r[1], r[2], r[3]) for r in rows} == {
        (str(ids["claire"]), "Claire Martin", "cancelled")
    }

    waiting = _table(
        crmflow("runs", "list", "welcome", "--step", "ask", "--status", "waiting").stdout
    )
    assert [r[1:5] for r in waiting if r and r[0].isdigit()] == [
        [str(ids["bob"]), "Bob Ionescu", "waiting", "ask"]
    ]
    nobody = crmflow("runs", "list", "welcome", "--step", "hello", "--status", "active")
    assert "no record in flow 'welcome' matches" in nobody.stdout

    # Per record, each email says what became of it: pending until it goes, cancelled with its run.
    shown = crmflow("runs", "show", str(ids["bob"])).stdout
    assert "send_email: done — email to" in shown and "[email pending, not before" in shown
    shown = crmflow("runs", "show", str(ids["claire"])).stdout
    assert shown.count("[email cancelled]") == 10

    # Paged: the last line says how to get the next page.
    first = crmflow("runs", "list", "welcome", "--limit", "2")
    assert len([r for r in _table(first.stdout) if r and r[0].isdigit()]) == 2
    assert "more: crmflow runs list welcome --after" in first.stderr
    after = first.stderr.split("--after")[1].strip()
    rest = json.loads(crmflow("runs", "list", "welcome", "--after", after, "--json").stdout)
    assert len(rest["items"]) == 11

    wrong = crmflow("runs", "list", "welcome", "--status", "stopped", check_exit=1)
    assert "unknown status 'stopped'" in wrong.stderr
    assert "active, waiting, finished, left, cancelled" in wrong.stderr
    assert (
        "must be between 1 and"
        in crmflow("runs", "list", "welcome", "--limit", "0", check_exit=1).stderr
    )

    # A private flow is listed for its members only; for anyone else it does not exist.
    [dan] = json.loads(crmflow("runs", "list", "secret", "--json").stdout)["items"]
    assert dan["record_name"] == "Dan Secret"
    hidden = crmflow("--as", "andrei", "runs", "list", "secret", check_exit=1)
    assert "no flow with key 'secret' that you can see" in hidden.stderr


# -- the HTTP API -------------------------------------------------------------------------------


def test_the_runs_route_lists_filters_and_pages_a_flows_records(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    ids = _people_in_flows(ctx, admin)
    make_user(ctx, "andrei", "member")
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}

    def get(url: str, headers: dict[str, str] = auth) -> tuple[int, Any]:
        answer = client.get(url, headers=headers)
        return answer.status_code, answer.json()

    status, body = get("/api/flows/welcome/runs?status=cancelled")
    assert status == 200
    items = body["items"]
    assert len(items) == 11
    assert {i["record_id"] for i in items} == {ids["claire"]}
    assert all(i["end_reason"].startswith(LOOP_GUARD) for i in items)
    assert all(i["finished_at"] == clock.current.isoformat() for i in items)

    status, body = get("/api/flows/welcome/runs?step=ask&status=waiting")
    assert [(i["record_name"], i["status"]) for i in body["items"]] == [("Bob Ionescu", "waiting")]
    status, body = get("/api/flows/welcome/runs?status=finished")
    [ana] = body["items"]
    assert (ana["record_id"], ana["end_reason"]) == (ids["ana"], "went through the last step")

    # Keyset pages, the same way as every other list.
    _, first = get("/api/flows/welcome/runs?limit=12")
    assert len(first["items"]) == 12 and first["next_after"] is not None
    _, last = get(f"/api/flows/welcome/runs?limit=12&after={first['next_after']}")
    assert len(last["items"]) == 1 and last["next_after"] is None

    status, body = get("/api/flows/welcome/runs?status=stopped")
    assert status == 422 and "unknown status 'stopped'" in str(body)
    assert get("/api/flows/welcome/runs?limit=0")[0] == 422

    outsider = {"Authorization": f"Bearer {users.create_token(ctx, admin, 'andrei').token}"}
    assert get("/api/flows/secret/runs")[1]["items"] != []
    assert get("/api/flows/secret/runs", headers=outsider)[0] == 404
    assert get("/api/flows/welcome/runs", headers=outsider)[0] == 200
