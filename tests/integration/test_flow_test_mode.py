"""A flow's test mode switch (issue 12): while an admin has it on, every message of every run of
the flow goes to its test recipients, marked test; the flow's page shows who switched it and
when, the API reads and switches it the same way; members cannot; a flow without test
recipients is refused in words. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from html import unescape

from fastapi.testclient import TestClient

from crmflow.api.app import create_app
from crmflow.services import enrollments as runs
from crmflow.services import flows, users
from crmflow.services.context import Actor, Context
from crmflow.testing import FrozenClock
from crmflow.web import create_site
from tests.conftest import make_user
from tests.integration.test_test_mode import FLOW, _contact, _flow, _rows
from tests.integration.test_web_flows import _sign_in


def _emails(ctx: Context) -> list[tuple[bool, list[str], str]]:
    return [
        (r.test, r.payload["to"], r.payload["subject"]) for r in _rows(ctx) if r.kind == "email"
    ]


def _said(page: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_a_flow_switched_to_test_mode_on_its_page_sends_only_to_its_test_recipients(
    ctx: Context, clock: FrozenClock
) -> None:
    ada = make_user(ctx, "ada", "admin")
    _flow(ctx, ada)
    with TestClient(create_site(ctx), follow_redirects=False) as site:
        token = _sign_in(site, "ada")
        page = _said(site.get("/flows/welcome").text)
        assert "Test mode Off : messages go to their recipients." in page
        answer = site.post("/flows/welcome/test-mode", data={"csrf_token": token, "enabled": "on"})
        assert answer.status_code == 303
        page = _said(site.get("/flows/welcome").text)
    assert "On : every email, SMS and webhook of this flow goes to its test recipients" in page
    assert "qa@example.org, +40 721 000 000" in page
    assert f"Switched on by ada on {clock().strftime('%Y-%m-%d %H:%M')} UTC" in page
    assert "Switch test mode off" in page

    runs.start_record(ctx, ada, "welcome", _contact(ctx, ada))
    assert _emails(ctx) == [(True, ["qa@example.org"], "[TEST] Welcome Claire")]
    sms = sorted(r.payload["to"] for r in _rows(ctx) if r.kind == "sms")
    assert sms == ["+33 6 12 34 56 78", "+40 721 000 000"]  # never the record's own number
    history = [c.note for c in flows.flow_history(ctx, ada, "welcome")]
    assert any("test mode on: messages go to qa@example.org" in n for n in history)

    # Over the API: read it, switch it off; the next run's email goes to the record's address.
    api = TestClient(create_app(ctx))
    auth = {"Authorization": f"Bearer {users.create_token(ctx, ada, 'ada').token}"}
    read = api.get("/api/flows/welcome/test-mode", headers=auth).json()
    assert (read["enabled"], read["changed_by"]) == (True, "ada")
    off = api.put("/api/flows/welcome/test-mode", json={"enabled": False}, headers=auth)
    assert off.status_code == 200 and off.json()["enabled"] is False
    runs.start_record(ctx, ada, "welcome", _contact(ctx, ada))
    assert _emails(ctx)[1] == (False, ["claire@example.org"], "Welcome Claire")


def test_members_cannot_switch_and_a_flow_without_test_recipients_is_refused_in_words(
    ctx: Context, admin: Actor, member: Actor
) -> None:
    flows.create_flow(ctx, admin, FLOW.replace("test_recipients:", "# test_recipients:"))
    api = TestClient(create_app(ctx))
    as_admin = {"Authorization": f"Bearer {users.create_token(ctx, admin, admin.username).token}"}
    as_member = {"Authorization": f"Bearer {users.create_token(ctx, admin, member.username).token}"}
    refused = api.put("/api/flows/welcome/test-mode", json={"enabled": True}, headers=as_member)
    assert refused.status_code == 403
    assert api.get("/api/flows/welcome/test-mode", headers=as_member).json()["enabled"] is False
    empty = api.put("/api/flows/welcome/test-mode", json={"enabled": True}, headers=as_admin)
    assert empty.status_code == 422
    assert "lists no test recipients" in empty.text and "test_recipients: [" in empty.text
    bad = api.put("/api/flows/welcome/test-mode", json={"enabled": "maybe"}, headers=as_admin)
    assert bad.status_code == 422
    missing = api.put("/api/flows/nope/test-mode", json={"enabled": False}, headers=as_admin)
    assert missing.status_code == 404
