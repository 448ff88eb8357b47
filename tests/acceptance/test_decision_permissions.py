"""Who may press an approval step's buttons, through the HTTP API (seed 002's two-level
recruitment approval, examples/recruitment-approval.yaml): the person the step asks (the
requester's manager, a field of the record), then a member of the group it asks (management),
or an admin; anyone else gets 403 naming who may, and nothing moves. A second decision on a
step already decided is refused."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from crmflow.services import users
from crmflow.services.context import Context
from crmflow.worker import run_once
from tests.acceptance.test_examples_end_to_end import (
    _create_and_start,
    _create_sample_record,
    _setup_like_the_demo,
)


def test_only_the_people_asked_decide_each_level(ctx: Context, client: TestClient) -> None:
    system = _setup_like_the_demo(ctx)
    # The demo's management group is alice (an admin); dana is a member of it who is no admin.
    users.create_user(ctx, system, username="dana", role="member", display_name="Dana")
    users.add_group_member(ctx, system, "management", "dana")
    token = {
        name: {"Authorization": f"Bearer {users.create_token(ctx, system, name).token}"}
        for name in ("maria", "andrei", "bogdan", "dana")
    }
    type_key, record_id = _create_sample_record(ctx, system, "recruitment-approval")
    _create_and_start(ctx, system, "recruitment-approval")
    run_once(ctx, now=ctx.now())
    runs_url = f"/api/records/{type_key}/{record_id}/runs"

    def run() -> dict[str, Any]:
        response = client.get(runs_url, headers=token["maria"])
        assert response.status_code == 200, response.text
        (only,) = response.json()["flows"]
        return dict(only)

    url = f"/api/runs/{run()['id']}/decisions"

    def press(who: str, step: str, button: str = "validate") -> Any:
        body = {"step": step, "button": button}
        return client.post(url, json=body, headers=token[who])

    def step_now() -> str:
        return str(run()["step"])

    assert step_now() == "manager-approval"
    # The requester (andrei) and a colleague (bogdan) may not approve for the manager.
    for who in ("andrei", "bogdan"):
        refused = press(who, "manager-approval")
        assert refused.status_code == 403, refused.text
        assert "it is asked of 'maria' or an admin" in refused.json()["message"]
    assert step_now() == "manager-approval"

    assert press("maria", "manager-approval").status_code == 200
    assert step_now() == "management-approval"
    # The manager's approval does not make her management.
    refused = press("maria", "management-approval")
    assert refused.status_code == 403
    assert "a member of group 'management' or an admin" in refused.json()["message"]

    decided = press("dana", "management-approval")
    assert decided.status_code == 200, decided.text
    # Decided once: pressing again is refused, and the run stays where the decision took it.
    again = press("dana", "management-approval")
    assert again.status_code == 409, again.text
    assert run()["step"] != "management-approval"
