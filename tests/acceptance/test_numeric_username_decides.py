"""An approval asked of a user whose username is digits (an employee number) is theirs to
decide, and its email theirs, not the user's whose id those digits happen to be."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records
from crmflow.services.context import Actor, Context
from crmflow.services.users import update_user
from crmflow.store.schema import outbox
from tests.acceptance.conftest import auth_headers
from tests.conftest import make_user

FLOW = """\
schema_version: 1
key: numbered
name: Numbered
record_type: contact
triggers: [{{type: manual}}]
steps:
  - key: ask
    type: approval
    responsibility: {{type: user, user: "{user}"}}
    email_link: true
    buttons:
      - {{key: ok, label: OK}}
"""


def test_an_approval_asked_of_a_numeric_username_is_not_decided_by_that_id(
    ctx: Context, admin: Actor, client: TestClient
) -> None:
    bob = make_user(ctx, "bob", "member")
    numbered = str(bob.id)  # a user named as bob's id: "1042" and user #1042
    make_user(ctx, numbered, "member")
    update_user(ctx, admin, "bob", email="bob@example.org")
    update_user(ctx, admin, numbered, email="numbered@example.org")
    flows.create_flow(ctx, admin, FLOW.format(user=numbered))
    flows.change_status(ctx, admin, "numbered", LifecycleAction.START)
    data = {"first_name": "Ana", "last_name": "Pop", "email": "ana@example.org"}
    rid = records.create_record(ctx, admin, "contact", data).id
    run = runs.start_record(ctx, admin, "numbered", rid)
    with ctx.engine.connect() as conn:
        payloads = [row.payload for row in conn.execute(sa.select(outbox.c.payload))]
    assert [p["to"] for p in payloads if p["subject"].startswith("Decision needed")] == [
        ["numbered@example.org"]
    ]
    url = f"/api/runs/{run.id}/decisions"
    body = {"step": "ask", "button": "ok"}
    refused = client.post(url, json=body, headers=auth_headers(ctx, admin, "bob"))
    assert refused.status_code == 403, refused.text
    assert f"it is asked of '{numbered}' or an admin" in refused.json()["message"]
    pressed = client.post(url, json=body, headers=auth_headers(ctx, admin, numbered))
    assert pressed.status_code == 200, pressed.text
