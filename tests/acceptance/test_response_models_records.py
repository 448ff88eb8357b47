"""The record, record type, record group, saved query and not-entered routes declare typed
answers in /openapi.json, and what they answer is what the document says and what the services'
views hold (the models describe the JSON; they do not reshape it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, queries, record_types, records, triggers
from crmflow.services.context import Actor, Context
from crmflow.settings import Settings
from crmflow.store.schema import record_group_members, record_groups
from crmflow.store.schema import records as records_table
from crmflow.worker import run_once
from tests.acceptance.conftest import auth_headers

# (method, path, success status, the component its answer is, whether it is a list of them)
ROUTES = [
    ("get", "/api/records/{type_key}", "200", "RecordPage", False),
    ("post", "/api/records/{type_key}", "201", "Record", False),
    ("get", "/api/records/{type_key}/{record_id}", "200", "Record", False),
    ("patch", "/api/records/{type_key}/{record_id}", "200", "Record", False),
    ("get", "/api/records/{type_key}/{record_id}/changes", "200", "RecordChangePage", False),
    ("get", "/api/changes", "200", "RecordChangePage", False),
    ("post", "/api/records/{type_key}/import", "200", "ImportReport", False),
    ("get", "/api/record-types", "200", "RecordType", True),
    ("post", "/api/record-types", "201", "RecordType", False),
    ("get", "/api/record-types/{key}", "200", "RecordType", False),
    ("put", "/api/record-types/{key}", "200", "RecordType", False),
    ("get", "/api/record-groups", "200", "RecordGroup", True),
    ("post", "/api/record-groups", "201", "RecordGroup", False),
    ("get", "/api/record-groups/{name}/members", "200", "RecordPage", False),
    ("get", "/api/queries", "200", "SavedQueryPage", False),
    ("post", "/api/queries", "201", "SavedQuery", False),
    ("post", "/api/queries/count", "200", "FilterCountResult", False),
    ("get", "/api/queries/{name}", "200", "SavedQuery", False),
    ("patch", "/api/queries/{name}", "200", "SavedQuery", False),
    ("get", "/api/queries/{name}/count", "200", "QueryCountResult", False),
    ("get", "/api/queries/{name}/records", "200", "RecordPage", False),
    ("get", "/api/flows/{key}/not-entered", "200", "NotEnteredList", False),
    ("get", "/api/records/{type_key}/{record_id}/not-entered", "200", "NotEnteredList", False),
]

HELD_FLOW = """\
schema_version: 1
key: held
name: Held
record_type: contact
triggers:
  - type: record_created
steps:
  - key: hello
    actions:
      - type: history
        message: hello
"""


def _answer_schema(doc: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    responses = doc["paths"][path][method]["responses"]
    assert status in responses, f"{method.upper()} {path} declares no {status} answer"
    schema: dict[str, Any] = responses[status]["content"]["application/json"]["schema"]
    return schema


class Documented:
    """Checks answers against the route's success schema in /openapi.json."""

    def __init__(self, client: TestClient) -> None:
        self.doc: dict[str, Any] = client.get("/openapi.json").json()

    def check(self, method: str, path: str, status: str, body: Any) -> None:
        schema = {
            **_answer_schema(self.doc, method, path, status),
            "components": self.doc["components"],
        }
        errors = [e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(body)]
        assert not errors, (
            f"{method.upper()} {path} answered outside its documented schema: {errors}"
        )


def _same_json(answer: dict[str, Any], view: dict[str, Any]) -> None:
    """The answer is the view: same keys, in the same order, with the same values."""
    assert answer == view
    assert list(answer) == list(view)


def test_every_route_declares_a_typed_answer(tmp_path: Path) -> None:
    # The document needs no data: an app on a database never opened describes it.
    unopened = Context.from_settings(Settings(database_url=f"sqlite:///{tmp_path / 'none.db'}"))
    doc = create_app(unopened).openapi()
    components = doc["components"]["schemas"]
    for method, path, status, name, is_list in ROUTES:
        schema = _answer_schema(doc, method, path, status)
        if is_list:
            assert schema["type"] == "array", (method, path, schema)
            schema = schema["items"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, (method, path, schema)
        assert components[name]["properties"], f"{name} describes no property"
    record = components["Record"]
    assert {"id", "type", "version", "owner", "data"} <= set(record["required"])
    assert record["properties"]["owner"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert record["properties"]["created_at"]["format"] == "date-time"
    kinds = components["RecordChange"]["properties"]["kind"]["enum"]
    assert sorted(kinds) == ["created", "deleted", "updated"]
    field_type_ref = components["RecordTypeField"]["properties"]["type"]["$ref"]
    field_types = components[field_type_ref.rsplit("/", 1)[-1]]
    assert {"text", "choice", "reference"} <= set(field_types["enum"])


def test_records_changes_and_imports_answer_what_they_document(
    ctx: Context, admin: Actor, member: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    as_member = auth_headers(ctx, admin, member.username)
    documented = Documented(client)

    made = client.post(
        "/api/records/contact",
        json={"data": {"first_name": "Claire", "last_name": "Dubois", "email": "c@example.org"}},
        headers=as_member,
    )
    assert made.status_code == 201, made.text
    documented.check("post", "/api/records/{type_key}", "201", made.json())
    rid = made.json()["id"]
    _same_json(made.json(), records.get_record(ctx, rid).as_dict())
    assert made.json()["owner"] == member.username

    other = client.post(
        "/api/records/contact", json={"data": {"last_name": "Popa"}}, headers=as_admin
    ).json()
    # A record nobody owns (its owner was removed) answers nulls, as documented.
    with ctx.engine.begin() as conn:
        conn.execute(
            records_table.update().where(records_table.c.id == other["id"]).values(owner_id=None)
        )
    unowned = client.get(f"/api/records/contact/{other['id']}", headers=as_member)
    assert unowned.status_code == 200, unowned.text
    assert (unowned.json()["owner_id"], unowned.json()["owner"]) == (None, None)
    documented.check("get", "/api/records/{type_key}/{record_id}", "200", unowned.json())

    changed = client.patch(
        f"/api/records/contact/{rid}", json={"data": {"last_name": "Rossi"}}, headers=as_admin
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["version"], changed.json()["data"]["last_name"]) == (2, "Rossi")
    documented.check("patch", "/api/records/{type_key}/{record_id}", "200", changed.json())

    page = client.get("/api/records/contact?limit=1", headers=as_member)
    assert page.status_code == 200, page.text
    assert page.json()["next_after"] == rid
    documented.check("get", "/api/records/{type_key}", "200", page.json())
    _same_json(page.json()["items"][0], records.get_record(ctx, rid).as_dict())

    assert client.delete(f"/api/records/contact/{rid}", headers=as_admin).status_code == 204
    history = client.get(f"/api/records/contact/{rid}/changes", headers=as_member)
    assert history.status_code == 200, history.text
    documented.check("get", "/api/records/{type_key}/{record_id}/changes", "200", history.json())
    kinds = [(c["kind"], c["before"] is None, c["after"] is None) for c in history.json()["items"]]
    assert kinds == [("created", True, False), ("updated", False, False), ("deleted", False, True)]
    expected = records.record_changes(ctx, rid).as_dict(lambda c: c.as_dict())
    assert history.json() == expected
    _same_json(history.json()["items"][1], expected["items"][1])

    feed = client.get("/api/changes?limit=2", headers=as_member)
    assert feed.status_code == 200, feed.text
    documented.check("get", "/api/changes", "200", feed.json())
    assert feed.json() == records.change_feed(ctx, limit=2).as_dict(lambda c: c.as_dict())
    assert feed.json()["next_after"] == feed.json()["items"][-1]["id"]

    csv = b"first_name,last_name,email\nAna,Popescu,ana@example.org\nBad,Row,not-an-email\n"
    report = client.post(
        "/api/records/contact/import",
        files={"file": ("people.csv", csv, "text/csv")},
        headers=as_admin,
    )
    assert report.status_code == 200, report.text
    documented.check("post", "/api/records/{type_key}/import", "200", report.json())
    body = report.json()
    assert (body["imported"], body["rejected"], body["errors"][0]["line"]) == (1, 1, 3)
    assert body["errors"][0]["problems"][0]["path"] == "email"


def test_types_groups_queries_and_not_entered_answer_what_they_document(
    ctx: Context, admin: Actor, member: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    as_member = auth_headers(ctx, admin, member.username)
    documented = Documented(client)

    listed = client.get("/api/record-types", headers=as_member)
    assert listed.status_code == 200, listed.text
    documented.check("get", "/api/record-types", "200", listed.json())
    # Unset field options stay out of the answer, as the views leave them out.
    assert listed.json() == [t.as_dict() for t in record_types.list_record_types(ctx)]
    contact = client.get("/api/record-types/contact", headers=as_member).json()
    documented.check("get", "/api/record-types/{key}", "200", contact)
    first_name = next(f for f in contact["fields"] if f["key"] == "first_name")
    assert set(first_name) == {"key", "type", "label"}

    fields = [
        {"key": "name", "type": "text", "required": True},
        {"key": "kind", "type": "choice", "choices": ["cat", "dog"]},
        {"key": "keeper", "type": "reference", "reference_type": "contact"},
    ]
    made = client.post(
        "/api/record-types", json={"key": "pet", "name": "Pet", "fields": fields}, headers=as_admin
    )
    assert made.status_code == 201, made.text
    documented.check("post", "/api/record-types", "201", made.json())
    assert made.json() == record_types.get_record_type(ctx, "pet").as_dict()
    assert [sorted(f) for f in made.json()["fields"]] == [
        ["key", "label", "required", "type"],
        ["choices", "key", "label", "type"],
        ["key", "label", "reference_type", "type"],
    ]
    fields.append({"key": "born", "type": "date"})
    updated = client.put(
        "/api/record-types/pet",
        json={"key": "pet", "name": "Pets", "fields": fields},
        headers=as_admin,
    )
    assert updated.status_code == 200, updated.text
    documented.check("put", "/api/record-types/{key}", "200", updated.json())
    assert updated.json()["fields"][-1] == {"key": "born", "type": "date", "label": "Born"}

    group = client.post("/api/record-groups", json={"name": "vip"}, headers=as_admin)
    assert group.status_code == 201, group.text
    documented.check("post", "/api/record-groups", "201", group.json())
    rids = [
        records.create_record(ctx, admin, "contact", {"first_name": n, "last_name": "X"}).id
        for n in ("Ana", "Bea")
    ]
    with ctx.engine.begin() as conn:
        gid = conn.execute(sa.select(record_groups.c.id)).scalar_one()
        conn.execute(
            record_group_members.insert(),
            [{"group_id": gid, "record_id": r, "added_at": ctx.now()} for r in rids],
        )
    groups = client.get("/api/record-groups", headers=as_member)
    assert groups.status_code == 200, groups.text
    documented.check("get", "/api/record-groups", "200", groups.json())
    assert [(g["name"], g["members"]) for g in groups.json()] == [("vip", 2)]
    _same_json(groups.json()[0], {**group.json(), "members": 2})
    members = client.get("/api/record-groups/vip/members?limit=1", headers=as_member)
    assert members.status_code == 200, members.text
    documented.check("get", "/api/record-groups/{name}/members", "200", members.json())
    assert (members.json()["items"][0]["id"], members.json()["next_after"]) == (rids[0], rids[0])

    query = {"field": "last_name", "op": "=", "value": "X"}
    saved = client.post(
        "/api/queries",
        json={"name": "the-x", "record_type": "contact", "filter": query},
        headers=as_admin,
    )
    assert saved.status_code == 201, saved.text
    documented.check("post", "/api/queries", "201", saved.json())
    _same_json(saved.json(), queries.get_query(ctx, "the-x").as_dict())
    patched = client.patch("/api/queries/the-x", json={"description": "all X"}, headers=as_admin)
    assert patched.status_code == 200, patched.text
    documented.check("patch", "/api/queries/{name}", "200", patched.json())
    assert (patched.json()["description"], patched.json()["version"]) == ("all X", 2)
    answers = {
        ("get", "/api/queries"): client.get("/api/queries", headers=as_member),
        ("get", "/api/queries/{name}"): client.get("/api/queries/the-x", headers=as_member),
        ("get", "/api/queries/{name}/count"): client.get(
            "/api/queries/the-x/count", headers=as_member
        ),
        ("get", "/api/queries/{name}/records"): client.get(
            "/api/queries/the-x/records?limit=1", headers=as_member
        ),
        ("post", "/api/queries/count"): client.post(
            "/api/queries/count",
            json={"record_type": "contact", "filter": query},
            headers=as_member,
        ),
    }
    for (method, path), answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
        documented.check(method, path, "200", answer.json())
    assert answers[("get", "/api/queries")].json()["items"] == [patched.json()]
    assert answers[("get", "/api/queries/{name}/count")].json() == {"name": "the-x", "count": 2}
    assert answers[("post", "/api/queries/count")].json() == {"count": 2}
    preview = answers[("get", "/api/queries/{name}/records")].json()
    assert preview == queries.preview_query(ctx, "the-x", limit=1).as_dict(lambda r: r.as_dict())
    assert (preview["items"][0]["id"], preview["next_after"]) == (rids[0], rids[0])

    flows.create_flow(ctx, admin, HELD_FLOW)
    flows.change_status(ctx, admin, "held", LifecycleAction.START)
    flows.change_status(ctx, admin, "held", LifecycleAction.PAUSE)
    held = records.create_record(ctx, admin, "contact", {"last_name": "Held"}).id
    run_once(ctx)
    by_flow = client.get("/api/flows/held/not-entered", headers=as_member)
    by_record = client.get(f"/api/records/contact/{held}/not-entered", headers=as_member)
    for path, answer in [
        ("/api/flows/{key}/not-entered", by_flow),
        ("/api/records/{type_key}/{record_id}/not-entered", by_record),
    ]:
        assert answer.status_code == 200, (path, answer.text)
        documented.check("get", path, "200", answer.json())
    [decision] = by_record.json()["items"]
    assert (decision["flow"], decision["trigger"]) == ("held", "record_created")
    assert decision["reason"].startswith("flow paused")
    found = triggers.entry_decisions_for(ctx, admin, record_id=held, record_type="contact")
    _same_json(decision, found[0].as_dict())
