"""Running records through flows as a user does: `crmflow runs ...` and the HTTP routes."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records, users
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import Run
from tests.conftest import FrozenClock


def test_a_recruitment_is_started_decided_twice_and_shown_from_the_command_line(
    crmflow: Run,
) -> None:
    crmflow("db", "upgrade")
    crmflow("demo")
    crmflow("--as", "alice", "flows", "start", "recruitment-approval")
    candidate = json.loads(
        crmflow(
            "records",
            "create",
            "candidate",
            "--data",
            json.dumps(
                {
                    "first_name": "Ioana",
                    "last_name": "Popescu",
                    "position": "Technician",
                    "salary": 42000,
                    "requester": "andrei",
                    "manager": "maria",
                    "status": "requested",
                }
            ),
        ).stdout
    )
    rid = str(candidate["id"])
    started = crmflow("--as", "andrei", "runs", "start", "recruitment-approval", rid)
    assert "at step 'manager-approval' (waiting" in started.stdout
    assert "buttons: validate, refuse" in started.stdout
    shown = json.loads(crmflow("runs", "show", rid, "--json").stdout)
    [run] = shown["flows"]
    enrollment = str(run["id"])
    # The manager is named as people know her, though the record holds her user id.
    assert run["step_runs"][0]["reason"].endswith("asked of maria (the record's manager)")
    assert "asked of maria (the record's manager)" in crmflow("runs", "show", rid).stdout

    refused = crmflow("runs", "decide", enrollment, "management-approval", "validate", check_exit=1)
    assert "not at step 'management-approval'" in refused.stderr
    crmflow("--as", "maria", "runs", "decide", enrollment, "manager-approval", "validate")
    done = crmflow("--as", "alice", "runs", "decide", enrollment, "management-approval", "validate")
    assert "(finished" in done.stdout

    text = crmflow("runs", "show", rid).stdout
    assert "#3 approved [done]" in text
    assert "set_status: done" in text
    assert json.loads(crmflow("records", "get", rid).stdout)["data"]["status"] == "approved"

    progress = json.loads(crmflow("runs", "progress", "recruitment-approval", "--json").stdout)
    assert (progress["entered"], progress["finished"]) == (1, 1)
    # The record went through every step of its branch, the end step `finished` included.
    assert progress["funnel"] == {
        "manager-approval": 1,
        "management-approval": 1,
        "approved": 1,
        "refused": 0,
        "finished": 1,
    }
    table = crmflow("runs", "progress", "recruitment-approval").stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines()]
    assert ["finished", "0", "1"] in rows  # step, records there now, went through
    assert crmflow("worker", "--once").stdout.strip() == "moved 0 enrollment(s)"

    # Seed 003: start the record over from the first step, from the command line.
    again = json.loads(crmflow("--as", "alice", "runs", "restart", enrollment, "--json").stdout)
    assert (again["status"], again["step"]) == ("waiting", "manager-approval")
    assert again["id"] == run["id"]  # the same run goes on, its history kept
    flows_now = json.loads(crmflow("runs", "show", rid, "--json").stdout)["flows"]
    [rerun] = [f for f in flows_now if f["id"] == run["id"]]
    assert rerun["status"] == "waiting"
    steps = [r["step"] for r in rerun["step_runs"]]
    assert steps[:3] == ["manager-approval", "management-approval", "approved"]
    assert steps[-1] == "manager-approval"


# -- the HTTP API ------------------------------------------------------------------------------

FLOW = """\
schema_version: 1
key: remind
name: Remind
record_type: contact
triggers: [{type: manual}]
steps:
  - key: first
    actions:
      - type: history
        message: "first"
  - key: ask
    type: approval
    responsibility: {type: user, user: system}
    buttons:
      - {key: ok, label: OK}
"""


def test_the_runs_routes_start_show_decide_restart_and_count(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "remind", LifecycleAction.START)
    rid = records.create_record(ctx, admin, "contact", {"last_name": "Pop"}).id

    started = client.post("/api/flows/remind/runs", json={"record_id": rid}, headers=auth)
    assert started.status_code == 201, started.text
    body = started.json()
    assert (body["status"], body["step"], body["buttons"]) == ("waiting", "ask", ["ok"])

    again = client.post("/api/flows/remind/runs", json={"record_id": rid}, headers=auth)
    assert again.status_code == 409
    assert "already inside this flow at step 'ask'" in again.json()["message"]

    wrong = client.post(
        f"/api/runs/{body['id']}/decisions", json={"step": "ask", "button": "nope"}, headers=auth
    )
    assert wrong.status_code == 409
    decided = client.post(
        f"/api/runs/{body['id']}/decisions", json={"step": "ask", "button": "ok"}, headers=auth
    )
    assert decided.json()["status"] == "finished"

    restarted = client.post(f"/api/runs/{body['id']}/restart", headers=auth)
    assert restarted.json()["step"] == "ask"

    shown = client.get(f"/api/records/contact/{rid}/runs", headers=auth).json()
    assert [r["step"] for r in shown["flows"][0]["step_runs"]] == ["first", "ask", "first", "ask"]
    assert [h["message"] for h in shown["history"]] == [
        "first",
        "not entered in flow 'remind' (by system): already inside this flow at step 'ask'",
        "first",
    ]
    progress = client.get("/api/flows/remind/progress", headers=auth).json()
    assert (progress["entered"], progress["inside"], progress["per_step"]) == (1, 1, {"ask": 1})
    assert client.get("/api/flows/nope/progress", headers=auth).status_code == 404
