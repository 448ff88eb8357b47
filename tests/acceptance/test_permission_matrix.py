"""The permission matrix of issue 11, through the HTTP API: role (admin, manager, member) x
action (create and change a flow, start it, see its runs, decide an approval, act on a task,
reassign it) x visibility (a public flow, a private flow the user is a member of, one they are
not). Only admins create, change and start flows; a private flow does not exist (404) for a
non-member who is not an admin; an approval is decided by the person asked or an admin; a task
is acted on by its assignee, their manager or an admin; a private flow's task goes only to its
members (409 naming the user, the flow and the command that grants access)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from crmflow.services import records, users
from crmflow.services.context import Actor, Context
from crmflow.store.database import read_connection
from crmflow.store.task_lists import TaskFilter, list_tasks
from tests.acceptance.conftest import auth_headers

YAML = {"Content-Type": "application/yaml"}

FLOW = """\
schema_version: 1
key: {key}
name: Matrix
record_type: contact
controller: zoe
{access}
triggers:
  - type: manual
steps:
  - key: call
    responsibility: {{type: user, user: tom}}
    actions:
      - type: create_task
        title: Call
  - key: approve
    type: approval
    responsibility: {{type: user, user: zoe}}
    buttons:
      - {{key: validate, label: Validate, goto: done}}
      - {{key: refuse, label: Refuse, goto: done}}
  - key: done
    type: end
"""

ROLES = {"admin": "ada", "manager": "mia", "member": "mo"}
VISIBILITIES = ("public", "private member", "private outsider")

# What each role gets, by visibility (public, private member, private outsider).
EXPECTED: dict[str, dict[str, tuple[int, int, int]]] = {
    "admin": {
        "see runs": (200, 200, 200),
        "decide (asked of someone else)": (200, 200, 200),
        "act on a team member's task": (200, 200, 200),
        "reassign the task to themselves": (200, 200, 409),
        "change a flow": (200, 200, 200),
        "start a draft flow": (200, 200, 200),
        "create a flow": (201, 201, 201),
    },
    "manager": {  # mia manages tom, the task's assignee
        "see runs": (200, 200, 404),
        "decide (asked of someone else)": (403, 403, 404),
        "act on a team member's task": (200, 200, 404),
        "reassign the task to themselves": (200, 200, 404),
        "change a flow": (403, 403, 403),
        "start a draft flow": (403, 403, 403),
        "create a flow": (403, 403, 403),
    },
    "member": {
        "see runs": (200, 200, 404),
        "decide (asked of someone else)": (403, 403, 404),
        "act on a team member's task": (403, 403, 404),
        "reassign the task to themselves": (403, 403, 404),
        "change a flow": (403, 403, 403),
        "start a draft flow": (403, 403, 403),
        "create a flow": (403, 403, 403),
    },
}


def _flow(key: str, visibility: str, actor: str) -> str:
    if visibility == "public":
        access = "visibility: public"
    else:
        members = ["tom", "zoe"] + ([actor] if visibility == "private member" else [])
        access = f"visibility: private\nmembers: [{', '.join(members)}]"
    return FLOW.format(key=key, access=access)


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_the_permission_matrix(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str], visibility: str
) -> None:
    for name, user_role in (("ada", "admin"), ("mia", "manager"), ("mo", "member")):
        users.create_user(ctx, admin, username=name, role=user_role)
    users.create_user(ctx, admin, username="tom", role="member", manager="mia")
    users.create_user(ctx, admin, username="zoe", role="member")
    column = VISIBILITIES.index(visibility)
    got: dict[str, dict[str, int]] = {}
    for role, actor in ROLES.items():
        answers = _try_each_action(ctx, admin, client, as_admin, role, visibility)
        got[role] = {action: answer.status_code for action, answer in answers.items()}
        # A private flow's outsider is told nothing about who works in it.
        for answer in answers.values():
            if answer.status_code == 404:
                assert "that you can see" in answer.text
                assert "tom" not in answer.text and "zoe" not in answer.text
        if role == "admin" and visibility == "private outsider":
            refused = answers["reassign the task to themselves"].json()["message"]
            assert f"'{actor}' is not a member of the private flow 'matrix-admin'" in refused
            assert f"`crmflow flows add-member matrix-admin {actor}`" in refused
    expected = {
        role: {action: codes[column] for action, codes in by_action.items()}
        for role, by_action in EXPECTED.items()
    }
    assert got == expected


def _try_each_action(
    ctx: Context,
    admin: Actor,
    client: TestClient,
    as_admin: dict[str, str],
    role: str,
    visibility: str,
) -> dict[str, httpx.Response]:
    """Each action of the matrix, by `role`'s user, on flows of their own (`matrix-ROLE`, with
    a run waiting at its approval and tom's task, and `draft-ROLE`)."""
    actor = ROLES[role]
    matrix, draft = f"matrix-{role}", f"draft-{role}"
    for key in (matrix, draft):
        created = client.post(
            "/api/flows", content=_flow(key, visibility, actor), headers={**as_admin, **YAML}
        )
        assert created.status_code == 201, created.text
    assert client.post(f"/api/flows/{matrix}/start", headers=as_admin).status_code == 200
    record = records.create_record(ctx, admin, "contact", {"last_name": "Martin"})
    run = client.post(f"/api/flows/{matrix}/runs", json={"record_id": record.id}, headers=as_admin)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    with read_connection(ctx.engine) as conn:
        listed = list_tasks(conn, TaskFilter(ctx.now()), after=None, limit=50)
    # (the approval has its own task)
    [task] = [t for t in listed if t.step_key == "call" and t.enrollment_id == run_id]
    headers = auth_headers(ctx, admin, actor)
    calls: dict[str, Callable[[], httpx.Response]] = {
        "see runs": lambda: client.get(f"/api/flows/{matrix}/runs", headers=headers),
        "decide (asked of someone else)": lambda: client.post(
            f"/api/runs/{run_id}/decisions",
            json={"step": "approve", "button": "validate"},
            headers=headers,
        ),
        "act on a team member's task": lambda: client.post(
            f"/api/tasks/{task.id}/start", headers=headers
        ),
        "reassign the task to themselves": lambda: client.post(
            f"/api/tasks/{task.id}/reassign", json={"user": actor}, headers=headers
        ),
        "change a flow": lambda: client.put(
            f"/api/flows/{draft}",
            content=_flow(draft, visibility, actor).replace("Matrix", "Matrix 2"),
            headers={**headers, **YAML},
        ),
        "start a draft flow": lambda: client.post(f"/api/flows/{draft}/start", headers=headers),
        "create a flow": lambda: client.post(
            "/api/flows",
            content=_flow(f"another-{role}", visibility, actor),
            headers={**headers, **YAML},
        ),
    }
    return {action: call() for action, call in calls.items()}
