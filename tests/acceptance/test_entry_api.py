"""Starting a record through the HTTP API: a refusal answers 409 with the reason and is kept in
the flow's not-entered list; a draining flow refuses restarts. On SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows
from crmflow.services.context import Actor, Context

GATED = """\
schema_version: 1
key: gated
name: Gated
record_type: contact
reentry: {mode: always}
entry_condition: 'record.first_name == "Claire"'
triggers: [{type: manual}]
steps:
  - key: hello
    actions:
      - type: history
        message: "hello {{ record.first_name }}"
  - key: wait
    timing: {type: after, amount: 2, unit: days}
    actions:
      - type: history
        message: "later"
"""


def _contact(client: TestClient, headers: dict[str, str], name: str) -> int:
    made = client.post(
        "/api/records/contact",
        json={"data": {"first_name": name, "last_name": "X", "email": f"{name}@example.org"}},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def test_an_api_start_refused_by_the_entry_condition_answers_409_and_is_listed_as_not_entered(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    flows.create_flow(ctx, admin, GATED)
    flows.change_status(ctx, admin, "gated", LifecycleAction.START)
    claire, ana = _contact(client, as_admin, "Claire"), _contact(client, as_admin, "Ana")

    entered = client.post("/api/flows/gated/runs", json={"record_id": claire}, headers=as_admin)
    assert entered.status_code == 201, entered.text
    assert entered.json()["step"] == "wait"

    refused = client.post("/api/flows/gated/runs", json={"record_id": ana}, headers=as_admin)
    assert refused.status_code == 409
    assert refused.json()["message"] == (
        f"record {ana} was not entered in flow 'gated': "
        'entry condition false: record.first_name == "Claire"'
    )

    listed = client.get("/api/flows/gated/not-entered", headers=as_admin).json()["items"]
    assert [(d["record_id"], d["trigger"]) for d in listed] == [(ana, "manual")]
    assert listed[0]["reason"] == 'entry condition false: record.first_name == "Claire"'
    per_record = client.get(f"/api/records/contact/{ana}/not-entered", headers=as_admin).json()
    assert [d["flow"] for d in per_record["items"]] == ["gated"]

    # Draining: a new start and a restart are both refused, with the reason.
    flows.change_status(ctx, admin, "gated", LifecycleAction.DRAIN)
    again = client.post("/api/flows/gated/runs", json={"record_id": claire}, headers=as_admin)
    assert again.status_code == 409
    assert "flow draining: records inside finish, no new record enters" in again.json()["message"]
    restart = client.post(f"/api/runs/{entered.json()['id']}/restart", headers=as_admin)
    assert restart.status_code == 409
    assert "'gated' is draining" in restart.json()["message"]
    assert "crmflow flows resume gated" in restart.json()["message"]
    reasons = [
        d["reason"].split(":")[0]
        for d in client.get("/api/flows/gated/not-entered", headers=as_admin).json()["items"]
    ]
    assert reasons == ["flow draining", "entry condition false"]
