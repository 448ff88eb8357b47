"""A late approval as its people see it over the HTTP API, with a frozen clock (issue 11's
proof): the person asked sees the decision in their tasks, the controller is told when it is
late, the escalation hands it to another user, who alone may then decide, and the run goes on
from their decision. The worker runs in process between the calls, as `crmflow worker` would."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import create_user
from crmflow.worker import run_once
from tests.acceptance.conftest import auth_headers
from tests.conftest import FrozenClock

FLOW = """\
schema_version: 1
key: leave
name: Leave request
record_type: contact
controller: carla
triggers: [{type: manual}]
steps:
  - key: approve
    type: approval
    responsibility: {type: user, user: bogdan}
    message: "Leave for {{ record.first_name }}?"
    deadline: {days: 3, escalate: {after_days: 2, to: andrei}}
    buttons:
      - {key: validate, label: Validate}
      - {key: refuse, label: Refuse, goto: refused}
  - key: approved
    actions: [{type: history, message: approved}]
    next: done
  - key: refused
    actions: [{type: history, message: refused}]
  - key: done
    type: end
"""


def test_a_late_approval_is_seen_late_told_to_the_controller_and_escalated_over_the_api(
    ctx: Context, admin: Actor, client: TestClient, clock: FrozenClock
) -> None:
    for username, role in (("carla", "manager"), ("bogdan", "member"), ("andrei", "member")):
        create_user(ctx, admin, username=username, role=role, email=f"{username}@ex.org")
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "leave", LifecycleAction.START)
    claire = {"first_name": "Claire", "last_name": "Martin"}
    rid = records.create_record(ctx, admin, "contact", claire).id
    carla, bogdan, andrei = (auth_headers(ctx, admin, u) for u in ("carla", "bogdan", "andrei"))
    admin_headers = auth_headers(ctx, admin, admin.username)

    started = client.post("/api/flows/leave/runs", json={"record_id": rid}, headers=carla)
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    run_once(ctx)
    [task] = client.get("/api/tasks", headers=bogdan).json()["items"]
    assert (task["title"], task["assignee"], task["late"]) == ("Leave for Claire?", "bogdan", False)
    assert (
        client.get("/api/tasks", params={"state": "late"}, headers=admin_headers).json()["items"]
        == []
    )

    clock.advance(days=3)  # the deadline is reached: late from that instant, as the worker says
    run_once(ctx)
    [late] = client.get("/api/tasks", params={"state": "late"}, headers=admin_headers).json()[
        "items"
    ]
    assert (late["id"], late["late"], late["assignee"]) == (task["id"], True, "bogdan")
    told = [n["message"] for n in client.get("/api/notifications", headers=carla).json()["items"]]
    assert any(m.startswith("Step 'approve' is late") for m in told), told

    clock.advance(days=2)  # two days late: the escalation hands it to andrei
    run_once(ctx)
    [moved] = client.get("/api/tasks", headers=andrei).json()["items"]
    assert (moved["id"], moved["assignee"]) == (task["id"], "andrei")
    assert client.get("/api/tasks", headers=bogdan).json()["items"] == []

    decision = {"step": "approve", "button": "validate", "comment": "enjoy"}
    refused = client.post(f"/api/runs/{run_id}/decisions", json=decision, headers=bogdan)
    assert refused.status_code == 403
    assert "andrei" in refused.json()["message"]
    decided = client.post(f"/api/runs/{run_id}/decisions", json=decision, headers=andrei)
    assert decided.status_code == 200, decided.text
    run_once(ctx)
    shown = client.get(f"/api/records/contact/{rid}/runs", headers=admin_headers)
    assert shown.status_code == 200, shown.text
    [run] = shown.json()["flows"]
    assert run["status"] == "finished", run
    assert [s["step"] for s in run["step_runs"]][-2:] == ["approved", "done"], run["step_runs"]
