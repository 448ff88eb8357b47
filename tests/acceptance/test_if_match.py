"""ETag and If-Match through the HTTP API (SQLite and PostgreSQL) and `--if-version` through the
CLI: a read says the version, a write naming a stale one is answered 412 with the current version
and writes nothing, the right one (or `*`) goes through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.services import users
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import Run


def _refusal(answer: Any, status: int = 412) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    return str(body["message"])


def test_a_record_carries_its_version_as_etag_and_a_stale_if_match_is_refused(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    created = client.post(
        "/api/records/contact", json={"data": {"last_name": "Pop"}}, headers=as_admin
    )
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'
    url = f"/api/records/contact/{created.json()['id']}"
    rid = created.json()["id"]

    read = client.get(url, headers=as_admin)
    assert (read.headers["ETag"], read.json()["version"]) == ('"1"', 1)

    first = client.patch(
        url, json={"data": {"first_name": "Ana"}}, headers={**as_admin, "If-Match": '"1"'}
    )
    assert first.status_code == 200, first.text
    assert (first.headers["ETag"], first.json()["version"]) == ('"2"', 2)

    # A second client read version 1 too: its write is refused, and says what to do.
    stale = client.patch(
        url, json={"data": {"first_name": "Bea"}}, headers={**as_admin, "If-Match": '"1"'}
    )
    message = _refusal(stale)
    assert stale.json()["error"] == "PreconditionFailedError"
    assert f"record {rid} is at version 2, not 1" in message
    assert "nothing was written" in message
    assert f"GET {url}" in message
    assert client.get(url, headers=as_admin).json()["data"]["first_name"] == "Ana"

    # A weak tag never matches If-Match (strong comparison); `*` matches any version.
    weak = client.patch(
        url, json={"data": {"first_name": "Cleo"}}, headers={**as_admin, "If-Match": 'W/"2"'}
    )
    _refusal(weak)
    anyone = client.patch(
        url, json={"data": {"first_name": "Dan"}}, headers={**as_admin, "If-Match": "*"}
    )
    assert (anyone.status_code, anyone.headers["ETag"]) == (200, '"3"')
    # Tags that name no version (not digits, too long to be one) match none: 412, not a 500.
    for odd in ('"\u00b2"', '"' + "9" * 40 + '"', '"abc"'):
        other = client.patch(
            url, json={"data": {}}, headers={**as_admin, "If-Match": odd.encode("latin-1")}
        )
        assert "is at version 3" in _refusal(other), odd
    listed = client.patch(
        url, json={"data": {"first_name": "Eve"}}, headers={**as_admin, "If-Match": '"7", "3"'}
    )
    assert listed.status_code == 200, listed.text

    gone = client.delete(url, headers={**as_admin, "If-Match": '"3"'})
    assert "is at version 4, not 3" in _refusal(gone)
    assert client.get(url, headers=as_admin).status_code == 200
    assert client.delete(url, headers={**as_admin, "If-Match": '"4"'}).status_code == 204
    assert client.get(url, headers=as_admin).status_code == 404


@pytest.mark.parametrize("header", ["7", '"7', "", "W/7"])
def test_an_if_match_that_is_not_an_entity_tag_is_a_422_that_says_how_to_write_one(
    client: TestClient, as_admin: dict[str, str], header: str
) -> None:
    created = client.post(
        "/api/records/contact", json={"data": {"last_name": "Pop"}}, headers=as_admin
    )
    url = f"/api/records/contact/{created.json()['id']}"
    answer = client.patch(url, json={"data": {}}, headers={**as_admin, "If-Match": header})
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["problems"]
    assert problem["path"] == "If-Match"
    assert "is not an entity tag" in problem["message"]
    assert 'If-Match: "7"' in problem["hint"]
    assert client.get(url, headers=as_admin).json()["version"] == 1


FLOW = """\
schema_version: 1
key: welcome
name: {name}
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: hello
    actions:
      - type: update_record
        values: {{first_name: Hello}}
"""
YAML = {"Content-Type": "application/yaml"}


def test_a_flow_carries_its_revision_as_etag_and_a_stale_if_match_is_refused(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    created = client.post(
        "/api/flows", content=FLOW.format(name="Welcome"), headers={**as_admin, **YAML}
    )
    assert created.status_code == 201, created.text
    read = client.get("/api/flows/welcome", headers=as_admin)
    assert (read.headers["ETag"], read.json()["revision"]) == ('"1"', 1)

    edit = {**as_admin, **YAML, "If-Match": '"1"'}
    edited = client.put("/api/flows/welcome", content=FLOW.format(name="Hi"), headers=edit)
    assert edited.status_code == 200, edited.text
    assert (edited.headers["ETag"], edited.json()["revision"]) == ('"2"', 2)

    stale = client.put("/api/flows/welcome", content=FLOW.format(name="Lost"), headers=edit)
    message = _refusal(stale)
    assert "flow 'welcome' is at revision 2, not 1" in message
    assert "GET /api/flows/welcome" in message
    assert client.get("/api/flows/welcome", headers=as_admin).json()["name"] == "Hi"

    # A status change is a change of the flow: an If-Match read before it is stale.
    assert client.post("/api/flows/welcome/start", headers=as_admin).status_code == 200
    assert client.get("/api/flows/welcome", headers=as_admin).headers["ETag"] == '"3"'
    refused = client.delete("/api/flows/welcome", headers={**as_admin, "If-Match": '"2"'})
    assert "at revision 3, not 2" in _refusal(refused)


def test_a_saved_query_carries_its_version_as_etag_and_a_stale_if_match_is_refused(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    body = {"name": "leads", "record_type": "contact", "filter": {}}
    created = client.post("/api/queries", json=body, headers=as_admin)
    assert (created.status_code, created.headers["ETag"]) == (201, '"1"'), created.text
    read = client.get("/api/queries/leads", headers=as_admin)
    assert (read.headers["ETag"], read.json()["version"]) == ('"1"', 1)

    changed = client.patch(
        "/api/queries/leads",
        json={"description": "every contact"},
        headers={**as_admin, "If-Match": '"1"'},
    )
    assert (changed.status_code, changed.headers["ETag"]) == (200, '"2"'), changed.text
    stale = client.patch(
        "/api/queries/leads", json={"description": "lost"}, headers={**as_admin, "If-Match": '"1"'}
    )
    assert "saved query 'leads' is at version 2, not 1" in _refusal(stale)
    assert client.get("/api/queries/leads", headers=as_admin).json()["description"] == (
        "every contact"
    )
    refused = client.delete("/api/queries/leads", headers={**as_admin, "If-Match": '"1"'})
    _refusal(refused)
    deleted = client.delete("/api/queries/leads", headers={**as_admin, "If-Match": '"2"'})
    assert deleted.status_code == 204


def test_the_openapi_document_declares_if_match_and_412_on_every_conditional_write(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    conditional = [
        ("/api/records/{type_key}/{record_id}", "patch"),
        ("/api/records/{type_key}/{record_id}", "delete"),
        ("/api/flows/{key}", "put"),
        ("/api/flows/{key}", "delete"),
        ("/api/queries/{name}", "patch"),
        ("/api/queries/{name}", "delete"),
        ("/api/flows/{key}/start", "post"),
        ("/api/flows/{key}/pause", "post"),
        ("/api/flows/{key}/resume", "post"),
        ("/api/flows/{key}/drain", "post"),
        ("/api/flows/{key}/archive", "post"),
        ("/api/flows/{key}/members/{username}", "put"),
        ("/api/flows/{key}/members/{username}", "delete"),
    ]
    for path, method in conditional:
        operation = paths[path][method]
        headers = [p["name"].lower() for p in operation["parameters"] if p["in"] == "header"]
        assert "if-match" in headers, (path, method)
        assert "412" in operation["responses"], (path, method)
    for path in ("/api/records/{type_key}/{record_id}", "/api/flows/{key}", "/api/queries/{name}"):
        read = paths[path]["get"]
        headers = [p["name"].lower() for p in read["parameters"] if p["in"] == "header"]
        assert "if-none-match" in headers, path
        assert "304" in read["responses"], path


def test_cli_records_update_with_a_stale_if_version_exits_1_and_writes_nothing(
    crmflow: Run,
) -> None:
    crmflow("db", "upgrade")
    created = json.loads(
        crmflow("records", "create", "contact", "--data", '{"last_name": "Pop"}').stdout
    )
    rid = str(created["id"])
    assert created["version"] == 1
    updated = crmflow(
        "records", "update", rid, "--data", '{"first_name": "Ana"}', "--if-version", "1"
    )
    assert json.loads(updated.stdout)["version"] == 2

    stale = crmflow(
        "records", "update", rid, "--data", '{"first_name": "Bea"}', "--if-version", "1",
        check_exit=1,
    )  # fmt: skip
    assert f"record {rid} is at version 2, not 1" in stale.stderr
    assert f"crmflow records get {rid}" in stale.stderr
    assert "Traceback" not in stale.stderr
    assert json.loads(crmflow("records", "get", rid).stdout)["data"]["first_name"] == "Ana"

    refused = crmflow("records", "delete", rid, "--if-version", "1", check_exit=1)
    assert "is at version 2, not 1" in refused.stderr


def test_a_get_with_the_current_etag_in_if_none_match_is_a_304_without_a_body(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    created = client.post(
        "/api/records/contact", json={"data": {"last_name": "Pop"}}, headers=as_admin
    )
    url = f"/api/records/contact/{created.json()['id']}"
    same = client.get(url, headers={**as_admin, "If-None-Match": '"1"'})
    assert (same.status_code, same.headers["ETag"], same.content) == (304, '"1"', b"")
    client.patch(url, json={"data": {"first_name": "Ana"}}, headers=as_admin)
    changed = client.get(url, headers={**as_admin, "If-None-Match": 'W/"1"'})
    assert (changed.status_code, changed.json()["version"]) == (200, 2)

    client.post("/api/queries", json={"name": "q", "record_type": "contact", "filter": {}},
                headers=as_admin)  # fmt: skip
    query = client.get("/api/queries/q", headers={**as_admin, "If-None-Match": '"1"'})
    assert query.status_code == 304
    client.post("/api/flows", content=FLOW.format(name="W"), headers={**as_admin, **YAML})
    flow = client.get("/api/flows/welcome", headers={**as_admin, "If-None-Match": '"0", "1"'})
    assert flow.status_code == 304


# Each status change and change of members, in an order the lifecycle allows from a draft.
CONDITIONAL_CHANGES = [
    ("PUT", "/api/flows/welcome/members/bea", "draft"),
    ("DELETE", "/api/flows/welcome/members/bea", "draft"),
    ("POST", "/api/flows/welcome/start", "active"),
    ("POST", "/api/flows/welcome/pause", "paused"),
    ("POST", "/api/flows/welcome/resume", "active"),
    ("POST", "/api/flows/welcome/drain", "draining"),
    ("POST", "/api/flows/welcome/archive", "archived"),
]


def test_status_changes_and_member_changes_take_if_match_and_answer_the_new_revision(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    users.create_user(ctx, admin, username="bea", role="member")
    created = client.post(
        "/api/flows", content=FLOW.format(name="Welcome"), headers={**as_admin, **YAML}
    )
    assert created.status_code == 201, created.text
    revision = 1
    for method, address, status in CONDITIONAL_CHANGES:
        before = client.get("/api/flows/welcome", headers=as_admin).json()
        stale = client.request(
            method, address, headers={**as_admin, "If-Match": f'"{revision - 1}"'}
        )
        message = _refusal(stale)
        assert f"flow 'welcome' is at revision {revision}, not {revision - 1}" in message, address
        assert "nothing was written" in message
        # Refused whole: the status, the members and the revision are as they were.
        assert client.get("/api/flows/welcome", headers=as_admin).json() == before, address

        done = client.request(method, address, headers={**as_admin, "If-Match": f'"{revision}"'})
        assert done.status_code == 200, f"{address}: {done.text}"
        revision += 1
        assert (done.headers["ETag"], done.json()["revision"]) == (f'"{revision}"', revision)
        assert done.json()["status"] == status, address
        assert ("bea" in done.json()["members"]) == (method == "PUT"), address
    # Without If-Match a change applies whatever the revision, and still says the new one.
    answer = client.put("/api/flows/welcome/members/bea", headers=as_admin)
    assert answer.headers["ETag"] == f'"{revision + 1}"'
