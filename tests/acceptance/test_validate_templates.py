"""`crmflow flows validate` and `POST /api/flows/validate` with stored email templates (issue
10): a template that is not loaded is refused, offline with `--templates DIR`; a field a template
may show empty is a warning that does not fail validation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from crmflow.services import templates
from crmflow.services.context import Actor, Context
from tests.acceptance.conftest import REPO, Run

EXAMPLES = REPO / "examples"
FLOW = """\
schema_version: 1
key: gala
name: Gala
record_type: contact
triggers: [{type: manual}]
steps:
  - key: invite
    actions:
      - type: send_email
        subject: ""
        template: TEMPLATE
      - type: history
        message: "Invited {{ record.first_name }} {{ record.last_name }}"
"""


def _flow(tmp_path: Path, template: str) -> Path:
    path = tmp_path / "gala.yaml"
    path.write_text(FLOW.replace("TEMPLATE", template))
    return path


def test_offline_templates_from_files_refuse_an_unknown_name(crmflow: Run, tmp_path: Path) -> None:
    flow = _flow(tmp_path, "donor-newz")
    folder = str(EXAMPLES / "templates")
    done = crmflow("flows", "validate", "--templates", folder, str(flow), check_exit=1)
    assert (
        f"{flow}:11: steps[0].actions[0].template: no email template 'donor-newz' "
        "(did you mean 'donor-news'? Or load it with `crmflow templates load FILE`)"
    ) in done.stdout


def test_a_field_shown_empty_is_a_warning_and_the_flow_stays_valid(
    crmflow: Run, tmp_path: Path
) -> None:
    flow = _flow(tmp_path, "gala-news")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "gala-news.yaml").write_text(
        "name: gala-news\nsubject: Gala\ntext: 'Thanks for {{ record.last_donation_amount }} EUR'\n"
    )
    folder = str(tmp_path / "templates")
    done = crmflow("flows", "validate", "--templates", folder, str(flow))
    assert f"{flow}: valid (flow 'gala', 1 steps, " in done.stdout
    assert (
        f"warning: {flow}:13: steps[0].actions[1].message: record.first_name may be empty (the "
        "contact record type does not require it) and then shows as empty text (write "
        "{{ record.first_name | default('...') }})"
    ) in done.stdout
    # gala-news shows last_donation_amount without a defaults: entry
    assert (
        f"warning: {flow}:11: steps[0].actions[0].template: the template 'gala-news': text: "
        "record.last_donation_amount may be empty"
    ) in done.stdout


def test_without_a_database_or_templates_they_are_said_not_to_be_checked(
    crmflow: Run, tmp_path: Path
) -> None:
    flow = _flow(tmp_path, "anything")
    done = crmflow("flows", "validate", str(flow))
    assert f"{flow}: valid" in done.stdout
    assert "the stored email templates it names are not checked" in done.stderr
    assert "--templates DIR" in done.stderr


def test_the_api_refuses_an_unknown_template_and_returns_the_warnings(
    ctx: Context, admin: Actor, client: TestClient, as_admin: dict[str, str]
) -> None:
    yaml = {"Content-Type": "application/yaml"}
    text = FLOW.replace("TEMPLATE", "donor-news")
    refused = client.post("/api/flows/validate", content=text, headers=as_admin | yaml)
    assert refused.status_code == 422
    [problem] = refused.json()["problems"]
    assert problem["path"] == "steps[0].actions[0].template"
    assert problem["message"] == "no email template 'donor-news'"

    templates.load_template_file(ctx, admin, EXAMPLES / "templates" / "donor-news.yaml")
    valid = client.post("/api/flows/validate", content=text, headers=as_admin | yaml)
    assert valid.status_code == 200
    body = valid.json()
    assert body["valid"] is True
    found = {(w["path"], w["line"]) for w in body["warnings"]}
    assert ("steps[0].actions[1].message", 13) in found
    assert all(w["hint"] for w in body["warnings"])
