"""The typed answers of the flows, meta (health, sign-in, me, schema) and hooks routes: each has
a response schema in /openapi.json, and a realistic walk through them on the demo data answers
JSON that the models describe, unchanged from what the services produce (SQLite, PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from crmflow.api.app import create_app
from crmflow.api.responses import flows as flow_models
from crmflow.api.responses import meta as meta_models
from crmflow.services import flows, lifecycle, users, webhooks_in
from crmflow.services.context import Context
from crmflow.services.demo import DEMO_LOGINS, load_demo
from crmflow.services.health import STALE_AFTER
from crmflow.services.triggers.failures import failing_triggers
from crmflow.settings import Settings
from crmflow.store import heartbeats
from crmflow.store.schema import records
from crmflow.store.trigger_failures import record_failure
from tests.conftest import FrozenClock

SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()
ADMIN, MEMBER = DEMO_LOGINS[0], DEMO_LOGINS[2]  # alice (admin), andrei (member)


def _hooked(key: str, hook: str, *, secret: str | None, head: str = "") -> str:
    secret_line = f"\n    secret: {secret}" if secret else ""
    return f"""\
schema_version: 1
key: {key}
name: {key}
record_type: contact
{head}triggers:
  - type: webhook
    key: {hook}{secret_line}
steps:
  - key: note
    actions:
      - type: history
        message: "Hooked {{{{ record.first_name }}}}"
  - key: later
    timing: {{type: after, amount: 1, unit: days}}
    actions:
      - type: history
        message: "A day later"
"""


def _signed(ctx: Context, body: dict[str, Any], msg_id: str) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    timestamp = str(int(ctx.now().timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    return raw, {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


@dataclass
class Walk:
    """Every answer of the walk by label, in the order they were made."""

    answers: dict[str, httpx.Response] = field(default_factory=dict)

    def keep(self, label: str, response: httpx.Response) -> httpx.Response:
        assert label not in self.answers, label
        self.answers[label] = response
        return response


def walk(ctx: Context, client: TestClient, clock: FrozenClock) -> Walk:
    """Call every route of flows, meta and hooks the way a client would, on the demo data: as
    the admin and as a member, through a flow's whole lifecycle (with records inside, an edit
    that removes a step, failing triggers, a webhook that enters, refuses and is replayed)."""
    load_demo(ctx)
    admin = {"Authorization": f"Bearer {ADMIN.token}"}
    member = {"Authorization": f"Bearer {MEMBER.token}"}
    yaml = {"Content-Type": "application/yaml"}
    done = Walk()
    keep = done.keep

    keep("health", client.get("/api/health"))
    keep(
        "login",
        client.post(
            "/api/auth/token", json={"username": MEMBER.username, "password": "andrei-demo"}
        ),
    )
    keep("me admin", client.get("/api/me", headers=admin))
    keep("me member", client.get("/api/me", headers=member))
    keep("schema", client.get("/api/schema/flow", headers=member))
    keep("list admin", client.get("/api/flows", headers=admin))
    keep("list member", client.get("/api/flows", headers=member))
    keep("list active", client.get("/api/flows", params={"status": "active"}, headers=admin))

    signed_doc = _hooked("hooked", "signup", secret=SECRET)
    open_doc = _hooked("open-hook", "open", secret=None)
    private_doc = _hooked(
        "private-plan", "private", secret=None, head="visibility: private\nmembers: [bogdan]\n"
    )
    keep("validate", client.post("/api/flows/validate", content=signed_doc, headers=admin | yaml))
    keep("create", client.post("/api/flows", content=signed_doc, headers=admin | yaml))
    keep("create open", client.post("/api/flows", content=open_doc, headers=admin | yaml))
    keep("create private", client.post("/api/flows", content=private_doc, headers=admin | yaml))
    for flow in keep("list all", client.get("/api/flows", headers=admin)).json():
        keep(f"get {flow['key']}", client.get(f"/api/flows/{flow['key']}", headers=admin))
    keep("get member", client.get("/api/flows/hooked", headers=member))
    keep("version", client.get("/api/flows/hooked/versions/1", headers=member))
    keep("start list", client.get("/api/flows/donor-thank-you/start-list", headers=admin))
    keep("start list none", client.get("/api/flows/hooked/start-list", headers=admin))
    count = done.answers["start list"].json()["count"]
    keep(
        "start confirmed",
        client.post(
            "/api/flows/donor-thank-you/start", params={"confirm_count": count}, headers=admin
        ),
    )
    keep("start", client.post("/api/flows/hooked/start", headers=admin))
    keep("start open", client.post("/api/flows/open-hook/start", headers=admin))

    with ctx.engine.connect() as conn:
        contact = conn.execute(
            sa.select(sa.func.min(records.c.id)).where(records.c.type == "contact")
        ).scalar_one()
    raw, signature = _signed(ctx, {"record_id": contact}, "msg_walk_1")
    keep("hook entered", client.post("/hooks/signup", content=raw, headers=signature))
    keep("hook replayed", client.post("/hooks/signup", content=raw, headers=signature))
    by_token = member | {"Content-Type": "application/json"}
    body = json.dumps({"record_id": contact})
    keep("hook open", client.post("/hooks/open", content=body, headers=by_token))
    keep("hook refused", client.post("/hooks/open", content=body, headers=by_token))

    inside = done.answers["get hooked"].json()["records_inside"] + 1
    keep(
        "pause",
        client.post("/api/flows/hooked/pause", params={"confirm_inside": inside}, headers=admin),
    )
    shorter = signed_doc.split("  - key: later")[0]
    keep("update", client.put("/api/flows/hooked", content=shorter, headers=admin | yaml))
    keep("impact", client.get("/api/flows/hooked/impact", headers=admin))
    keep(
        "resume",
        client.post("/api/flows/hooked/resume", json={"moves": {"later": "end"}}, headers=admin),
    )
    keep("drain", client.post("/api/flows/hooked/drain", headers=admin))
    keep("history", client.get("/api/flows/hooked/history", headers=member))
    keep(
        "archive",
        client.post("/api/flows/open-hook/archive", params={"confirm_inside": 1}, headers=admin),
    )
    keep("add member", client.put("/api/flows/private-plan/members/andrei", headers=admin))
    keep("remove member", client.delete("/api/flows/private-plan/members/andrei", headers=admin))

    private_id = flows.get_flow(ctx, users.actor_by_username(ctx, "alice"), "private-plan").id
    with ctx.engine.begin() as conn:
        record_failure(
            conn,
            flow_id=private_id,
            trigger_index=0,
            trigger_type="webhook",
            error="the saved query 'x' no longer exists",
            now=ctx.now(),
        )
    keep("get failing", client.get("/api/flows/private-plan", headers=admin))
    keep("failing", client.get("/api/flows/private-plan/trigger-failures", headers=admin))
    keep("failing none", client.get("/api/flows/hooked/trigger-failures", headers=member))

    # Another process's worker that stopped beating: the health check fails (503).
    heartbeats.started(ctx.engine, name="elsewhere", kind="worker", now=clock.current)
    heartbeats.beat(
        ctx.engine, name="elsewhere", kind="worker", now=clock.current, success_at=clock.current
    )
    clock.advance(seconds=STALE_AFTER.total_seconds() + 5)
    keep("health failing", client.get("/api/health"))
    return done


@pytest.fixture
def walked(ctx: Context, clock: FrozenClock) -> Iterator[Walk]:
    with TestClient(create_app(ctx)) as client:
        yield walk(ctx, client, clock)


# -- what /openapi.json says ------------------------------------------------------------------

# Each route of flows, meta and hooks, its success status and the model that status names.
ROUTES: list[tuple[str, str, str, str]] = [
    ("get", "/api/health", "200", "Health"),
    ("get", "/api/health", "503", "Health"),
    ("post", "/api/auth/token", "200", "SignedIn"),
    ("get", "/api/me", "200", "Me"),
    ("get", "/api/schema/flow", "200", "FlowDocumentSchema"),
    ("get", "/api/flows", "200", "FlowSummary"),
    ("post", "/api/flows", "201", "Flow"),
    ("post", "/api/flows/validate", "200", "FlowValidated"),
    ("get", "/api/flows/{key}", "200", "Flow"),
    ("get", "/api/flows/{key}/trigger-failures", "200", "FailingTrigger"),
    ("put", "/api/flows/{key}", "200", "FlowSummary"),
    ("get", "/api/flows/{key}/versions/{version}", "200", "FlowVersion"),
    ("get", "/api/flows/{key}/history", "200", "FlowChange"),
    ("get", "/api/flows/{key}/start-list", "200", "StartList"),
    ("post", "/api/flows/{key}/start", "200", "Flow"),
    ("post", "/api/flows/{key}/pause", "200", "Flow"),
    ("get", "/api/flows/{key}/impact", "200", "StepImpact"),
    ("post", "/api/flows/{key}/resume", "200", "Flow"),
    ("post", "/api/flows/{key}/drain", "200", "Flow"),
    ("post", "/api/flows/{key}/archive", "200", "Flow"),
    ("put", "/api/flows/{key}/members/{username}", "200", "FlowSummary"),
    ("delete", "/api/flows/{key}/members/{username}", "200", "FlowSummary"),
    ("post", "/hooks/{key}", "200", "HookAnswer"),
]


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    """The document as a client downloads it (no database is read to build it)."""
    app = create_app(Context.from_settings(Settings(database_url="sqlite://")))
    with TestClient(app) as client:
        document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def _named(schema: dict[str, Any]) -> set[str]:
    """The component names a response schema refers to (directly, as items, or in a union)."""
    found = set()
    for part in [schema, schema.get("items", {}), *schema.get("anyOf", [])]:
        if "$ref" in part:
            found.add(part["$ref"].rsplit("/", 1)[-1])
    return found


@pytest.mark.parametrize(("method", "path", "status", "model"), ROUTES)
def test_openapi_describes_the_success_answer_of_each_route(
    openapi: dict[str, Any], method: str, path: str, status: str, model: str
) -> None:
    answer = openapi["paths"][path][method]["responses"][status]
    schema = answer["content"]["application/json"]["schema"]
    assert model in _named(schema), f"{method.upper()} {path} {status} answers {schema}"
    component = openapi["components"]["schemas"][model]
    # Not an empty object: named properties, or (the flow JSON Schema) a described open object.
    assert component.get("properties") or (
        component.get("additionalProperties") is True and component.get("description")
    ), component


def test_openapi_says_which_keys_are_null_and_which_are_left_out(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    summary = schemas["FlowSummary"]
    assert "document" not in summary["properties"]
    assert {"key", "status", "revision", "records_inside"} <= set(summary["required"])
    assert {"type": "null"} in summary["properties"]["owner"]["anyOf"]
    assert schemas["FlowStatus"]["enum"] == ["draft", "active", "paused", "draining", "archived"]
    # Failing triggers change without the flow's revision (its ETag): they have their own route.
    assert "failing_triggers" not in schemas["Flow"]["properties"]
    assert {"trigger_index", "last_error", "retry_at"} <= set(schemas["FailingTrigger"]["required"])
    assert "from" in schemas["FlowChange"]["required"]  # the key as sent, not `from_`
    health = schemas["Health"]
    assert "reasons" not in health["required"]
    assert "Only when failing" in health["properties"]["reasons"]["description"]
    hook = openapi["paths"]["/hooks/{key}"]["post"]["responses"]["200"]
    assert _named(hook["content"]["application/json"]["schema"]) == {"HookAnswer", "HookReplay"}
    assert schemas["HookReplay"]["properties"]["replayed"]["const"] is True


# -- what the routes answer -------------------------------------------------------------------

FLOW_LIST = TypeAdapter(list[flow_models.FlowSummary])
MODELS: dict[str, TypeAdapter[Any]] = {
    "health": TypeAdapter(meta_models.Health),
    "health failing": TypeAdapter(meta_models.Health),
    "login": TypeAdapter(meta_models.SignedIn),
    "me admin": TypeAdapter(meta_models.Me),
    "me member": TypeAdapter(meta_models.Me),
    "schema": TypeAdapter(meta_models.FlowDocumentSchema),
    "list admin": FLOW_LIST,
    "list member": FLOW_LIST,
    "list active": FLOW_LIST,
    "list all": FLOW_LIST,
    "validate": TypeAdapter(flow_models.FlowValidated),
    "version": TypeAdapter(flow_models.FlowVersion),
    "start list": TypeAdapter(flow_models.StartList),
    "start list none": TypeAdapter(flow_models.StartList),
    "impact": TypeAdapter(list[flow_models.StepImpact]),
    "history": TypeAdapter(list[flow_models.FlowChange]),
    "failing": TypeAdapter(list[flow_models.FailingTrigger]),
    "failing none": TypeAdapter(list[flow_models.FailingTrigger]),
    **{
        label: TypeAdapter(flow_models.HookResult)
        for label in ("hook entered", "hook replayed", "hook open", "hook refused")
    },
    **{
        label: TypeAdapter(flow_models.Flow)
        for label in (
            *("create", "create open", "create private", "start confirmed", "start"),
            *("start open", "pause", "resume", "drain", "archive"),
        )
    },
    **{
        label: TypeAdapter(flow_models.FlowSummary)
        for label in ("update", "add member", "remove member")
    },
}


def _model_of(label: str) -> TypeAdapter[Any]:
    if label.startswith("get "):
        return TypeAdapter(flow_models.Flow)
    return MODELS[label]


def test_each_answer_is_what_its_model_describes_and_what_the_service_says(
    ctx: Context, walked: Walk
) -> None:
    answers = walked.answers
    for label, response in answers.items():
        expected_status = {"health failing": 503}.get(label, 201 if "create" in label else 200)
        assert response.status_code == expected_status, f"{label}: {response.text}"
        body = response.json()
        adapter = _model_of(label)
        # The model holds every key as it came, and leaves out none: nothing is reshaped.
        again = adapter.dump_python(
            adapter.validate_python(body), mode="json", by_alias=True, exclude_unset=True
        )
        assert again == body, label

    alice = users.actor_by_username(ctx, ADMIN.username)
    andrei = users.actor_by_username(ctx, MEMBER.username)
    with TestClient(create_app(ctx)) as client:
        admin = {"Authorization": f"Bearer {ADMIN.token}"}
        member = {"Authorization": f"Bearer {MEMBER.token}"}
        # Reads, now: exactly what the services produce, as the admin and as a member.
        for actor, headers in ((alice, admin), (andrei, member)):
            listed = client.get("/api/flows", headers=headers).json()
            assert listed == [f.as_dict() for f in flows.list_flows(ctx, actor)]
        assert "private-plan" not in {f["key"] for f in listed}  # the member's list
        for key in ("hooked", "private-plan"):
            flow = flows.get_flow(ctx, alice, key)
            answer = client.get(f"/api/flows/{key}", headers=admin)
            assert answer.json() == flow.as_dict()
            assert answer.headers["etag"] == f'"{flow.revision}"'
            failures = client.get(f"/api/flows/{key}/trigger-failures", headers=admin)
            assert failures.json() == failing_triggers(ctx, flow.id)
            assert "etag" not in failures.headers
        history = client.get("/api/flows/hooked/history", headers=member).json()
        assert history == [c.as_dict() for c in flows.flow_history(ctx, andrei, "hooked")]
        version = client.get("/api/flows/hooked/versions/2", headers=admin).json()
        assert version == flows.get_flow_version(ctx, alice, "hooked", 2)
        me = client.get("/api/me", headers=member).json()
        assert me == users.get_user(ctx, MEMBER.username).as_dict()

    # Changes: the keys of what the service returns for them.
    with_document = set(flows.get_flow(ctx, alice, "hooked").as_dict())
    without = set(flows.get_flow(ctx, alice, "hooked", with_document=False).as_dict())
    for label in ("create", "start", "pause", "resume", "drain", "archive"):
        assert set(answers[label].json()) == with_document, label
    for label in ("update", "add member", "remove member"):
        assert set(answers[label].json()) == without, label
    [step] = answers["impact"].json()
    assert set(step) == set(lifecycle.StepImpact("s", 1, (1,), "removed", "d").as_dict())
    assert (step["step"], step["fate"], step["records"]) == ("later", "removed", 1)

    entered, refused = answers["hook entered"].json(), answers["hook refused"].json()
    result = webhooks_in.HookResult(
        "k",
        1,
        "contact",
        [
            webhooks_in.HookStart("a", True, None, 1, "active", "s"),
            webhooks_in.HookStart("b", False, "why"),
        ],
    ).as_dict()
    assert set(entered) == set(result) and "replayed" not in entered
    assert entered["flows"][0].keys() == result["flows"][0].keys()
    assert refused["flows"][0].keys() == result["flows"][1].keys()
    assert refused["entered"] == 0 and "already inside" in refused["flows"][0]["reason"]
    replayed = answers["hook replayed"].json()
    assert replayed["replayed"] is True and "already received" in replayed["message"]
    assert {k: v for k, v in replayed.items() if k not in ("replayed", "message")} == entered

    assert "failing_triggers" not in answers["get failing"].json()
    assert answers["failing none"].json() == []
    failing = answers["failing"].json()
    assert [(f["trigger_index"], f["failures"]) for f in failing] == [(0, 1)]
    assert "no longer exists" in failing[0]["last_error"]
    sick = answers["health failing"].json()
    assert sick["status"] == "failing" and sick["reasons"], sick
    assert "reasons" not in answers["health"].json()
    assert answers["login"].json()["type"] == "bearer"
    assert answers["me member"].json()["role"] == "member"
    assert answers["schema"].json()["$schema"].endswith("2020-12/schema")
