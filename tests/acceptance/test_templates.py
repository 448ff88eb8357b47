"""Stored email templates as a user handles them: `crmflow templates load/list/show` (a file
with a mistake refused with its line), and the API (GET /api/templates, GET and PUT
/api/templates/{name}: admins write, others read)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import Run, auth_headers
from tests.conftest import make_user

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DONOR_NEWS = EXAMPLES / "templates" / "donor-news.yaml"


def test_templates_are_loaded_listed_and_shown_by_the_cli(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    assert crmflow("templates", "load", str(DONOR_NEWS)).stdout.strip() == (
        "created email template donor-news"
    )
    assert (
        "updated email template donor-news" in crmflow("templates", "load", str(DONOR_NEWS)).stdout
    )
    [listed] = json.loads(crmflow("templates", "list", "--json").stdout)
    assert (listed["name"], listed["subject"], listed["has_html"]) == (
        "donor-news",
        "Des nouvelles du parc",
        True,
    )
    assert "donor-news" in crmflow("templates", "list").stdout
    shown = crmflow("templates", "show", "donor-news").stdout
    assert "reply_to: dons@example.org" in shown
    assert "Bonjour %ab_firstname%," in shown
    document = json.loads(crmflow("templates", "show", "donor-news", "--json").stdout)["document"]
    assert document["defaults"] == {"first_name": "chère amie, cher ami"}

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nsubject: Hi\ntext: |\n  Dear {{ step.name }}\n")
    refused = crmflow("templates", "load", str(broken), check_exit=1)
    assert "broken.yaml:3: text: 'step' is not available in a stored template" in refused.stderr
    missing = crmflow("templates", "show", "donor-newz", check_exit=1)
    assert "no email template 'donor-newz'" in missing.stderr


def test_the_api_reads_templates_and_admins_write_them(
    client: TestClient, ctx: Context, admin: Actor, as_admin: dict[str, str]
) -> None:
    document = {"subject": "Hi %ab_firstname%", "text": "Dear {{ record.first_name }}"}
    created = client.put("/api/templates/welcome", json=document, headers=as_admin)
    assert created.status_code == 201, created.text
    assert created.json()["document"]["text"] == "Dear {{ record.first_name }}"
    replaced = client.put(
        "/api/templates/welcome", json={**document, "html": "<p>Hi</p>"}, headers=as_admin
    )
    assert (replaced.status_code, replaced.json()["has_html"]) == (200, True)

    make_user(ctx, "mia", "member")
    as_member = auth_headers(ctx, admin, "mia")
    [listed] = client.get("/api/templates", headers=as_member).json()
    assert (listed["name"], listed["subject"]) == ("welcome", "Hi %ab_firstname%")
    shown = client.get("/api/templates/welcome", headers=as_member)
    assert shown.json()["document"]["html"] == "<p>Hi</p>"
    assert client.put("/api/templates/welcome", json=document, headers=as_member).status_code == 403
    assert client.get("/api/templates/nope", headers=as_member).status_code == 404

    bad = client.put("/api/templates/welcome", json={"text": "{{ flow.key }}"}, headers=as_admin)
    assert bad.status_code == 422
    assert "'flow' is not available" in bad.text
    assert client.get("/api/templates/welcome", headers=as_admin).json()["has_html"] is True
