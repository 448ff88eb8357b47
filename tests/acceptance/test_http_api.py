"""The HTTP API as a client meets it, on SQLite and PostgreSQL (FastAPI's TestClient)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import auth_headers
from tests.conftest import make_user

WELCOME = """\
schema_version: 1
key: welcome
name: Welcome
record_type: contact
triggers:
  - type: record_created
steps:
  - key: note
    actions:
      - type: history
        message: "Welcome {{ record.first_name }}"
"""


def test_every_call_needs_a_valid_token(client: TestClient) -> None:
    assert client.get("/api/flows").status_code == 401
    wrong = client.get("/api/flows", headers={"Authorization": "Bearer crm_nope"})
    assert wrong.status_code == 401
    assert "token" in wrong.json()["message"]
    assert client.get("/openapi.json").status_code == 200


def test_login_with_a_password_returns_a_working_token(ctx: Context, client: TestClient) -> None:
    make_user(ctx, "maria", "manager")
    token = client.post("/api/auth/token", json={"username": "maria", "password": "password123"})
    assert token.status_code == 200
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token.json()['token']}"})
    assert me.json()["username"] == "maria"
    bad = client.post("/api/auth/token", json={"username": "maria", "password": "nope-nope"})
    assert bad.status_code == 401


def test_records_crud_with_change_events(client: TestClient, as_admin: dict[str, str]) -> None:
    created = client.post(
        "/api/records/contact",
        json={"data": {"last_name": "Pop", "email": "Ana@Example.org"}},
        headers=as_admin,
    )
    assert created.status_code == 201, created.text
    record = created.json()
    path = f"/api/records/contact/{record['id']}"
    updated = client.patch(path, json={"data": {"first_name": "Ana"}}, headers=as_admin)
    assert updated.json()["data"]["first_name"] == "Ana"
    refused = client.patch(path, json={"data": {"emial": "x"}}, headers=as_admin)
    assert refused.status_code == 422
    assert refused.json()["problems"][0]["path"] == "emial"
    assert client.delete(path, headers=as_admin).status_code == 204
    assert client.get(path, headers=as_admin).status_code == 404
    kinds = [c["kind"] for c in client.get("/api/changes", headers=as_admin).json()["items"]]
    assert kinds == ["created", "updated", "deleted"]


def test_flow_lifecycle_over_http(client: TestClient, as_admin: dict[str, str]) -> None:
    yaml_body = {**as_admin, "Content-Type": "application/yaml"}
    invalid = client.post(
        "/api/flows/validate", content=WELCOME.replace("message:", "mesage:"), headers=yaml_body
    )
    assert invalid.status_code == 422
    [problem] = [p for p in invalid.json()["problems"] if "mesage" in p["path"]]
    assert problem["line"] == 11
    created = client.post("/api/flows", content=WELCOME, headers=yaml_body)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft"
    assert client.post("/api/flows/welcome/pause", headers=as_admin).status_code == 409
    assert client.post("/api/flows/welcome/start", headers=as_admin).json()["status"] == "active"
    locked = client.put("/api/flows/welcome", content=WELCOME, headers=yaml_body)
    assert locked.status_code == 409
    client.post("/api/flows/welcome/pause", headers=as_admin)
    edited = client.put(
        "/api/flows/welcome", content=WELCOME.replace("Welcome\n", "Hello\n"), headers=yaml_body
    )
    assert edited.json()["version"] == 2
    history = client.get("/api/flows/welcome/history", headers=as_admin).json()
    assert [h["to"] for h in history] == ["draft", "active", "paused", "paused"]
    assert client.get("/api/schema/flow", headers=as_admin).json()


def test_start_list_confirmation_over_http(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    today = ctx.now().astimezone(ctx.zone).date()
    for i in range(4):
        client.post(
            "/api/records/contact",
            json={"data": {"last_name": f"C{i}", "client_since": str(today - timedelta(days=180))}},
            headers=as_admin,
        )
    saved = client.post(
        "/api/queries",
        json={
            "name": "six-months",
            "record_type": "contact",
            "filter": {"all": [{"field": "client_since", "op": "=", "value": "today - 180 days"}]},
        },
        headers=as_admin,
    )
    assert saved.status_code == 201, saved.text
    flow = WELCOME.replace("type: record_created", "type: start_list\n    query: six-months")
    client.post(
        "/api/flows", content=flow, headers={**as_admin, "Content-Type": "application/yaml"}
    )
    asked = client.post("/api/flows/welcome/start", headers=as_admin)
    assert asked.status_code == 409
    assert asked.json()["count"] == 4
    started = client.post("/api/flows/welcome/start?confirm_count=4", headers=as_admin)
    assert started.json()["status"] == "active"


def test_private_flow_is_404_for_non_members(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    make_user(ctx, "bogdan", "member")
    make_user(ctx, "andrei", "member")
    private = WELCOME.replace(
        "record_type: contact", "record_type: contact\nvisibility: private\nmembers: [bogdan]"
    )
    created = client.post(
        "/api/flows", content=private, headers={**as_admin, "Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    assert (
        client.get("/api/flows/welcome", headers=auth_headers(ctx, admin, "bogdan")).status_code
        == 200
    )
    assert (
        client.get("/api/flows/welcome", headers=auth_headers(ctx, admin, "andrei")).status_code
        == 404
    )


def test_members_cannot_change_flows(ctx: Context, admin: Actor, client: TestClient) -> None:
    make_user(ctx, "andrei", "member")
    refused = client.post(
        "/api/flows",
        content=WELCOME,
        headers={**auth_headers(ctx, admin, "andrei"), "Content-Type": "application/yaml"},
    )
    assert refused.status_code == 403
    assert "only admins" in refused.json()["message"]


def test_validate_does_not_reveal_private_flows_to_non_members(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    make_user(ctx, "bogdan", "member")
    private = WELCOME.replace(
        "record_type: contact", "record_type: contact\nvisibility: private\nmembers: [bogdan]"
    ).replace("key: welcome", "key: secret-plan")
    yaml = {"Content-Type": "application/yaml"}
    assert (
        client.post("/api/flows", content=private, headers={**as_admin, **yaml}).status_code == 201
    )
    probe = WELCOME.replace(
        "      - type: history",
        "      - type: start_flow\n        flow: secret-pla\n      - type: history",
    )
    make_user(ctx, "eve", "manager")
    outsider = {**auth_headers(ctx, admin, "eve"), **yaml}
    answer = client.post("/api/flows/validate", content=probe, headers=outsider)
    assert answer.status_code == 422
    assert "secret-plan" not in answer.text
    member = {**auth_headers(ctx, admin, "bogdan"), **yaml}
    answer = client.post("/api/flows/validate", content=probe, headers=member)
    assert "secret-plan" in answer.text  # a member is offered the did-you-mean
    # Admins see every flow (issue 11): an admin who is not a member is offered it too.
    make_user(ctx, "ines", "admin")
    other_admin = {**auth_headers(ctx, admin, "ines"), **yaml}
    answer = client.post("/api/flows/validate", content=probe, headers=other_admin)
    assert "secret-plan" in answer.text


def test_record_changes_and_import_check_what_they_are_given(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    created = client.post(
        "/api/records/contact", json={"data": {"last_name": "Pop"}}, headers=as_admin
    ).json()
    wrong_type = client.get(f"/api/records/company/{created['id']}/changes", headers=as_admin)
    assert wrong_type.status_code == 404
    right = client.get(f"/api/records/contact/{created['id']}/changes", headers=as_admin)
    assert [c["kind"] for c in right.json()["items"]] == ["created"]
    unknown = client.post(
        "/api/records/contact/import",
        files={"file": ("contacts.json", b'[{"last_name": "X"}]')},
        headers=as_admin,
    )
    assert unknown.status_code == 422
    assert ".jsonl" in unknown.text
    imported = client.post(
        "/api/records/contact/import",
        files={"file": ("contacts.csv", b"last_name,email\nRusu,rusu@example.org\nDinu,nope\n")},
        headers=as_admin,
    )
    report = imported.json()
    assert (report["imported"], report["rejected"]) == (1, 1)
    assert report["errors"][0]["line"] == 3
    assert report["source"] == "contacts.csv"  # the upload's name, as the user knows the file
    exported = client.get("/api/records/contact/export?fmt=csv", headers=as_admin)
    assert exported.status_code == 200
    assert "Rusu" in exported.text and "Pop" in exported.text


def test_every_paged_list_takes_the_same_page_sizes(
    ctx: Context, client: TestClient, as_admin: dict[str, str]
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"page_size_max": 2})
    ids = [
        client.post(
            "/api/records/contact", json={"data": {"last_name": name}}, headers=as_admin
        ).json()["id"]
        for name in ("Pop", "Rusu", "Dinu")
    ]
    query = {"name": "everyone", "record_type": "contact", "filter": {}}
    assert client.post("/api/queries", json=query, headers=as_admin).status_code == 201
    assert client.post("/api/record-groups", json={"name": "news"}, headers=as_admin).is_success
    paged = [
        "/api/records/contact",
        f"/api/records/contact/{ids[0]}/changes",
        "/api/changes",
        "/api/queries",
        "/api/queries/everyone/records",
        "/api/record-groups/news/members",
    ]
    for path in paged:
        assert client.get(f"{path}?limit=2", headers=as_admin).status_code == 200, path
        for limit in (0, 3):
            refused = client.get(f"{path}?limit={limit}", headers=as_admin)
            assert refused.status_code == 422, path
            [problem] = refused.json()["problems"]
            assert (problem["path"], problem["message"]) == (
                "limit",
                f"must be between 1 and 2, got {limit}",
            ), path

    first = client.get("/api/queries/everyone/records?limit=2", headers=as_admin).json()
    assert [r["id"] for r in first["items"]] == ids[:2]
    rest = client.get(
        f"/api/queries/everyone/records?limit=2&after={first['next_after']}", headers=as_admin
    ).json()
    assert ([r["id"] for r in rest["items"]], rest["next_after"]) == (ids[2:], None)
