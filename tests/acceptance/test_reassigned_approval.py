"""An approval's task given to someone else (`tasks reassign`) gives them the decision: the new
assignee may press its buttons, and the one who gave it away no longer may (docs/people.md,
"Task lists": "the one who gave it away no longer acts on it")."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crmflow.services.context import Actor, Context
from tests.acceptance.test_task_lists import _setup, _task


def test_a_reassigned_approval_is_decided_by_its_new_assignee(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    h = _setup(ctx, admin)
    decide = _task(client, h["maria"], "Decide: ask")
    given = client.post(
        f"/api/tasks/{decide['id']}/reassign", json={"user": "eva"}, headers=h["maria"]
    )
    assert given.status_code == 200, given.text
    url = f"/api/runs/{decide['enrollment_id']}/decisions"
    body = {"step": "ask", "button": "ok"}
    # Maria gave it away: she no longer decides, and nothing moves.
    refused = client.post(url, json=body, headers=h["maria"])
    assert refused.status_code == 403, refused.text
    assert "it is asked of 'eva' or an admin" in refused.json()["message"]
    pressed = client.post(url, json=body, headers=h["eva"])
    assert pressed.status_code == 200, pressed.text
    assert _task(client, h["eva"], "Decide: ask")["status"] == "done"
