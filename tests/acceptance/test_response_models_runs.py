"""The OpenAPI document describes what the runs routes (start, list, progress, a record's runs,
decisions, restart, cancel) and the users routes (users, groups, tokens) answer, so that a
client generated from it reads their JSON; and each answer is exactly its declared model."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from crmflow.api.responses.runs import FlowProgress, RecordRuns, RunDetail, RunPage
from crmflow.api.responses.users import CreatedToken, Group, User
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import auth_headers
from tests.conftest import make_user

ROUTES = [
    ("post", "/api/flows/{key}/runs", "201", "RunDetail"),
    ("get", "/api/flows/{key}/runs", "200", "RunPage"),
    ("get", "/api/flows/{key}/progress", "200", "FlowProgress"),
    ("get", "/api/records/{type_key}/{record_id}/runs", "200", "RecordRuns"),
    ("post", "/api/runs/{enrollment_id}/decisions", "200", "RunDetail"),
    ("post", "/api/runs/{enrollment_id}/restart", "200", "RunDetail"),
    ("post", "/api/runs/{enrollment_id}/cancel", "200", "RunDetail"),
    ("get", "/api/users", "200", "User"),
    ("post", "/api/users", "201", "User"),
    ("get", "/api/users/{username}", "200", "User"),
    ("patch", "/api/users/{username}", "200", "User"),
    ("post", "/api/users/{username}/tokens", "201", "CreatedToken"),
    ("get", "/api/groups", "200", "Group"),
    ("post", "/api/groups", "201", "Group"),
]

FLOW = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: send_email
        subject: "Hello {{ record.first_name }}"
        body: "Hi"
      - type: update_record
        values: {status: prospect}
  - key: ask
    type: approval
    responsibility: {type: user, user: maria}
    buttons:
      - {key: ok, label: OK}
      - {key: no, label: Not now}
"""


def _component(doc: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name and schema of the model a response schema refers to (itself or its items)."""
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    assert ref, f"the response schema {schema} names no model"
    name = ref.rsplit("/", 1)[-1]
    return name, doc["components"]["schemas"][name]


def test_the_openapi_document_describes_each_success_answer(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for method, path, success, model in ROUTES:
        responses = doc["paths"][path][method]["responses"]
        schema = responses[success]["content"]["application/json"]["schema"]
        name, component = _component(doc, schema)
        where = f"{method.upper()} {path} {success}"
        assert name == model, f"{where} answers {name}, not {model}"
        assert component["properties"], f"{where}: {name} has no properties"
        assert component["required"], f"{where}: {name} requires no key"
    lists = {p: doc["paths"][p]["get"]["responses"]["200"] for p in ("/api/users", "/api/groups")}
    for path, answer in lists.items():
        assert answer["content"]["application/json"]["schema"]["type"] == "array", path
    run = doc["components"]["schemas"]["RunDetail"]
    assert {"id", "status", "step", "buttons", "step_runs"} <= set(run["required"])
    assert doc["components"]["schemas"]["EnrollmentStatus"]["enum"] == [
        "active",
        "waiting",
        "finished",
        "left",
        "cancelled",
        "held",
    ]
    assert doc["components"]["schemas"]["Role"]["enum"] == ["admin", "manager", "member"]


def _mirrors(model: Any, body: Any) -> Any:
    """`body` read as `model`: it validates, and written back it is the same JSON (the model
    neither drops a key nor adds one)."""
    adapter = TypeAdapter(model)
    value = adapter.validate_python(body)
    assert adapter.dump_python(value, mode="json", exclude_unset=True) == body
    return value


def _contact(ctx: Context, admin: Actor, first: str) -> int:
    data = {"first_name": first, "last_name": "Pop", "email": f"{first.lower()}@example.org"}
    return records.create_record(ctx, admin, "contact", data).id


def test_the_runs_routes_answer_their_models(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    make_user(ctx, "maria", "manager")
    make_user(ctx, "andrei", "member")
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "welcome", LifecycleAction.START)
    ana, bob, claire = (_contact(ctx, admin, name) for name in ("Ana", "Bob", "Claire"))
    as_admin = auth_headers(ctx, admin, admin.username)
    as_maria = auth_headers(ctx, admin, "maria")
    as_andrei = auth_headers(ctx, admin, "andrei")

    started = []
    for rid in (ana, bob, claire):
        answer = client.post("/api/flows/welcome/runs", json={"record_id": rid}, headers=as_admin)
        assert answer.status_code == 201, answer.text
        started.append(_mirrors(RunDetail, answer.json()))
    first = started[0]
    assert (first.status, first.step, first.buttons) == ("waiting", "ask", ["ok", "no"])
    email, update = first.step_runs[0].actions
    assert email.message is not None and email.message.status == "pending"
    # An action that wrote no message has no `message` key (not a null one).
    seen = client.get(f"/api/records/contact/{ana}/runs", headers=as_andrei).json()
    assert "message" not in seen["flows"][0]["step_runs"][0]["actions"][1]
    assert update.type == "update_record" and update.status == "done"

    for who in (as_admin, as_andrei):
        page = client.get("/api/flows/welcome/runs?limit=2", headers=who)
        assert page.status_code == 200, page.text
        runs = _mirrors(RunPage, page.json())
        assert [r.record_id for r in runs.items] == [ana, bob]
        assert runs.next_after == runs.items[-1].id and runs.items[0].record_name == "Ana Pop"
        status = client.get(f"/api/records/contact/{bob}/runs", headers=who)
        assert status.status_code == 200, status.text
        shown = _mirrors(RecordRuns, status.json())
        assert shown.record_type == "contact" and [f.id for f in shown.flows] == [started[1].id]

    decided = client.post(
        f"/api/runs/{first.id}/decisions",
        json={"step": "ask", "button": "ok", "comment": "fine"},
        headers=as_maria,
    )
    assert decided.status_code == 200, decided.text
    assert _mirrors(RunDetail, decided.json()).status == "finished"

    restarted = client.post(f"/api/runs/{started[1].id}/restart", headers=as_admin)
    assert restarted.status_code == 200, restarted.text
    assert [r.run for r in _mirrors(RunDetail, restarted.json()).step_runs] == [1, 2, 3, 4]

    cancelled = client.post(
        f"/api/runs/{started[2].id}/cancel", json={"reason": "asked to stop"}, headers=as_maria
    )
    assert cancelled.status_code == 200, cancelled.text
    run = _mirrors(RunDetail, cancelled.json())
    assert (run.status, run.end_reason) == ("cancelled", "cancelled by maria: asked to stop")
    assert run.finished_at is not None and run.due_at is None

    progress = client.get("/api/flows/welcome/progress", headers=as_andrei)
    assert progress.status_code == 200, progress.text
    counts = _mirrors(FlowProgress, progress.json())
    assert (counts.entered, counts.finished, counts.cancelled, counts.inside) == (3, 1, 1, 1)
    assert list(counts.funnel) == ["hello", "ask"] and counts.per_step == {"ask": 1}

    ended = client.get(f"/api/records/contact/{claire}/runs", headers=as_admin)
    history = _mirrors(RecordRuns, ended.json()).history
    assert any(h.enrollment_id == run.id and "asked to stop" in h.message for h in history)


def test_the_users_routes_answer_their_models(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    make_user(ctx, "andrei", "member")
    as_admin = auth_headers(ctx, admin, admin.username)
    as_andrei = auth_headers(ctx, admin, "andrei")

    created = client.post(
        "/api/users",
        json={"username": "zoe", "role": "manager", "display_name": "Zoe", "email": "z@x.org"},
        headers=as_admin,
    )
    assert created.status_code == 201, created.text
    zoe = _mirrors(User, created.json())
    assert (zoe.role, zoe.email, zoe.active, zoe.groups) == ("manager", "z@x.org", True, [])
    bare = client.post("/api/users", json={"username": "yan", "role": "member"}, headers=as_admin)
    assert bare.status_code == 201, bare.text
    assert _mirrors(User, bare.json()).email is None

    group = client.post("/api/groups", json={"name": "sales"}, headers=as_admin)
    assert group.status_code == 201, group.text
    assert _mirrors(Group, group.json()).members == []
    joined = client.put("/api/groups/sales/members/zoe", headers=as_admin)
    assert joined.status_code == 204, joined.text

    listed = client.get("/api/users", headers=as_andrei)
    assert listed.status_code == 200, listed.text
    everyone = {u.username: u for u in _mirrors(list[User], listed.json())}
    assert everyone["zoe"].groups == ["sales"] and everyone["andrei"].role == "member"
    groups = client.get("/api/groups", headers=as_andrei)
    assert groups.status_code == 200, groups.text
    assert [(g.name, g.members) for g in _mirrors(list[Group], groups.json())] == [
        ("sales", ["zoe"])
    ]

    changed = client.patch("/api/users/zoe", json={"active": False}, headers=as_admin)
    assert changed.status_code == 200, changed.text
    assert _mirrors(User, changed.json()).active is False
    shown = client.get("/api/users/zoe", headers=as_andrei)
    assert shown.status_code == 200, shown.text
    assert _mirrors(User, shown.json()) == _mirrors(User, changed.json())

    token = client.post("/api/users/andrei/tokens", json={"name": "ci"}, headers=as_admin)
    assert token.status_code == 201, token.text
    made = _mirrors(CreatedToken, token.json())
    assert made.name == "ci"
    mine = client.get("/api/users/andrei", headers={"Authorization": f"Bearer {made.token}"})
    assert mine.status_code == 200, mine.text
    revoked = client.delete(f"/api/tokens/{made.token_id}", headers=as_admin)
    assert revoked.status_code == 204, revoked.text
