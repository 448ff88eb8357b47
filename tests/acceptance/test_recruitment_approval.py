"""Seed 002's two-level recruitment approval (examples/recruitment-approval.yaml) through the HTTP
API: the requester's manager (maria), then the management group; approved at both levels, refused
at the first, refused at the second, each ending on its branch with the record's status said.
The requester may not decide their own request, even as a member of management. A group step with
a quorum waits for enough members' votes, shows them, refuses a second vote, and a refusal by one
member decides at once."""

from __future__ import annotations

import html
import re
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)

FLOW = "recruitment-approval"


class Api:
    def __init__(self, ctx: Context, client: TestClient, system: Actor, names: list[str]) -> None:
        self.client = client
        self.headers = {
            n: {"Authorization": f"Bearer {users.create_token(ctx, system, n).token}"}
            for n in names
        }

    def run(self, type_key: str, record_id: int) -> dict[str, Any]:
        url = f"/api/records/{type_key}/{record_id}/runs"
        response = self.client.get(url, headers=self.headers["alice"])
        assert response.status_code == 200, response.text
        (only,) = response.json()["flows"]
        return dict(only)

    def press(self, who: str, run_id: int, step: str, button: str, comment: str = "") -> Any:
        body = {"step": step, "button": button, "comment": comment}
        url = f"/api/runs/{run_id}/decisions"
        return self.client.post(url, json=body, headers=self.headers[who])

    def status_of(self, type_key: str, record_id: int) -> Any:
        url = f"/api/records/{type_key}/{record_id}"
        response = self.client.get(url, headers=self.headers["alice"])
        assert response.status_code == 200, response.text
        return response.json()["data"]["status"]


def test_both_levels_approve_or_either_refuses(ctx: Context, client: TestClient) -> None:
    system = _setup_like_the_demo(ctx)
    users.create_user(ctx, system, username="dana", role="member", display_name="Dana")
    users.add_group_member(ctx, system, "management", "dana")
    # The requester is in management too: still not the one to approve their own request.
    users.add_group_member(ctx, system, "management", "andrei")
    api = Api(ctx, client, system, ["alice", "maria", "andrei", "dana"])
    approved, refused_first, refused_second = (
        _create_sample_record(ctx, system, FLOW) for _ in range(3)
    )
    _create_and_start(ctx, system, FLOW)
    run_once(ctx, now=ctx.now())

    # Approved at both levels.
    type_key, rid = approved
    run = api.run(type_key, rid)
    assert run["step"] == "manager-approval"
    assert api.press("maria", run["id"], "manager-approval", "validate").status_code == 200
    assert api.run(type_key, rid)["step"] == "management-approval"
    own = api.press("andrei", run["id"], "management-approval", "validate")
    assert own.status_code == 403, own.text
    assert "'andrei' may not decide their own request" in own.json()["message"]
    assert "'requester'" in own.json()["message"]
    assert api.run(type_key, rid)["step"] == "management-approval"
    decided = api.press("dana", run["id"], "management-approval", "validate")
    assert decided.status_code == 200, decided.text
    run = api.run(type_key, rid)
    assert (run["status"], api.status_of(type_key, rid)) == ("finished", "approved")
    done = [(r["step"], r["status"]) for r in run["step_runs"]]
    assert ("approved", "done") in done and ("refused", "done") not in done

    # Refused by the manager: the refusal needs a comment, then ends on the refusal branch.
    type_key, rid = refused_first
    run = api.run(type_key, rid)
    bare = api.press("maria", run["id"], "manager-approval", "refuse")
    assert bare.status_code == 409 and "needs a comment" in bare.json()["message"]
    refused = api.press("maria", run["id"], "manager-approval", "refuse", "budget frozen")
    assert refused.status_code == 200, refused.text
    run = api.run(type_key, rid)
    assert api.status_of(type_key, rid) == "refused"
    steps = [r["step"] for r in run["step_runs"]]
    assert "management-approval" not in steps and "refused" in steps
    (manager_run,) = [r for r in run["step_runs"] if r["step"] == "manager-approval"]
    assert "maria pressed Refuse (budget frozen)" in manager_run["reason"]

    # Approved by the manager, refused by management.
    type_key, rid = refused_second
    run = api.run(type_key, rid)
    assert api.press("maria", run["id"], "manager-approval", "validate").status_code == 200
    refused = api.press("dana", run["id"], "management-approval", "refuse", "not this year")
    assert refused.status_code == 200, refused.text
    run = api.run(type_key, rid)
    assert api.status_of(type_key, rid) == "refused"
    assert "approved" not in [r["step"] for r in run["step_runs"]]


def _links_to(ctx: Context, address: str, run_id: int) -> list[str]:
    """The paths of the links in the approval email of run `run_id` to `address` (outbox)."""
    with ctx.engine.connect() as conn:
        payloads = conn.execute(
            sa.select(outbox.c.payload).where(outbox.c.enrollment_id == run_id)
        ).scalars()
        (body,) = [p["body"] for p in payloads if p["to"] == [address]]
    return re.findall(r"https?://[^/\s]+(/a/[\w.-]+)", body)


QUORUM_FLOW = """
schema_version: 1
key: panel-approval
name: Panel approval
record_type: candidate
owner: alice
triggers: [{type: manual}]
steps:
  - key: panel
    type: approval
    responsibility: {type: group, group: panel}
    quorum: 2
    email_link: true
    buttons:
      - {key: validate, label: Validate, goto: approved}
      - {key: refuse, label: Refuse, goto: refused}
  - key: approved
    actions: [{type: set_status, status: approved}]
    next: done
  - key: refused
    actions: [{type: set_status, status: refused}]
  - key: done
    type: end
"""


def test_a_quorum_counts_votes_and_one_refusal_decides(ctx: Context, client: TestClient) -> None:
    system = _setup_like_the_demo(ctx)
    users.create_group(ctx, system, "panel")
    for name in ("pia", "paul", "petra"):
        users.create_user(
            ctx, system, username=name, role="member", display_name=name, email=f"{name}@x.org"
        )
        users.add_group_member(ctx, system, "panel", name)
    api = Api(ctx, client, system, ["alice", "pia", "paul", "petra"])
    flows.create_flow(ctx, system, QUORUM_FLOW, source="test")
    count = flows.start_list_count(ctx, system, "panel-approval")
    flows.change_status(ctx, system, "panel-approval", LifecycleAction.START, confirm_count=count)
    voted, vetoed = (_create_sample_record(ctx, system, FLOW) for _ in range(2))
    for _, rid in (voted, vetoed):
        assert client.post(
            "/api/flows/panel-approval/runs", json={"record_id": rid}, headers=api.headers["alice"]
        ).status_code in (200, 201)

    type_key, rid = voted
    run_id = api.run(type_key, rid)["id"]
    first = api.press("pia", run_id, "panel", "validate", "good profile")
    assert first.status_code == 200, first.text
    run = api.run(type_key, rid)
    assert run["step"] == "panel"  # 1 of 2 votes: still waiting, and it says who voted
    assert "1 of 2 Validate votes (pia)" in run["waiting_for"]
    again = api.press("pia", run_id, "panel", "validate")
    assert again.status_code == 409 and "pia already voted Validate" in again.json()["message"]
    # Her email's links say so too, and take nothing.
    for link in _links_to(ctx, "pia@x.org", run_id):
        page = client.get(link)
        assert page.status_code == 409 and "pia already voted" in html.unescape(page.text)
    second = api.press("paul", run_id, "panel", "validate")
    assert second.status_code == 200, second.text
    run = api.run(type_key, rid)
    assert api.status_of(type_key, rid) == "approved"
    (panel,) = [r for r in run["step_runs"] if r["step"] == "panel"]
    assert "pia pressed Validate (good profile): 1 of 2 votes" in panel["reason"]
    assert "paul pressed Validate (2 of 2 votes)" in panel["reason"]

    # One vote for, then one refusal: refused at once, whatever the quorum.
    type_key, rid = vetoed
    run_id = api.run(type_key, rid)["id"]
    assert api.press("petra", run_id, "panel", "validate").status_code == 200
    assert api.press("paul", run_id, "panel", "refuse").status_code == 200
    assert api.status_of(type_key, rid) == "refused"
