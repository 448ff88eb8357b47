"""Every state of an outbox message is shown where runs are shown (`crmflow runs show`, the
record's runs route), with what there is to know of it: a retry's next attempt and last error,
a failure's error, a delivery's time and the server's reply; states delivery adds (suppressed,
test) show the same way, from the status and the row's details."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from crmflow.api.app import create_app
from crmflow.cli.common import state
from crmflow.cli.main import app as cli
from crmflow.engine.lifecycle import LifecycleAction
from crmflow.services import enrollments as runs
from crmflow.services import flows, records, users
from crmflow.services.context import Actor, Context
from crmflow.store.schema import outbox
from tests.conftest import FrozenClock

STATES = ["pending", "sending", "delivered", "retrying", "failed", "suppressed", "test", "caught"]

FLOW = "\n".join(
    [
        "schema_version: 1",
        "key: states",
        "name: states",
        "record_type: contact",
        "triggers: [{type: manual}]",
        "steps:",
        "  - key: hello",
        "    actions:",
        *(
            f'      - {{type: send_email, key: {s}, subject: "About {s}", body: "Hi"}}'
            for s in STATES
        ),
    ]
)


def _set_states(ctx: Context, clock: FrozenClock) -> None:
    """What delivery writes on each row, as the dispatcher (and the other helpers' states) do."""
    at = clock.current + timedelta(minutes=3)
    details: dict[str, dict[str, Any]] = {
        "pending": {},
        "sending": {"attempts": 1, "lease_owner": "host:1:dispatch-a", "lease_until": at},
        "delivered": {"attempts": 1, "delivered_at": at, "server_reply": "250 2.0.0 queued as Q7"},
        "retrying": {
            "attempts": 2,
            "next_attempt_at": at,
            "last_error": "smtp.example.org: 451 4.3.0 try again later",
        },
        "failed": {"attempts": 1, "last_error": "550 5.1.1 no such user"},
        "suppressed": {"last_error": "claire@example.org unsubscribed"},
        "test": {"delivered_at": at, "server_reply": "sent to the test address qa@example.org"},
        "caught": {"attempts": 1, "delivered_at": at},
    }
    with ctx.engine.begin() as conn:
        for status, values in details.items():
            conn.execute(
                outbox.update()
                .where(outbox.c.idempotency_key.like(f"%{status}"))
                .values(status=status, **values)
            )


@pytest.fixture
def rid(ctx: Context, admin: Actor, clock: FrozenClock) -> int:
    flows.create_flow(ctx, admin, FLOW)
    flows.change_status(ctx, admin, "states", LifecycleAction.START)
    data = {"first_name": "Claire", "last_name": "Martin", "email": "claire@example.org"}
    record_id = records.create_record(ctx, admin, "contact", data).id
    runs.start_record(ctx, admin, "states", record_id)
    _set_states(ctx, clock)
    return record_id


def test_runs_show_says_each_state_with_its_details(
    ctx: Context, rid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "_context", ctx)
    result = CliRunner().invoke(cli, ["runs", "show", str(rid)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    lines = {
        status: next(line for line in result.output.splitlines() if f"About {status}" in line)
        for status in STATES
    }
    at = "2026-"  # every time shown is a full ISO date
    assert "[email pending, not before " in lines["pending"]
    assert "[email sending, attempt 1]" in lines["sending"]
    assert "[email delivered at " + at in lines["delivered"]
    assert "server said '250 2.0.0 queued as Q7'" in lines["delivered"]
    assert "[email retrying, attempt 2 failed, next at " + at in lines["retrying"]
    assert lines["retrying"].endswith(": smtp.example.org: 451 4.3.0 try again later]")
    assert lines["failed"].endswith("[email failed: 550 5.1.1 no such user]")
    assert lines["suppressed"].endswith("[email suppressed: claire@example.org unsubscribed]")
    assert "[email test at " + at in lines["test"]
    assert "sent to the test address qa@example.org" in lines["test"]
    assert "[email caught at " + at in lines["caught"]


def test_the_record_runs_route_gives_each_state_with_its_details(
    ctx: Context, admin: Actor, rid: int, clock: FrozenClock
) -> None:
    auth = {"Authorization": f"Bearer {users.create_token(ctx, admin, 'system').token}"}
    with TestClient(create_app(ctx)) as client:
        answer = client.get(f"/api/records/contact/{rid}/runs", headers=auth)
    assert answer.status_code == 200, answer.text
    [run] = answer.json()["flows"]
    [step] = run["step_runs"]
    messages = {a["key"]: a["message"] for a in step["actions"]}
    at = (clock.current + timedelta(minutes=3)).isoformat()
    assert {k: m["status"] for k, m in messages.items()} == {s: s for s in STATES}
    assert messages["pending"].keys() == {"kind", "status", "not_before", "attempts"}
    assert messages["delivered"]["delivered_at"] == at
    assert messages["delivered"]["server_reply"] == "250 2.0.0 queued as Q7"
    assert messages["retrying"]["next_attempt_at"] == at
    assert messages["retrying"]["last_error"].endswith("try again later")
    assert messages["failed"]["last_error"] == "550 5.1.1 no such user"
    assert "next_attempt_at" not in messages["failed"]
    assert messages["suppressed"]["last_error"] == "claire@example.org unsubscribed"
    assert messages["test"]["server_reply"] == "sent to the test address qa@example.org"
    # "2/8": the delivered email and the one the mail catcher kept; not the test send
    assert run["emails"] == f"2/{len(STATES)}"
